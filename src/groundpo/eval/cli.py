"""``groundpo-eval``: evaluate a (trained) model on AVHBench, CMM, DailyOmni, MVBench, MMAU (omni)
and AMBER, Object HalBench (objhal), MMHal-Bench (mmhal), POPE (image).

Usage::

    groundpo-eval avhbench --model_name_or_path M --template qwen2_omni --data_dir D --output_dir O [options]
    groundpo-eval avhbench eval.yaml [options]           # options override the YAML
    groundpo-eval eval.yaml [options]                    # the YAML names the benchmark: `benchmark: cmm`
    groundpo-eval compare RUN_DIR [RUN_DIR ...] [--names base,dpo,mod-dpo] [--output table.md]

Options are written ``--key value`` (booleans: ``--key``, ``--key true``, ``--key false``), as
with ``llamafactory-cli``. Keys this command does not know (``--flash_attn fa2``,
``--vllm_gpu_util 0.8``, ...) go to LLaMA-Factory's ``ChatModel`` unchanged, which rejects
unknown ones. ``docs/evaluation.md`` documents every option.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path
from typing import Any

from ..quiet import quiet_llamafactory

__all__ = ["OPTIONS", "build_config", "main"]

BENCHMARK_NAMES = ("avhbench", "cmm", "dailyomni", "mvbench", "mmau", "amber", "objhal", "mmhal", "pope")


def _bool(value: str | bool) -> bool:
    if isinstance(value, bool):
        return value
    v = str(value).strip().lower()
    if v in ("1", "true", "yes", "y", "on"):
        return True
    if v in ("0", "false", "no", "n", "off"):
        return False
    raise argparse.ArgumentTypeError(f"expected true or false, got {value!r}")


def _optional_float(value: str | float | None) -> float | None:
    if value is None or str(value).strip().lower() in ("", "none", "default"):
        return None
    return float(value)


def _tasks(value: str | list[str]) -> list[str]:
    if isinstance(value, (list, tuple)):
        return [str(v).strip() for v in value if str(v).strip()]
    return [t.strip() for t in str(value).split(",") if t.strip()]


# (dest, type, default, help) -- the benchmark options; EvalConfig has one field per dest
# (model-loading keys marked "model arg" go to ChatModel when set)
OPTIONS: list[tuple[str, Any, Any, str]] = [
    ("model_name_or_path", str, None, "model folder or hub id (required to generate)"),
    ("adapter_name_or_path", str, None, "LoRA adapter folder(s), comma-separated, as in LLaMA-Factory"),
    ("template", str, None, "LLaMA-Factory chat template, e.g. qwen2_omni (required to generate)"),
    ("data_dir", str, None, "folder the benchmark was unpacked into (required)"),
    ("output_dir", str, None, "where predictions.jsonl, metrics.json and results.md go (required)"),
    ("run_name", str, None, "label of this run in tables (default: model folder name [+ adapter])"),
    ("data_file", str, None, "annotation file (or MVBench task folder) if not the official name, relative to data_dir"),
    ("tasks", _tasks, None, "comma-separated tasks to run (names or codes; default: all, AVHBench captioning excluded)"),
    ("limit", int, None, "evaluate only the first N items of each task"),
    ("batch_size", int, 1, "items per generate call (huggingface: left-padded batches; vLLM: conversations in flight)"),
    ("max_new_tokens", int, 32, "generation budget for yes/no and multiple-choice answers"),
    ("caption_max_new_tokens", int, None, "generation budget for free-text answers (default 512 for amber/objhal/mmhal, else 128)"),
    ("infer_backend", str, "auto", "auto (vLLM if installed and usable, else huggingface), huggingface or vllm"),
    ("use_audio_in_video", _bool, True, "interleave each video with its audio track (Qwen2.5-Omni); false: audio as a separate input"),
    ("system", str, None, "system prompt (default: the template's)"),
    ("prompt_suffix", str, None, "text appended to yes/no questions lacking 'yes or no' (AVHBench/CMM default ' Answer with yes or no.', AMBER/POPE ' Answer the question using a single word or phrase.')"),
    ("cmm_rule", str, "official", "CMM headline rule: official (first 5 characters) or strict (whole-word parse); both are in metrics.json"),
    ("yes_no_rule", str, "official", "AMBER/POPE headline rule: official (AMBER: exact 'Yes'/'No'; POPE: no/not in the first sentence) or lenient (whole-word parse); both are in metrics.json"),
    ("image_dir", str, None, "image benchmarks: the folder with the images, if not where the layout puts them"),
    ("decoding", str, "greedy", "greedy, vcd (visual contrastive decoding) or avcd (audio-visual contrastive decoding)"),
    ("cd_alpha", _optional_float, None, "contrast strength alpha (default: vcd 1.0, avcd 0.5)"),
    ("cd_beta", _optional_float, None, "plausibility cut-off beta: tokens below log(beta) + max logit are masked (default: vcd 0.1, avcd 0.2)"),
    ("cd_noise_step", int, 500, "diffusion step t of the noise on the contrasted image/video/audio (VCD: 500 of 1000)"),
    ("cd_entropy_threshold", _optional_float, None, "skip the contrast when the clean distribution's entropy is below this (default: avcd 0.6, vcd 0 = never)"),
    ("coco_annotations", str, None, "objhal: folder with COCO 2014 instances_*/captions_* files (default DATA_DIR/annotations)"),
    ("synonyms_file", str, None, "objhal: another COCO synonym table (default: the one shipped with groundpo)"),
    ("nltk_data", str, None, "amber: folder with NLTK data (punkt_tab, averaged_perceptron_tagger_eng, wordnet)"),
    ("spacy_model", str, "en_core_web_lg", "amber: spaCy model for synonym similarity; none turns synonym matching off"),
    ("amber_similarity", float, 0.8, "amber: spaCy similarity above which two words are synonyms"),
    ("judge_model", str, None, "mmhal: the judge model name at the OpenAI-compatible endpoint (required for mmhal)"),
    ("judge_base_url", str, None, "mmhal: the judge endpoint's base URL (default: OpenAI's)"),
    ("judge_api_key_env", str, "OPENAI_API_KEY", "mmhal: the environment variable holding the judge's API key"),
    ("judge_max_retries", int, 5, "mmhal: retries of a failed judge request (connection errors, timeouts, 429, 5xx)"),
    ("judge_timeout", float, 120.0, "mmhal: seconds per judge request"),
    ("judge_prompt_file", str, None, "mmhal: the judge prompt template ({image_content}, {question}, {gt_answer}, {model_answer})"),
    ("skip_missing_media", _bool, False, "evaluate only items whose media exist instead of stopping"),
    ("on_error", str, "raise", "raise: stop at a failing item (rerun resumes); record: save it as an empty, wrong answer and go on"),
    ("overwrite_output_dir", _bool, False, "delete earlier predictions and start over"),
    ("score_only", _bool, False, "do not generate: score what predictions.jsonl holds"),
    ("disable_tqdm", _bool, False, "no progress bar"),
    # model args with their own flag (None = upstream default)
    ("infer_dtype", str, None, "model arg: auto, float16, bfloat16 or float32"),
    ("video_fps", float, None, "model arg: frames sampled per second (upstream default 2.0)"),
    ("video_maxlen", int, None, "model arg: at most this many frames per video (upstream default 128)"),
    ("video_max_pixels", int, None, "model arg: max pixels per video frame"),
    ("image_max_pixels", int, None, "model arg: max pixels per image"),
]
MODEL_ARG_OPTIONS = ("infer_dtype", "video_fps", "video_maxlen", "video_max_pixels", "image_max_pixels")
_BOOL_DESTS = {d for d, t, _, _ in OPTIONS if t is _bool}
_DESTS = {d for d, _, _, _ in OPTIONS}


def _benchmark_parser(benchmark: str) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=f"groundpo-eval {benchmark}",
        description=f"Evaluate a model on {benchmark}. Unknown --key value pairs are passed to LLaMA-Factory's ChatModel.",
    )
    for dest, typ, default, help_ in OPTIONS:
        if typ is _bool:
            parser.add_argument(f"--{dest}", type=_bool, nargs="?", const=True, default=None, help=f"{help_} (default {default})")
        else:
            parser.add_argument(f"--{dest}", type=typ, default=None, help=f"{help_}" + (f" (default {default})" if default is not None else ""))
    return parser


def _load_config_file(path: str) -> dict[str, Any]:
    import yaml

    p = Path(path)
    if not p.is_file():
        raise ValueError(f"config file {path} does not exist")
    data = yaml.safe_load(p.read_text(encoding="utf-8")) if p.suffix in (".yaml", ".yml") else json.loads(p.read_text(encoding="utf-8"))
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ValueError(f"config file {path} must hold a mapping of option: value")
    return data


def _is_config_file(arg: str) -> bool:
    return arg.endswith((".yaml", ".yml", ".json")) and not arg.startswith("-")


def _extra_args(tokens: list[str]) -> dict[str, Any]:
    """``--key value`` / ``--key=value`` / ``--flag`` pairs left over -> ChatModel keys."""
    import yaml

    out: dict[str, Any] = {}
    i = 0
    while i < len(tokens):
        tok = tokens[i]
        if not tok.startswith("--") or len(tok) < 3:
            raise ValueError(f"unexpected argument {tok!r}")
        key = tok[2:]
        if "=" in key:
            key, value = key.split("=", 1)
            i += 1
        elif i + 1 < len(tokens) and not tokens[i + 1].startswith("--"):
            value = tokens[i + 1]
            i += 2
        else:
            value, i = "true", i + 1
        out[key.replace("-", "_")] = yaml.safe_load(value) if value != "" else ""
    return out


def build_config(argv: list[str]):
    """An :class:`~groundpo.eval.runner.EvalConfig` from command-line words (without the
    program name): ``[benchmark] [config.yaml] [--key value ...]``."""
    from .runner import EvalConfig

    argv = list(argv)
    file_values: dict[str, Any] = {}
    benchmark = None
    if argv and _is_config_file(argv[0]):
        file_values = _load_config_file(argv.pop(0))
        benchmark = file_values.pop("benchmark", None)
        if not benchmark:
            raise ValueError(f"the config file must name the benchmark (benchmark: {' | '.join(BENCHMARK_NAMES)})")
    elif argv and not argv[0].startswith("-"):
        benchmark = argv.pop(0)
        if argv and _is_config_file(argv[0]):
            file_values = _load_config_file(argv.pop(0))
            named = file_values.pop("benchmark", benchmark)
            if named != benchmark:
                raise ValueError(f"the config file is for benchmark {named!r}, the command for {benchmark!r}")
    if benchmark not in BENCHMARK_NAMES:
        raise ValueError(f"unknown benchmark {benchmark!r}; choose from {', '.join(BENCHMARK_NAMES)} (or compare)")

    parser = _benchmark_parser(benchmark)
    ns, rest = parser.parse_known_args(argv)
    given = {k: v for k, v in vars(ns).items() if v is not None}
    extra = {k: v for k, v in file_values.items() if k not in _DESTS}
    values = {k: v for k, v in file_values.items() if k in _DESTS}
    values.update(given)
    extra.update(_extra_args(rest))

    defaults = {d: default for d, _, default, _ in OPTIONS}
    merged = {**defaults, **values}
    for key in _BOOL_DESTS:
        merged[key] = _bool(merged[key])
    if merged.get("tasks") is not None:
        merged["tasks"] = _tasks(merged["tasks"])
    for key in ("data_dir", "output_dir"):
        if not merged.get(key):
            raise ValueError(f"--{key} is required")
    model_args = dict(extra)
    for key in MODEL_ARG_OPTIONS:
        value = merged.pop(key)
        if value is not None:
            model_args[key] = value
    return EvalConfig(benchmark=benchmark, model_args=model_args, **merged)


def _compare(argv: list[str]) -> int:
    from .tables import compare_markdown

    parser = argparse.ArgumentParser(
        prog="groundpo-eval compare",
        description="Side-by-side tables of several runs. Each RUN is a run folder (with metrics.json), a "
        "metrics.json, or a folder whose subfolders are runs (one per benchmark).",
    )
    parser.add_argument("runs", nargs="+", metavar="RUN")
    parser.add_argument("--names", type=_tasks, default=None, help="comma-separated labels, one per RUN (default: the runs' run_name)")
    parser.add_argument("--output", default=None, help="also write the markdown to this file")
    args = parser.parse_args(argv)
    if args.names and len(args.names) != len(args.runs):
        raise ValueError(f"--names has {len(args.names)} label(s) for {len(args.runs)} run(s)")

    metrics, labels, folders = [], [], []
    for i, run in enumerate(args.runs):
        p = Path(run)
        files = [p] if p.is_file() else [p / "metrics.json"] if (p / "metrics.json").is_file() else sorted(p.glob("*/metrics.json"))
        if not files:
            raise ValueError(f"{run}: no metrics.json there or in its subfolders")
        for f in files:
            m = json.loads(f.read_text(encoding="utf-8"))
            metrics.append(m)
            folders.append(str(f.parent))
            labels.append(args.names[i] if args.names else m.get("name") or str(f.parent))
    # the same label twice within one benchmark: use the folder instead
    seen: dict[tuple[str, str], int] = {}
    for m, label in zip(metrics, labels):
        seen[(m["benchmark"], label)] = seen.get((m["benchmark"], label), 0) + 1
    if any(c > 1 for c in seen.values()) and not args.names:
        labels = folders
    text = compare_markdown(metrics, labels)
    print(text)
    if args.output:
        Path(args.output).write_text(text, encoding="utf-8")
    return 0


def _usage() -> str:
    return (__doc__ or "").split("Options are")[0].strip() + "\n\nRun `groundpo-eval <benchmark> --help` for the options.\n"


class _StderrHandler(logging.StreamHandler):
    """Writes to whatever ``sys.stderr`` is at the time (it may be swapped, e.g. by pytest)."""

    @property
    def stream(self):
        return sys.stderr

    @stream.setter
    def stream(self, value):
        pass


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help", "help"):
        print(_usage())
        return 0
    log = logging.getLogger("groundpo.eval")
    if not any(isinstance(h, _StderrHandler) for h in log.handlers):
        handler = _StderrHandler()
        handler.setFormatter(logging.Formatter("[groundpo-eval] %(message)s"))
        log.addHandler(handler)
        log.setLevel(logging.INFO)
    # LLaMA-Factory and transformers log every config at INFO; keep the progress bar readable
    with quiet_llamafactory():
        return _main(argv)


def _main(argv: list[str]) -> int:
    from .readers import BenchmarkFormatError, MissingMediaError
    from .runner import PredictionsFileError, RunConfigMismatch

    expected = (BenchmarkFormatError, MissingMediaError, PredictionsFileError, RunConfigMismatch, ValueError, RuntimeError, FileNotFoundError)
    try:
        if argv[0] == "compare":
            return _compare(argv[1:])
        if len(argv) >= 2 and argv[1] in ("-h", "--help") and argv[0] in BENCHMARK_NAMES:
            _benchmark_parser(argv[0]).print_help()
            return 0
        cfg = build_config(argv)
        from .runner import run_eval
        from .tables import results_markdown

        metrics = run_eval(cfg)
    except expected as e:
        print(f"groundpo-eval: error: {e}", file=sys.stderr)
        return 2
    print(results_markdown(metrics))
    out = Path(cfg.output_dir)
    print(f"predictions: {out / 'predictions.jsonl'}\nmetrics:     {out / 'metrics.json'}\ntable:       {out / 'results.md'}")
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
