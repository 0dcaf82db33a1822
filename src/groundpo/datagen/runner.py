"""The resumable run every pipeline shares, and ``merge``.

A pipeline lists its *items* (a clip, an image pair, a preference row), each with a stable id,
in a fixed order, and turns one item into rows. The runner does the rest:

- selects this run's items: ``--shard i/N`` keeps items i, i+N, i+2N, ... of the source order,
  then ``--limit`` keeps the first ones of those;
- skips items already in ``progress/items.jsonl`` and processes the others ``--concurrency`` at a
  time; each finished item is appended there (flushed and fsynced) with its rows, its rejects and
  the requests/tokens it used, so a killed run loses only the items in flight and a rerun ends
  with every item exactly once;
- writes the outputs from that file at the end of every run, in source order whatever order the
  items finished in: ``rows.json`` (a LLaMA-Factory sharegpt ranking dataset, media paths relative
  to ``output_dir``), the ``dataset_info.json`` entry, ``rejects.jsonl`` (item, reason, detail) and
  ``summary.json``;
- refuses to resume with options or prompts that change what is built (``progress/run_config.json``).

Layout of ``output_dir``: ``rows.json``, ``dataset_info.json``, ``rejects.jsonl``, ``summary.json``,
``media/`` (what rows point at), ``progress/`` (items.jsonl, memo.jsonl, run_config.json, cache/).
Train with ``dataset_dir: <output_dir>`` and ``dataset: <dataset_name>``.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import random
import re
import shutil
import zlib
from abc import ABC, abstractmethod
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

from .backends import ChatBackend, Meter, RetryPolicy, metered
from .errors import FatalBackendError, InputError, MediaError, Reject, TransientError
from .options import CommonOptions
from .progress import format_summary, progress_bar, summarize
from .prompts import PromptBook
from .resume import JsonlStore, Memo, RunLock, StoreError

logger = logging.getLogger(__name__)

ROWS = "rows.json"
REJECTS = "rejects.jsonl"
SUMMARY = "summary.json"
DATASET_INFO = "dataset_info.json"
STATE = "progress"
MEDIA_COLUMNS = ("images", "videos", "audios", "rejected_images", "rejected_videos", "rejected_audios")
SHAREGPT_TAGS = {"role_tag": "from", "content_tag": "value", "user_tag": "human", "assistant_tag": "gpt"}


@dataclass(frozen=True)
class Item:
    """One unit of work: ``id`` is stable across runs (built from source ids), ``data`` is JSON."""

    id: str
    data: dict[str, Any] = field(default_factory=dict)


@dataclass
class ItemResult:
    rows: list[dict[str, Any]] = field(default_factory=list)
    rejects: list[dict[str, Any]] = field(default_factory=list)  # {"reason", "detail", ...} of rows left out


def safe_name(text: str) -> str:
    """A file name from an id: unsafe characters become ``_``, with a short hash when anything changed."""
    name = re.sub(r"[^A-Za-z0-9._-]+", "_", text).strip("._") or "item"
    if name != text:
        name = f"{name[:80]}-{zlib.crc32(text.encode()):08x}"
    return name


def sharegpt_row(prompt: str, chosen: str, rejected: str, **columns: Any) -> dict[str, Any]:
    """A LLaMA-Factory sharegpt ranking row (one human turn, the two answers) plus extra columns."""
    return {
        "conversations": [{"from": "human", "value": prompt}],
        "chosen": {"from": "gpt", "value": chosen},
        "rejected": {"from": "gpt", "value": rejected},
        **{k: v for k, v in columns.items() if v is not None},
    }


class Context:
    """What a pipeline uses while it runs: endpoints, prompts, memo, media folder, seeded randomness."""

    def __init__(self, name: str, options: CommonOptions) -> None:
        self.name = name
        self.options = options
        self.output_dir = Path(options.output_dir)
        self.media_dir = self.output_dir / "media"
        self.state_dir = self.output_dir / STATE
        self.cache_dir = self.state_dir / "cache"
        self.prompts = PromptBook(name, options.prompts_dir)
        self.memo = Memo(self.state_dir / "memo.jsonl")
        self._chats: dict[str, ChatBackend] = {}

    def chat(self, role: str = "text") -> ChatBackend:
        """The endpoint of ``role`` (text, vision, audio): its own options when given, else the common ones."""
        if role not in self._chats:
            o = self.options
            self._chats[role] = ChatBackend(
                getattr(o, f"{role}_api_base", None) or o.api_base,
                getattr(o, f"{role}_api_model", None) or o.api_model,
                getattr(o, f"{role}_api_key_env", None) or o.api_key_env,
                retry=RetryPolicy(o.max_retries, o.retry_base_delay, o.retry_max_delay),
                timeout=o.request_timeout,
                temperature=o.temperature,
                max_tokens=o.max_tokens,
                seed=o.seed,
                response_format=o.response_format,
                answer_retries=o.answer_retries,
                role="" if role == "text" else role,
            )
        return self._chats[role]

    def rel(self, path: str | os.PathLike) -> str:
        """A path as rows hold it: relative to ``output_dir`` (posix), absolute when outside it."""
        path = Path(path)
        try:
            return path.resolve().relative_to(self.output_dir.resolve()).as_posix()
        except ValueError:
            return str(path.resolve())

    def place(self, src: str | os.PathLike, rel_dst: str) -> str:
        """A source media file as a row path: copied to ``media/<rel_dst>`` or its absolute path (``--media_mode``)."""
        from .media import copy_file

        if not Path(src).is_file():
            raise InputError(f"media file not found: {src}")
        if self.options.media_mode == "absolute":
            return str(Path(src).resolve())
        return self.rel(copy_file(src, self.media_dir / rel_dst))

    def seed_of(self, *parts: Any) -> int:
        """A 32-bit seed from ``--seed`` and ``parts`` (stable across runs, machines and shards)."""
        return zlib.crc32("\x1f".join(map(str, (self.options.seed, *parts))).encode())

    def rng(self, *parts: Any) -> random.Random:
        return random.Random(self.seed_of(*parts))


class Pipeline(ABC):
    """Base class of a pipeline; subclasses set the class attributes and implement :meth:`items`, :meth:`process`."""

    name: ClassVar[str]
    stage: ClassVar[str]  # the groundpo stage that trains on the output
    description: ClassVar[str]
    options_class: ClassVar[type]
    columns: ClassVar[dict[str, str]]  # dataset_info.json columns besides messages/chosen/rejected

    def __init__(self, options: Any, ctx: Context) -> None:
        self.options = options
        self.ctx = ctx

    @abstractmethod
    def items(self) -> list[Item]:
        """Every item of the build, with stable ids, in order."""

    def roles(self) -> list[str]:
        """The endpoints (text, vision, audio) this run will call; checked before the first item starts."""
        return ["text"]

    def setup(self) -> None:
        """Load models once, before the first item is processed (skipped when nothing is left to do)."""

    @abstractmethod
    def process(self, item: Item) -> ItemResult:
        """The rows (or the reject) of one item."""

    @classmethod
    def dataset_info(cls, file_name: str = ROWS) -> dict[str, Any]:
        return {
            "file_name": file_name,
            "formatting": "sharegpt",
            "ranking": True,
            "columns": {"messages": "conversations", "chosen": "chosen", "rejected": "rejected", **cls.columns},
            "tags": dict(SHAREGPT_TAGS),
        }


# ---------------------------------------------------------------- the run
def _run_config(pipeline_cls: type, options: CommonOptions, prompts: PromptBook) -> dict[str, Any]:
    return {
        "pipeline": pipeline_cls.name,
        "stage": pipeline_cls.stage,
        "dataset_name": options.dataset_name or f"groundpo_{pipeline_cls.name}",
        "options": options.fingerprint(),
        "prompts": prompts.fingerprint(),
    }


def _check_run_config(path: Path, current: dict[str, Any], has_progress: bool) -> None:
    if path.exists() and has_progress:
        saved = json.loads(path.read_text(encoding="utf-8"))
        saved_flat = {**{k: v for k, v in saved.items() if k != "options"}, **saved.get("options", {})}
        now_flat = {**{k: v for k, v in current.items() if k != "options"}, **current["options"]}
        diff = {k: (saved_flat.get(k), now_flat.get(k)) for k in sorted(set(saved_flat) | set(now_flat)) if saved_flat.get(k) != now_flat.get(k)}
        if diff:
            lines = "\n".join(f"  {k}: was {a!r}, now {b!r}" for k, (a, b) in diff.items())
            raise InputError(
                f"{path.parent.parent} holds a build made with other settings:\n{lines}\n"
                "Resume with the same options, shard and prompts, use another --output_dir, or --overwrite to start over."
            )
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(current, indent=2, sort_keys=True) + "\n", encoding="utf-8")


def _clear(out: Path) -> None:
    for name in (ROWS, REJECTS, SUMMARY):
        (out / name).unlink(missing_ok=True)
    for name in (STATE, "media"):
        shutil.rmtree(out / name, ignore_errors=True)


def select_items(items: list[Item], shard: tuple[int, int], limit: int | None) -> list[tuple[int, Item]]:
    """``(index in source order, item)`` of this shard's items, the first ``limit`` of them."""
    seen: dict[str, int] = {}
    for index, item in enumerate(items):
        if item.id in seen:
            raise InputError(f"two items share the id {item.id!r} (source positions {seen[item.id]} and {index}); ids must be unique")
        seen[item.id] = index
    i, n = shard
    chosen = [(index, item) for index, item in enumerate(items) if index % n == i]
    return chosen if limit is None else chosen[:limit]


def _process(pipeline: Pipeline, item: Item) -> tuple[ItemResult, Meter]:
    meter = Meter()
    with metered(meter):
        try:
            result = pipeline.process(item)
        except Reject as reject:
            result = ItemResult(rejects=[reject.as_record()])
        except MediaError as e:  # one corrupt file does not stop a large build
            result = ItemResult(rejects=[{"reason": "unreadable_media", "detail": str(e)}])
    return result, meter


def run(pipeline_cls: type, options: CommonOptions, echo: bool = True) -> dict[str, Any]:
    """Build (or continue building) ``options.output_dir``; returns the summary."""
    out = Path(options.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    with RunLock(out):
        if options.overwrite:
            _clear(out)
        ctx = Context(pipeline_cls.name, options)
        pipeline = pipeline_cls(options, ctx)
        store = JsonlStore(ctx.state_dir / "items.jsonl")
        config = {**_run_config(pipeline_cls, options, ctx.prompts), "shard": options.shard}
        _check_run_config(ctx.state_dir / "run_config.json", config, has_progress=len(store) > 0)

        items = pipeline.items()
        selected = select_items(items, options.shard_spec(), options.limit)
        todo = [(index, item) for index, item in selected if item.id not in store]
        resumed = len(selected) - len(todo)
        failed: dict[str, str] = {}
        try:
            if todo:
                for role in pipeline.roles():
                    ctx.chat(role)
                pipeline.setup()
                _process_all(pipeline, store, todo, failed, options, total=len(selected), initial=resumed)
        finally:
            summary = write_outputs(
                out, pipeline_cls, config["dataset_name"], store, [item.id for _, item in selected],
                items_total=len(items), resumed=resumed, failed=failed, shard=options.shard,
            )
            if echo:
                print(format_summary(summary), flush=True)
    return summary


def _process_all(pipeline: Pipeline, store: JsonlStore, todo, failed: dict[str, str], options, total: int, initial: int) -> None:
    bar = progress_bar(total, initial, pipeline.name, options.progress)
    queue = iter(todo)
    in_flight: dict[Future, tuple[int, Item]] = {}
    consecutive_failures = 0
    limit_failures = max(10, 2 * options.concurrency)
    pool = ThreadPoolExecutor(max_workers=options.concurrency, thread_name_prefix="groundpo-data")
    try:

        def fill() -> None:
            while len(in_flight) < 2 * options.concurrency:
                nxt = next(queue, None)
                if nxt is None:
                    return
                in_flight[pool.submit(_process, pipeline, nxt[1])] = nxt

        fill()
        while in_flight:
            done, _ = wait(list(in_flight), return_when=FIRST_COMPLETED)
            for future in done:
                index, item = in_flight.pop(future)
                try:
                    result, meter = future.result()
                except TransientError as e:
                    failed[item.id] = str(e)
                    consecutive_failures += 1
                    if consecutive_failures >= limit_failures:
                        raise TransientError(f"{consecutive_failures} items in a row could not reach the endpoint; last: {e}") from None
                    continue
                except (InputError, FatalBackendError):
                    raise
                except Exception as e:  # a bug or an unexpected library error: say which item
                    raise RuntimeError(f"item {item.id!r}: {type(e).__name__}: {e}") from e
                consecutive_failures = 0
                rows = []
                for k, row in enumerate(result.rows):
                    rows.append({"id": f"{item.id}#{k}", **row})
                store.append({"id": item.id, "index": index, "rows": rows, "rejects": result.rejects, "usage": meter.as_record()})
                bar.update(1)
            fill()
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
        bar.close()


# ---------------------------------------------------------------- outputs
def _write_text(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


def rows_json(rows: list[dict[str, Any]]) -> str:
    """A JSON array with one row per line (readable, diffable, loads with ``datasets``)."""
    if not rows:
        return "[]\n"
    return "[\n" + ",\n".join(json.dumps(r, ensure_ascii=False, sort_keys=True) for r in rows) + "\n]\n"


def register_dataset(out: Path, name: str, entry: dict[str, Any]) -> None:
    """Add or replace ``name`` in ``out/dataset_info.json``, keeping the other entries."""
    path = out / DATASET_INFO
    info = json.loads(path.read_text(encoding="utf-8")) if path.exists() else {}
    info[name] = entry
    _write_text(path, json.dumps(info, indent=2, sort_keys=True, ensure_ascii=False) + "\n")


def write_outputs(
    out: Path, pipeline_cls: type, dataset_name: str, store: JsonlStore, ids: list[str], *,
    items_total: int, resumed: int, failed: dict[str, str], shard: str,
) -> dict[str, Any]:
    records = sorted((store.get(i) for i in ids if i in store), key=lambda r: r["index"])
    rows = [row for record in records for row in record["rows"]]
    _write_text(out / ROWS, rows_json(rows))
    rejects = [json.dumps({"item": r["id"], **rej}, ensure_ascii=False, sort_keys=True) for r in records for rej in r["rejects"]]
    _write_text(out / REJECTS, "".join(line + "\n" for line in rejects))
    register_dataset(out, dataset_name, pipeline_cls.dataset_info())
    summary = summarize(
        pipeline=pipeline_cls.name, stage=pipeline_cls.stage, dataset_name=dataset_name, items_total=items_total,
        selected=len(ids), records=records, resumed=resumed, failed=failed, shard=shard, rows=len(rows),
    )
    _write_text(out / SUMMARY, json.dumps(summary, indent=2, sort_keys=True, ensure_ascii=False) + "\n")
    return summary


# ---------------------------------------------------------------- merge
def _file_digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def merge(shard_dirs: list[str], output_dir: str, allow_partial: bool = False, echo: bool = True) -> dict[str, Any]:
    """Join the shards of one build (``--shard i/N`` runs, possibly on other machines) into ``output_dir``.

    The shards must come from the same pipeline, options and prompts; every shard 0..N-1 must be
    there and complete (``allow_partial`` joins what there is). Rows come out in source order, as
    an unsharded build writes them; media files are copied next to them.
    """
    from . import get_pipeline

    if not shard_dirs:
        raise InputError("merge: give the shard folders to join")
    out = Path(output_dir)
    configs, stores, summaries = [], [], []
    for folder in shard_dirs:
        state = Path(folder) / STATE
        if not (state / "run_config.json").is_file():
            raise InputError(f"merge: {folder} is not a groundpo-data output folder (no {STATE}/run_config.json)")
        configs.append(json.loads((state / "run_config.json").read_text(encoding="utf-8")))
        stores.append(JsonlStore(state / "items.jsonl"))
        summary_path = Path(folder) / SUMMARY
        summaries.append(json.loads(summary_path.read_text(encoding="utf-8")) if summary_path.exists() else {})
    first = {k: v for k, v in configs[0].items() if k != "shard"}
    for folder, config in zip(shard_dirs[1:], configs[1:]):
        other = {k: v for k, v in config.items() if k != "shard"}
        if other != first:
            keys = sorted(k for k in set(first["options"]) | set(other["options"]) if first["options"].get(k) != other["options"].get(k))
            keys += [k for k in ("pipeline", "prompts", "dataset_name") if first.get(k) != other.get(k)]
            raise InputError(f"merge: {folder} was built with other settings than {shard_dirs[0]} ({', '.join(keys)})")
    specs = [tuple(int(v) for v in c["shard"].split("/")) for c in configs]
    counts = {n for _, n in specs}
    if len(counts) != 1:
        raise InputError(f"merge: the folders are shards of different splits ({', '.join(c['shard'] for c in configs)})")
    n = counts.pop()
    missing = sorted(set(range(n)) - {i for i, _ in specs})
    incomplete = [f for f, s in zip(shard_dirs, summaries) if not s.get("complete")]
    if not allow_partial and (missing or incomplete):
        problems = ([f"shard(s) {', '.join(f'{i}/{n}' for i in missing)} missing"] if missing else []) + (
            [f"incomplete: {', '.join(incomplete)} (rerun its build command to finish it)"] if incomplete else []
        )
        raise InputError("merge: " + "; ".join(problems) + "; or pass --allow_partial")
    pipeline_cls = get_pipeline(first["pipeline"])
    out.mkdir(parents=True, exist_ok=True)
    with RunLock(out):
        merged = JsonlStore(out / STATE / "items.jsonl")
        for folder, store in zip(shard_dirs, stores):
            for record in sorted(store, key=lambda r: r["index"]):
                for row in record["rows"]:
                    _copy_row_media(Path(folder), out, row)
                merged.append(record)
        (out / STATE / "run_config.json").write_text(
            json.dumps({**first, "shard": f"merged {len(shard_dirs)}/{n}"}, indent=2, sort_keys=True) + "\n", encoding="utf-8"
        )
        ids = [r["id"] for r in sorted(merged, key=lambda r: r["index"])]
        summary = write_outputs(
            out, pipeline_cls, first["dataset_name"], merged, ids,
            items_total=max((s.get("items_in_source", 0) for s in summaries), default=0), resumed=len(ids), failed={},
            shard=f"merged {len(shard_dirs)}/{n}",
        )
    if echo:
        print(format_summary(summary), flush=True)
    return summary


def _copy_row_media(src_dir: Path, out: Path, row: dict[str, Any]) -> None:
    from .media import copy_file

    for column in MEDIA_COLUMNS:
        for path in row.get(column) or []:
            if not isinstance(path, str) or os.path.isabs(path):
                continue
            src, dst = src_dir / path, out / path
            if not src.is_file():
                raise InputError(f"merge: row {row.get('id')!r} {column}: {src} not found")
            if dst.exists() and src.resolve() != dst.resolve() and _file_digest(src) != _file_digest(dst):
                raise InputError(f"merge: {dst} differs between shards (row {row.get('id')!r}); were they built with the same sources?")
            if not dst.exists():
                copy_file(src, dst)


__all__ = [
    "Context", "Item", "ItemResult", "Pipeline", "Reject", "merge", "run", "safe_name", "select_items", "sharegpt_row",
    "StoreError",
]
