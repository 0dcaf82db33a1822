"""Options of ``groundpo-data``: the common ones, endpoint roles, and the parser.

Every pipeline declares its options as a dataclass that extends :class:`CommonOptions` (and the
endpoint-role mixins it uses). The same names work on the command line (``--clip_threshold 0.95``)
and as keys of a YAML file given first (``groundpo-data vtc build.yaml --limit 10``); the command
line wins. Unknown keys, missing required options and values of the wrong type are errors that
name the option.

Secrets: an endpoint's key is read from the environment variable named by ``api_key_env``
(default ``OPENAI_API_KEY``); no option takes a key, so none is ever logged or written.
"""

from __future__ import annotations

import argparse
import dataclasses
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


class OptionError(ValueError):
    """A bad option value; the message names the option."""


def check_subset(option: str, values: list[str], allowed: tuple[str, ...]) -> None:
    """A comma-separated option whose values must be some of ``allowed`` (at least one)."""
    unknown = sorted(set(values) - set(allowed))
    if unknown or not values:
        raise OptionError(f"--{option}: unknown {', '.join(unknown) or '(none given)'}; expected some of {', '.join(allowed)}")


def opt(default: Any = dataclasses.MISSING, help: str = "", **kw) -> Any:
    """A dataclass field with its ``--help`` text."""
    if isinstance(default, list):
        return field(default_factory=lambda d=default: list(d), metadata={"help": help, **kw})
    return field(default=default, metadata={"help": help, **kw})


@dataclass(kw_only=True)
class CommonOptions:
    """Options every pipeline takes."""

    output_dir: str = opt(help="folder of the dataset (rows.json, dataset_info.json, media/) and its progress files")
    dataset_name: str | None = opt(None, help="name of the dataset_info.json entry (default: groundpo_<pipeline>)")
    limit: int | None = opt(None, help="build at most this many items of this shard (first ones in source order)")
    shard: str = opt("0/1", help="i/N: build the i-th of N shards (items i, i+N, ...); join shards with `groundpo-data merge`")
    concurrency: int = opt(8, help="items processed at once = the most requests in flight")
    seed: int = opt(0, help="seed of every random choice (partners, question picks, noise); same seed, same dataset")
    overwrite: bool = opt(False, help="delete the progress of an earlier run in output_dir and start over")
    progress: bool = opt(True, help="show a progress bar on stderr")
    prompts_dir: str | None = opt(None, help="folder with prompt files that replace the packaged ones of the same name")
    media_mode: str = opt("copy", help="source media in rows: copy (into output_dir/media) or absolute (absolute paths)")
    api_base: str | None = opt(None, help="OpenAI-compatible endpoint, e.g. https://api.openai.com/v1 or http://host:8000/v1")
    api_model: str | None = opt(None, help="model name at the endpoint, e.g. gpt-4o-2024-08-06")
    api_key_env: str = opt("OPENAI_API_KEY", help="environment variable holding the endpoint's key (never logged or written)")
    temperature: float = opt(0.0, help="sampling temperature of every request")
    max_tokens: int = opt(1024, help="max_tokens of every request")
    request_timeout: float = opt(300.0, help="seconds before one request is given up (then retried)")
    max_retries: int = opt(6, help="retries of a request on rate limits (429), server errors (5xx), timeouts, lost connections")
    retry_base_delay: float = opt(1.0, help="first backoff in seconds; doubles each retry (with jitter), Retry-After wins")
    retry_max_delay: float = opt(60.0, help="longest backoff in seconds")
    answer_retries: int = opt(2, help="times a malformed answer is asked again before the item goes to rejects.jsonl")
    response_format: str = opt(
        "json_schema", help="how JSON answers are requested: json_schema (vLLM, OpenAI), json_object, none (prompt only)"
    )
    device: str = opt("auto", help="device of local models: auto, cpu, cuda, cuda:1, ...")

    # settings that do not change what is built: they may differ between a run and its resumption,
    # and between the shards of one build
    RUN_CONTROL: typing.ClassVar[frozenset[str]] = frozenset(
        {
            "output_dir", "limit", "shard", "concurrency", "overwrite", "progress", "prompts_dir", "api_base",
            "api_key_env", "request_timeout", "max_retries", "retry_base_delay", "retry_max_delay", "device",
            "vision_api_base", "audio_api_base", "vision_api_key_env", "audio_api_key_env", "audio_part",
        }
    )

    def shard_spec(self) -> tuple[int, int]:
        text = str(self.shard)
        try:
            i, n = (int(v) for v in text.split("/"))
        except ValueError:
            raise OptionError(f"--shard must look like i/N (e.g. 0/4), got {text!r}") from None
        if n < 1 or not 0 <= i < n:
            raise OptionError(f"--shard {text!r}: need N >= 1 and 0 <= i < N")
        return i, n

    def check(self) -> None:
        """Checks shared by every pipeline (pipelines extend this)."""
        self.shard_spec()
        if self.limit is not None and self.limit < 0:
            raise OptionError(f"--limit must be >= 0, got {self.limit}")
        if self.concurrency < 1:
            raise OptionError(f"--concurrency must be >= 1, got {self.concurrency}")
        if self.media_mode not in ("copy", "absolute"):
            raise OptionError(f"--media_mode must be copy or absolute, got {self.media_mode!r}")
        if self.response_format not in ("json_schema", "json_object", "none"):
            raise OptionError(f"--response_format must be json_schema, json_object or none, got {self.response_format!r}")
        for name in ("max_retries", "answer_retries"):
            if getattr(self, name) < 0:
                raise OptionError(f"--{name} must be >= 0")

    def fingerprint(self) -> dict[str, Any]:
        """The options that decide what is built (a resumed run and every shard must agree on them)."""
        return {k: v for k, v in dataclasses.asdict(self).items() if k not in self.RUN_CONTROL}


@dataclass(kw_only=True)
class VisionEndpointOptions:
    """A separate endpoint for requests that carry images or video frames (a VLM)."""

    vision_api_base: str | None = opt(None, help="endpoint of image/frame requests (default: --api_base)")
    vision_api_model: str | None = opt(None, help="model of image/frame requests, e.g. gpt-4o or Qwen/Qwen2.5-VL-7B-Instruct")
    vision_api_key_env: str | None = opt(None, help="key variable of that endpoint (default: --api_key_env)")


@dataclass(kw_only=True)
class AudioEndpointOptions:
    """A separate endpoint for requests that carry audio (an audio LM such as Qwen2-Audio on vLLM)."""

    audio_api_base: str | None = opt(None, help="endpoint of audio requests (default: --api_base)")
    audio_api_model: str | None = opt(None, help="model of audio requests, e.g. Qwen/Qwen2-Audio-7B-Instruct")
    audio_api_key_env: str | None = opt(None, help="key variable of that endpoint (default: --api_key_env)")
    audio_part: str = opt("input_audio", help="how audio is sent: input_audio (OpenAI, vLLM) or audio_url (a data URL: vLLM, "
                                              "llamafactory-cli api)")

    def check_audio_part(self) -> None:
        if self.audio_part not in ("input_audio", "audio_url"):
            raise OptionError(f"--audio_part must be input_audio or audio_url, got {self.audio_part!r}")


# ---------------------------------------------------------------- dataclass <-> command line / YAML
def _base_type(annotation: Any) -> tuple[type, bool]:
    """(scalar type, is_list) of a field annotation such as ``int | None`` or ``list[str]``."""
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(annotation) if a is not type(None)]
        return _base_type(args[0])
    if origin is list:
        return typing.get_args(annotation)[0], True
    return annotation, False


def _convert(name: str, value: Any, annotation: Any) -> Any:
    if value is None:
        return None
    kind, is_list = _base_type(annotation)
    if is_list:
        items = value if isinstance(value, list) else [v for v in str(value).split(",") if v.strip()]
        return [_convert(name, v, kind) for v in items]
    if kind is bool:
        if isinstance(value, bool):
            return value
        text = str(value).strip().lower()
        if text in ("true", "1", "yes", "on"):
            return True
        if text in ("false", "0", "no", "off"):
            return False
        raise OptionError(f"--{name}: expected true or false, got {value!r}")
    if kind in (int, float):
        if isinstance(value, bool):
            raise OptionError(f"--{name}: expected a number, got {value!r}")
        try:
            number = kind(value)
        except (TypeError, ValueError):
            raise OptionError(f"--{name}: expected {'an integer' if kind is int else 'a number'}, got {value!r}") from None
        if kind is int and isinstance(value, float) and value != number:
            raise OptionError(f"--{name}: expected an integer, got {value!r}")
        return number
    return str(value)


def parse_options(options_class: type, argv: list[str], prog: str, description: str = "") -> Any:
    """Options from ``[config.yaml] [--name value ...]``; ``--help`` lists every option with its default."""
    hints = typing.get_type_hints(options_class)
    fields = [f for f in dataclasses.fields(options_class) if f.init]
    parser = argparse.ArgumentParser(prog=prog, description=description, formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("config", nargs="?", help="YAML file of options (command-line options override it)")
    for f in fields:
        required = f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
        default = None if required else (f.default if f.default is not dataclasses.MISSING else f.default_factory())
        kind, is_list = _base_type(hints[f.name])
        help_text = f.metadata.get("help", "") + (" (comma-separated)" if is_list else "")
        parser.add_argument(
            f"--{f.name}", default=argparse.SUPPRESS, help=help_text + (" [required]" if required else f" [default: {default}]"),
            metavar=("true|false" if kind is bool else kind.__name__.upper()),
        )
    args = vars(parser.parse_args(argv))
    values: dict[str, Any] = {}
    config = args.pop("config", None)
    if config:
        values.update(read_yaml_options(config, {f.name for f in fields}))
    values.update(args)
    return build_options(options_class, values)


def read_yaml_options(path: str, known: set[str]) -> dict[str, Any]:
    import yaml

    file = Path(path)
    if not file.is_file():
        raise OptionError(f"config file {path!r} not found")
    try:
        data = yaml.safe_load(file.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as e:
        raise OptionError(f"config file {path}: not valid YAML ({e})") from None
    if not isinstance(data, dict):
        raise OptionError(f"config file {path}: expected a mapping of option: value, got {type(data).__name__}")
    unknown = sorted(set(data) - known)
    if unknown:
        raise OptionError(f"config file {path}: unknown option(s) {', '.join(unknown)}; see --help for the options")
    return data


def build_options(options_class: type, values: dict[str, Any]) -> Any:
    """An options object from a mapping of name -> value (strings are converted), checked."""
    hints = typing.get_type_hints(options_class)
    fields = {f.name: f for f in dataclasses.fields(options_class) if f.init}
    unknown = sorted(set(values) - set(fields))
    if unknown:
        raise OptionError(f"unknown option(s) {', '.join(unknown)}; see --help for the options")
    kwargs = {name: _convert(name, value, hints[name]) for name, value in values.items()}
    missing = [
        name for name, f in fields.items()
        if name not in kwargs and f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
    ]
    if missing:
        raise OptionError(f"missing required option(s): {', '.join('--' + m for m in missing)}")
    options = options_class(**kwargs)
    options.check()
    return options
