"""The evaluation runner: read a benchmark, generate what is missing, score, write the table.

Files in ``output_dir``:

- ``predictions.jsonl``: one JSON line per item, appended (flush + fsync) the moment its
  generation finishes. A rerun reads the ids already there and generates only the others, so a
  killed run continues where it stopped. A last line cut off by the kill is dropped.
- ``run_config.json``: what the predictions were generated with. Resuming with another model,
  adapter, template or decoding setting is refused (``--overwrite_output_dir`` starts over).
- ``metrics.json``: the scores, recomputed from ``predictions.jsonl`` at the end of every run.
- ``results.md``: the paper-layout markdown table (:mod:`groundpo.eval.tables`).
- ``missing_media.txt``: written only when media are missing, with every path.

Testing aid: with ``GROUNDPO_EVAL_KILL_AFTER=k`` in the environment the process SIGKILLs itself
right after writing its k-th prediction, the way an out-of-memory kill or a pre-empted job
ends it (used by the resume test).
"""

from __future__ import annotations

import json
import logging
import os
import signal
import sys
from collections import defaultdict
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Self

from .metrics import (
    choice_scores,
    cmm_scores,
    parse_choice,
    parse_yes_no,
    yes_no_scores,
)
from .readers import (
    AVHBENCH_TASKS,
    EvalItem,
    MissingMediaError,
    find_missing_media,
    read_benchmark,
)

logger = logging.getLogger(__name__)

__all__ = ["EvalConfig", "PredictionsFileError", "RunConfigMismatch", "read_predictions", "run_eval", "score_items"]

PREDICTIONS = "predictions.jsonl"
METRICS = "metrics.json"
RESULTS = "results.md"
RUN_CONFIG = "run_config.json"
MISSING_MEDIA = "missing_media.txt"
LOCK = ".groundpo-eval.lock"
KILL_ENV = "GROUNDPO_EVAL_KILL_AFTER"

# settings that change what the model generates: a resumed run must use the same ones
_FINGERPRINT_KEYS = (
    "benchmark",
    "model_name_or_path",
    "adapter_name_or_path",
    "template",
    "max_new_tokens",
    "caption_max_new_tokens",
    "use_audio_in_video",
    "system",
    "prompt_suffix",
    "model_args",
)


class PredictionsFileError(ValueError):
    pass


class RunConfigMismatch(ValueError):
    pass


@dataclass
class EvalConfig:
    """Everything one benchmark run needs; the CLI options, one to one (``docs/evaluation.md``)."""

    benchmark: str
    data_dir: str
    output_dir: str
    model_name_or_path: str | None = None
    adapter_name_or_path: str | None = None
    template: str | None = None
    run_name: str | None = None
    data_file: str | None = None
    tasks: list[str] | None = None
    limit: int | None = None
    batch_size: int = 1
    max_new_tokens: int = 32
    caption_max_new_tokens: int = 128
    infer_backend: str = "auto"
    use_audio_in_video: bool = True
    system: str | None = None
    prompt_suffix: str | None = None
    cmm_rule: str = "official"
    skip_missing_media: bool = False
    on_error: str = "raise"
    overwrite_output_dir: bool = False
    score_only: bool = False
    disable_tqdm: bool = False
    # further ChatModel keys (video_fps, video_maxlen, video_max_pixels, image_max_pixels, infer_dtype, ...)
    model_args: dict[str, Any] = field(default_factory=dict)

    def name(self) -> str:
        if self.run_name:
            return self.run_name
        parts = [Path(str(self.model_name_or_path or "model")).name]
        if self.adapter_name_or_path:
            parts.append(Path(str(self.adapter_name_or_path).split(",")[0]).name)
        return "+".join(parts)

    def chat_model_args(self, backend: str) -> dict[str, Any]:
        args = dict(self.model_args)
        args.update(
            model_name_or_path=self.model_name_or_path,
            template=self.template,
            infer_backend=backend,
            use_audio_in_video=self.use_audio_in_video,
            do_sample=False,
        )
        if self.adapter_name_or_path:
            args["adapter_name_or_path"] = self.adapter_name_or_path
        return args

    def fingerprint(self) -> dict[str, Any]:
        data = asdict(self)
        fp = {k: data[k] for k in _FINGERPRINT_KEYS}
        for key in ("model_name_or_path", "adapter_name_or_path"):
            if fp[key] and os.path.exists(str(fp[key])):
                fp[key] = os.path.abspath(str(fp[key]))
        return fp


# ---------------------------------------------------------------------------------------------
# predictions file
# ---------------------------------------------------------------------------------------------


def read_predictions(path: str | os.PathLike, repair: bool = False) -> dict[str, dict[str, Any]]:
    """``id -> record`` from a ``predictions.jsonl``. A last line without its newline is what a
    kill during a write leaves: it is kept if it parses and dropped otherwise (``repair=True``
    also fixes the file so that appending continues cleanly). A bad line elsewhere is an
    error; a repeated id keeps its first record."""
    path = Path(path)
    if not path.exists():
        return {}
    data = path.read_bytes()
    lines = data.split(b"\n")
    complete, tail = lines[:-1], lines[-1]
    records: dict[str, dict[str, Any]] = {}

    def add(rec: Any, where: str) -> None:
        if not isinstance(rec, dict) or "id" not in rec:
            raise PredictionsFileError(f"{path}: {where} is not a prediction record (no 'id')")
        if rec["id"] in records:
            logger.warning("%s: %s repeats id %s; keeping the first", path, where, rec["id"])
            return
        records[str(rec["id"])] = rec

    for lineno, line in enumerate(complete, 1):
        if not line.strip():
            continue
        try:
            rec = json.loads(line)
        except json.JSONDecodeError:
            raise PredictionsFileError(
                f"{path}: line {lineno} is not valid JSON; fix or delete that line (or use --overwrite_output_dir)"
            ) from None
        add(rec, f"line {lineno}")
    if tail.strip():
        try:
            rec = json.loads(tail)
        except json.JSONDecodeError:
            rec = None
        if rec is not None:
            add(rec, f"line {len(complete) + 1}")
            if repair:
                with open(path, "ab") as f:
                    f.write(b"\n")
        else:
            logger.warning("%s: dropping the cut-off last line (the previous run was killed while writing it)", path)
            if repair:
                with open(path, "r+b") as f:
                    f.truncate(len(data) - len(tail))
    return records


def _record(item: EvalItem, text: str, info: dict[str, Any]) -> dict[str, Any]:
    if item.kind == "yesno":
        parsed = parse_yes_no(text)
    elif item.kind == "choice":
        parsed = parse_choice(text, item.options or [])
    else:
        parsed = None
    rec = {
        "id": item.id,
        "task": item.task,
        "kind": item.kind,
        "prompt": item.prompt,
        "prediction": text,
        "gold": item.gold,
        "parsed": parsed,
        "correct": None if item.kind == "caption" else parsed == item.gold,
    }
    if item.groups:
        rec["groups"] = item.groups
    if item.meta:
        rec["meta"] = item.meta
    rec.update({k: v for k, v in info.items() if v is not None})
    return rec


# ---------------------------------------------------------------------------------------------
# scoring
# ---------------------------------------------------------------------------------------------


def _grouped(items: list[tuple[EvalItem, str]]) -> dict[str, Any]:
    def scores(pairs: list[tuple[EvalItem, str]]) -> dict[str, Any]:
        return choice_scores([it.gold for it, _ in pairs], [p for _, p in pairs], [it.options or [] for it, _ in pairs])

    out: dict[str, Any] = {"overall": scores(items)}
    by_task: dict[str, list] = defaultdict(list)
    by_group: dict[str, dict[str, list]] = defaultdict(lambda: defaultdict(list))
    for it, p in items:
        by_task[it.task].append((it, p))
        for key, value in it.groups.items():
            by_group[key][value].append((it, p))
    out["task"] = {t: scores(v) for t, v in by_task.items()}
    for key, groups in by_group.items():
        out[key] = {g: scores(v) for g, v in groups.items()}
    return out


def score_items(benchmark: str, items: list[EvalItem], predictions: dict[str, dict[str, Any]], cmm_rule: str = "official") -> dict[str, Any]:
    """Scores of ``items`` from their predictions (``id -> record`` with ``prediction``).
    Items without a prediction are left out (and counted in ``metrics.json``)."""
    pairs = [(it, str(predictions[it.id].get("prediction") or "")) for it in items if it.id in predictions]
    if benchmark == "avhbench":
        out: dict[str, Any] = {}
        for code in AVHBENCH_TASKS:
            sub = [(it, p) for it, p in pairs if it.task == code]
            if not sub:
                continue
            if code == "AVC":
                out[code] = {"n": len(sub), "scored": False}
                continue
            scores = yes_no_scores([it.gold for it, _ in sub], [p for _, p in sub])
            scores["unparsed"] = sum(parse_yes_no(p) is None for _, p in sub)
            out[code] = scores
        return out
    if benchmark == "cmm":
        records = [
            {"answer": it.gold, "pred": p, "sub_category": it.task, "granularity": it.groups.get("granularity")}
            for it, p in pairs
        ]
        return {
            "rule": cmm_rule,
            "sub_categories": list(dict.fromkeys(r["sub_category"] for r in records)),
            "granularities": list(dict.fromkeys(r["granularity"] for r in records if r["granularity"])),
            "official": cmm_scores(records, rule="official"),
            "strict": cmm_scores(records, rule="strict"),
            "unparsed": sum(parse_yes_no(p) is None for _, p in pairs),
        }
    return _grouped(pairs)


# ---------------------------------------------------------------------------------------------
# the run
# ---------------------------------------------------------------------------------------------


class _Lock:
    """An exclusive lock on ``output_dir`` so that two runs never append to one file."""

    def __init__(self, folder: Path) -> None:
        self.path = folder / LOCK
        self.fd: int | None = None

    def __enter__(self) -> Self:
        try:
            import fcntl
        except ImportError:  # pragma: no cover - not POSIX
            return self
        self.fd = os.open(self.path, os.O_CREAT | os.O_RDWR, 0o644)
        try:
            fcntl.flock(self.fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(self.fd)
            self.fd = None
            raise RuntimeError(f"another groundpo-eval run is writing to {self.path.parent}") from None
        return self

    def __exit__(self, *exc: object) -> None:
        if self.fd is not None:
            os.close(self.fd)


def _check_run_config(out: Path, cfg: EvalConfig, resolved_backend: str, has_predictions: bool) -> None:
    path = out / RUN_CONFIG
    current = {**cfg.fingerprint(), "infer_backend": resolved_backend}
    if path.exists() and has_predictions:
        saved = json.loads(path.read_text(encoding="utf-8"))
        diff = {k: (saved.get(k), v) for k, v in current.items() if saved.get(k) != v}
        if diff:
            lines = "\n".join(f"  {k}: was {a!r}, now {b!r}" for k, (a, b) in diff.items())
            raise RunConfigMismatch(
                f"{out / PREDICTIONS} was generated with other settings:\n{lines}\n"
                "Use another --output_dir, or --overwrite_output_dir to start over."
            )
    path.write_text(json.dumps(current, indent=2, sort_keys=True) + "\n", encoding="utf-8")


def _maybe_kill(written: int) -> None:
    limit = os.environ.get(KILL_ENV)
    if limit and written >= int(limit):
        sys.stdout.flush()
        sys.stderr.flush()
        os.kill(os.getpid(), signal.SIGKILL)


def _progress(total: int, initial: int, desc: str, disable: bool):
    from tqdm import tqdm

    return tqdm(total=total, initial=initial, desc=desc, unit="item", disable=disable, dynamic_ncols=True)


def run_eval(cfg: EvalConfig, engine_factory=None) -> dict[str, Any]:
    """Run one benchmark; returns the ``metrics.json`` content. ``engine_factory(model_args,
    **kw)`` replaces :class:`groundpo.eval.engine.ChatEngine` (tests)."""
    from . import tables
    from .engine import resolve_backend

    if cfg.cmm_rule not in ("official", "strict"):
        raise ValueError("--cmm_rule must be official or strict")
    if cfg.on_error not in ("raise", "record"):
        raise ValueError("--on_error must be raise or record")
    items = read_benchmark(cfg.benchmark, cfg.data_dir, cfg.data_file, cfg.tasks, cfg.limit, cfg.prompt_suffix)
    if not items:
        raise ValueError(f"no {cfg.benchmark} items selected in {cfg.data_dir} (check --tasks / --limit)")
    out = Path(cfg.output_dir)
    out.mkdir(parents=True, exist_ok=True)

    with _Lock(out):
        if cfg.overwrite_output_dir and not cfg.score_only:
            for name in (PREDICTIONS, METRICS, RESULTS, RUN_CONFIG, MISSING_MEDIA):
                (out / name).unlink(missing_ok=True)
        predictions = read_predictions(out / PREDICTIONS, repair=not cfg.score_only)
        todo = [it for it in items if it.id not in predictions]

        if todo and not cfg.score_only:
            missing = find_missing_media(todo)
            if missing:
                listing = out / MISSING_MEDIA
                listing.write_text("".join(f"{path}\t{item_id}\n" for item_id, path in missing), encoding="utf-8")
                if not cfg.skip_missing_media:
                    raise MissingMediaError(missing, cfg.data_dir, str(listing))
                bad = {item_id for item_id, _ in missing}
                logger.warning("skipping %d item(s) with missing media (listed in %s)", len(bad), listing)
                items = [it for it in items if it.id not in bad]
                todo = [it for it in todo if it.id not in bad]
                if not items:
                    raise MissingMediaError(missing, cfg.data_dir, str(listing))
        if todo and not cfg.score_only and (not cfg.model_name_or_path or not cfg.template):
            raise ValueError("--model_name_or_path and --template are required to generate predictions")
        if not cfg.score_only and (todo or predictions):
            # the same settings as the predictions already there, even when nothing is left to do
            needs_aiv = any(it.videos and it.audios for it in items)
            backend = resolve_backend(cfg.infer_backend, cfg.use_audio_in_video, needs_aiv)
            _check_run_config(out, cfg, backend, has_predictions=bool(predictions))
        if todo and not cfg.score_only:
            logger.info("%s: %d item(s) to generate, %d already in %s (backend: %s)", cfg.benchmark, len(todo), len(items) - len(todo), out / PREDICTIONS, backend)
            if engine_factory is None:
                from .engine import ChatEngine

                engine_factory = ChatEngine
            engine = engine_factory(
                cfg.chat_model_args(backend),
                max_new_tokens=cfg.max_new_tokens,
                caption_max_new_tokens=cfg.caption_max_new_tokens,
                batch_size=cfg.batch_size,
                system=cfg.system,
            )
            _generate(engine, todo, out / PREDICTIONS, predictions, cfg, total=len(items))
        elif todo:
            logger.warning("--score_only: %d of %d item(s) have no prediction and are left out", len(todo), len(items))

        scores = score_items(cfg.benchmark, items, predictions, cfg.cmm_rule)
        n_predicted = sum(it.id in predictions for it in items)
        metrics = {
            "benchmark": cfg.benchmark,
            "name": cfg.name(),
            "model_name_or_path": cfg.model_name_or_path,
            "adapter_name_or_path": cfg.adapter_name_or_path,
            "tasks": list(dict.fromkeys(it.task for it in items)),
            "limit": cfg.limit,
            "n_items": len(items),
            "n_predicted": n_predicted,
            "n_missing": len(items) - n_predicted,
            "scores": scores,
        }
        (out / METRICS).write_text(json.dumps(metrics, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
        table = tables.results_markdown(metrics)
        (out / RESULTS).write_text(table, encoding="utf-8")
    return metrics


def _generate(engine, todo: list[EvalItem], path: Path, predictions: dict[str, dict[str, Any]], cfg: EvalConfig, total: int) -> None:
    written = 0
    bar = _progress(total, total - len(todo), cfg.benchmark, cfg.disable_tqdm)
    try:
        with open(path, "a", encoding="utf-8") as f:
            for item, result in engine.generate(todo, return_errors=cfg.on_error == "record"):
                if isinstance(result, Exception):
                    rec = _record(item, "", {"error": str(result)})
                else:
                    rec = _record(
                        item,
                        result.text,
                        {
                            "prompt_length": result.prompt_length,
                            "response_length": result.response_length,
                            "finish_reason": result.finish_reason,
                        },
                    )
                f.write(json.dumps(rec, ensure_ascii=False) + "\n")
                f.flush()
                os.fsync(f.fileno())
                predictions[item.id] = rec
                written += 1
                bar.update(1)
                _maybe_kill(written)
    finally:
        bar.close()
        close = getattr(engine, "close", None)
        if close:
            close()
