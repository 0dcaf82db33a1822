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
- ``judgments.jsonl`` (``mmhal``): the judge's review and rating of each prediction, appended as
  they arrive, resumed like the predictions (:mod:`groundpo.eval.judge`).

What a benchmark's scores need besides the predictions (COCO annotations for ``objhal``, NLTK
data and a spaCy model for ``amber``'s generative task, a judge for ``mmhal``) is checked before
any model is loaded.

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
    amber_answer,
    amber_discriminative_scores,
    amber_generative_scores,
    chair_scores,
    choice_scores,
    cmm_scores,
    mmhal_scores,
    parse_choice,
    parse_yes_no,
    pope_answer,
    pope_scores,
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
# benchmarks whose free-text answers are long descriptions: a larger default budget
_LONG_ANSWER_BENCHMARKS = ("amber", "objhal", "mmhal")


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
    caption_max_new_tokens: int | None = None  # None: 512 for amber, objhal, mmhal; 128 otherwise
    infer_backend: str = "auto"
    use_audio_in_video: bool = True
    system: str | None = None
    prompt_suffix: str | None = None
    cmm_rule: str = "official"
    yes_no_rule: str = "official"
    image_dir: str | None = None
    decoding: str = "greedy"
    cd_alpha: float | None = None
    cd_beta: float | None = None
    cd_noise_step: int = 500
    cd_entropy_threshold: float | None = None
    coco_annotations: str | None = None
    synonyms_file: str | None = None
    nltk_data: str | None = None
    spacy_model: str = "en_core_web_lg"
    amber_similarity: float = 0.8
    judge_model: str | None = None
    judge_base_url: str | None = None
    judge_api_key_env: str = "OPENAI_API_KEY"
    judge_max_retries: int = 5
    judge_timeout: float = 120.0
    judge_prompt_file: str | None = None
    skip_missing_media: bool = False
    on_error: str = "raise"
    overwrite_output_dir: bool = False
    score_only: bool = False
    disable_tqdm: bool = False
    # further ChatModel keys (video_fps, video_maxlen, video_max_pixels, image_max_pixels, infer_dtype, ...)
    model_args: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.caption_max_new_tokens is None:
            self.caption_max_new_tokens = 512 if self.benchmark in _LONG_ANSWER_BENCHMARKS else 128

    def decoding_config(self):
        from .decoding import DecodingConfig

        return DecodingConfig(
            method=self.decoding,
            alpha=self.cd_alpha,
            beta=self.cd_beta,
            noise_step=self.cd_noise_step,
            entropy_threshold=self.cd_entropy_threshold,
        ).resolved()

    def judge_config(self):
        from .judge import JudgeConfig

        return JudgeConfig(
            model=self.judge_model or "",
            base_url=self.judge_base_url,
            api_key_env=self.judge_api_key_env,
            max_retries=self.judge_max_retries,
            timeout=self.judge_timeout,
            prompt_file=self.judge_prompt_file,
        )

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
        decoding = self.decoding_config()
        if decoding.contrastive:  # greedy runs keep the fingerprint they always had
            fp["decoding"] = decoding.as_dict()
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


def _record(item: EvalItem, text: str, info: dict[str, Any], benchmark: str = "", yes_no_rule: str = "official") -> dict[str, Any]:
    if item.kind == "yesno" and benchmark == "pope":
        parsed = pope_answer(text, yes_no_rule)
    elif item.kind == "yesno" and benchmark == "amber":
        parsed = amber_answer(text, yes_no_rule)
    elif item.kind == "yesno":
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


def _two_rules(score: Any, rule: str) -> dict[str, Any]:
    """``{"rule": rule, "official": score("official"), "lenient": score("lenient")}``."""
    return {"rule": rule, "official": score("official"), "lenient": score("lenient")}


def _pope(pairs: list[tuple[EvalItem, str]], rule: str) -> dict[str, Any]:
    splits = list(dict.fromkeys(it.task for it, _ in pairs))

    def score(r: str) -> dict[str, Any]:
        out = {s: pope_scores([it.gold for it, p in pairs if it.task == s], [p for it, p in pairs if it.task == s], r) for s in splits}
        if len(splits) > 1:
            out["average"] = {
                k: sum(out[s][k] for s in splits) / len(splits) if all(out[s][k] is not None for s in splits) else None
                for k in ("accuracy", "precision", "recall", "f1", "yes_ratio")
            } | {"n": sum(out[s]["n"] for s in splits)}
        return out

    return {"splits": splits, **_two_rules(score, rule)}


def _amber(pairs: list[tuple[EvalItem, str]], rule: str, resources: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    gen = [(it, p) for it, p in pairs if it.kind == "caption"]
    dis = [(it, p) for it, p in pairs if it.kind == "yesno"]
    if gen:
        a = resources["amber"]
        out["generative"] = amber_generative_scores(
            [p for _, p in gen], [it.meta for it, _ in gen], a["association"], a["safe_words"], a["extract_nouns"], a["similar"]
        )
        out["generative"]["synonyms"] = a["synonyms"]
    if dis:
        golds, preds, kinds = [it.gold for it, _ in dis], [p for _, p in dis], [it.meta["type"] for it, _ in dis]
        out["discriminative"] = _two_rules(lambda r: amber_discriminative_scores(golds, preds, kinds, r), rule)
    return out


def _mmhal(items: list[EvalItem], judgments: dict[str, dict[str, Any]]) -> dict[str, Any]:
    judged = [it for it in items if it.id in judgments]
    ratings = [judgments[it.id].get("rating") for it in judged]
    out = mmhal_scores(ratings)
    out["question_type"] = {
        t: mmhal_scores([judgments[it.id].get("rating") for it in judged if it.task == t])
        for t in dict.fromkeys(it.task for it in judged)
    }
    models = sorted({str(judgments[it.id].get("judge_model")) for it in judged})
    out["judge_model"] = ", ".join(models) if models else None
    return out


def score_items(
    benchmark: str,
    items: list[EvalItem],
    predictions: dict[str, dict[str, Any]],
    cmm_rule: str = "official",
    yes_no_rule: str = "official",
    resources: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Scores of ``items`` from their predictions (``id -> record`` with ``prediction``).
    Items without a prediction are left out (and counted in ``metrics.json``). ``resources``
    holds what a benchmark needs besides (:func:`prepare_resources`)."""
    resources = resources or {}
    pairs = [(it, str(predictions[it.id].get("prediction") or "")) for it in items if it.id in predictions]
    if benchmark == "pope":
        return _pope(pairs, yes_no_rule)
    if benchmark == "amber":
        return _amber(pairs, yes_no_rule, resources)
    if benchmark == "objhal":
        truth = resources["coco_truth"]
        objects = resources.get("coco_objects")
        out = chair_scores([p for _, p in pairs], [truth[it.meta["image_id"]] for it, _ in pairs], objects=objects)
        out["synonyms"] = objects.source if objects is not None else None
        return out
    if benchmark == "mmhal":
        return _mmhal([it for it, _ in pairs], resources.get("judgments", {}))
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
    **kw)`` replaces :func:`groundpo.eval.engine.create_engine` (tests)."""
    from . import tables
    from .engine import resolve_backend
    from .judge import JUDGMENTS

    if cfg.cmm_rule not in ("official", "strict"):
        raise ValueError("--cmm_rule must be official or strict")
    if cfg.yes_no_rule not in ("official", "lenient"):
        raise ValueError("--yes_no_rule must be official or lenient")
    if cfg.on_error not in ("raise", "record"):
        raise ValueError("--on_error must be raise or record")
    decoding = cfg.decoding_config()
    items = read_benchmark(cfg.benchmark, cfg.data_dir, cfg.data_file, cfg.tasks, cfg.limit, cfg.prompt_suffix, cfg.image_dir)
    if not items:
        raise ValueError(f"no {cfg.benchmark} items selected in {cfg.data_dir} (check --tasks / --limit)")
    resources = prepare_resources(cfg, items)
    out = Path(cfg.output_dir)
    out.mkdir(parents=True, exist_ok=True)

    with _Lock(out):
        if cfg.overwrite_output_dir and not cfg.score_only:
            for name in (PREDICTIONS, METRICS, RESULTS, RUN_CONFIG, MISSING_MEDIA, JUDGMENTS):
                (out / name).unlink(missing_ok=True)
        predictions = read_predictions(out / PREDICTIONS, repair=not cfg.score_only)
        todo = [it for it in items if it.id not in predictions]
        if cfg.benchmark == "mmhal":
            resources["judgments"] = read_predictions(out / JUDGMENTS, repair=True)
            unjudged = [it for it in items if it.id not in resources["judgments"] and (it.id in predictions or not cfg.score_only)]
            if unjudged:
                cfg.judge_config().check()

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
            if decoding.contrastive and backend == "vllm":
                if str(cfg.infer_backend).lower() != "auto":
                    raise ValueError(f"--decoding {decoding.method} needs --infer_backend huggingface")
                backend = "huggingface"
            _check_run_config(out, cfg, backend, has_predictions=bool(predictions))
        if todo and not cfg.score_only:
            logger.info("%s: %d item(s) to generate, %d already in %s (backend: %s)", cfg.benchmark, len(todo), len(items) - len(todo), out / PREDICTIONS, backend)
            if engine_factory is None:
                from .engine import create_engine

                engine_factory = create_engine
            engine = engine_factory(
                cfg.chat_model_args(backend),
                max_new_tokens=cfg.max_new_tokens,
                caption_max_new_tokens=cfg.caption_max_new_tokens,
                batch_size=cfg.batch_size,
                system=cfg.system,
                decoding=decoding,
            )
            _generate(engine, todo, out / PREDICTIONS, predictions, cfg, total=len(items))
        elif todo:
            logger.warning("--score_only: %d of %d item(s) have no prediction and are left out", len(todo), len(items))

        if cfg.benchmark == "mmhal":
            _judge(cfg, items, predictions, resources["judgments"], out / JUDGMENTS)
        scores = score_items(cfg.benchmark, items, predictions, cfg.cmm_rule, cfg.yes_no_rule, resources)
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
            "decoding": decoding.as_dict() if decoding.contrastive else None,
            "scores": scores,
        }
        (out / METRICS).write_text(json.dumps(metrics, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
        table = tables.results_markdown(metrics)
        (out / RESULTS).write_text(table, encoding="utf-8")
    return metrics


def prepare_resources(cfg: EvalConfig, items: list[EvalItem]) -> dict[str, Any]:
    """What scoring ``items`` needs besides the predictions, loaded (or checked) before any model
    is: AMBER's word lists and language tools, CHAIR's COCO ground truth."""
    out: dict[str, Any] = {}
    if cfg.benchmark == "amber" and any(it.kind == "caption" for it in items):
        from .language import nltk_noun_extractor, spacy_similarity
        from .readers import amber_files

        files = amber_files(cfg.data_dir)
        association = json.loads(files["relation"].read_text(encoding="utf-8"))
        if not isinstance(association, dict):
            raise ValueError(f"{files['relation']}: expected an object of word -> associated words")
        safe = [w.strip() for w in files["safe_words"].read_text(encoding="utf-8").splitlines() if w.strip()]
        off = str(cfg.spacy_model).lower() in ("", "none", "off")
        out["amber"] = {
            "association": association,
            "safe_words": safe,
            "extract_nouns": nltk_noun_extractor(cfg.nltk_data),
            "similar": None if off else spacy_similarity(cfg.spacy_model, cfg.amber_similarity),
            "synonyms": None if off else f"spaCy {cfg.spacy_model} similarity > {cfg.amber_similarity}",
        }
    if cfg.benchmark == "objhal":
        from .coco import CocoObjects, coco_ground_truth, default_objects

        objects = CocoObjects(cfg.synonyms_file) if cfg.synonyms_file else default_objects()
        folder = cfg.coco_annotations
        if folder is None:
            candidates = [Path(cfg.data_dir) / "annotations", Path(cfg.data_dir) / "coco2014" / "annotations"]
            folder = str(next((c for c in candidates if c.is_dir()), candidates[0]))
        out["coco_objects"] = objects
        out["coco_truth"] = coco_ground_truth(folder, {it.meta["image_id"] for it in items}, objects)
    return out


def _judge(cfg: EvalConfig, items: list[EvalItem], predictions: dict, judgments: dict, path: Path) -> None:
    from .judge import Judge, judge_predictions

    other = {str(j.get("judge_model")) for j in judgments.values()} - {cfg.judge_model or ""}
    if other and cfg.judge_model:
        raise RunConfigMismatch(
            f"{path} holds reviews by {', '.join(sorted(other))}, not {cfg.judge_model}; "
            "use another --output_dir or --overwrite_output_dir"
        )
    todo = [it for it in items if it.id in predictions and it.id not in judgments]
    if not todo:
        return
    logger.info("mmhal: %d answer(s) to judge with %s, %d already in %s", len(todo), cfg.judge_model, len(judgments), path)
    bar = _progress(len(todo) + len(judgments), len(judgments), "judge", cfg.disable_tqdm)
    try:
        judge_predictions(items, predictions, judgments, path, Judge(cfg.judge_config()), progress=bar)
    finally:
        bar.close()


def _generate(engine, todo: list[EvalItem], path: Path, predictions: dict[str, dict[str, Any]], cfg: EvalConfig, total: int) -> None:
    written = 0
    bar = _progress(total, total - len(todo), cfg.benchmark, cfg.disable_tqdm)
    try:
        with open(path, "a", encoding="utf-8") as f:
            for item, result in engine.generate(todo, return_errors=cfg.on_error == "record"):
                if isinstance(result, Exception):
                    rec = _record(item, "", {"error": str(result)}, cfg.benchmark, cfg.yes_no_rule)
                else:
                    rec = _record(
                        item,
                        result.text,
                        {
                            "prompt_length": result.prompt_length,
                            "response_length": result.response_length,
                            "finish_reason": result.finish_reason,
                            **getattr(result, "info", {}),
                        },
                        cfg.benchmark,
                        cfg.yes_no_rule,
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
