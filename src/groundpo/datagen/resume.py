"""What makes a build resumable: append-only JSONL stores that survive a kill, and the run lock.

A record is written as one line, flushed and fsynced before the next item starts, so a killed
run loses at most the items in flight. A kill in the middle of a write leaves a last line
without its newline: opening the store drops that line (and cuts it off the file, so the next
append starts on a clean line); a bad line anywhere else is an error naming the file and line.
A key written twice keeps its first record, so a record is never counted twice.
"""

from __future__ import annotations

import json
import logging
import os
import threading
from pathlib import Path
from typing import Any, Callable, Iterator

logger = logging.getLogger(__name__)


class StoreError(RuntimeError):
    """A progress file that cannot be read back; the message names the file and line."""


class JsonlStore:
    """``key -> record`` backed by an append-only JSONL file; thread-safe appends."""

    def __init__(self, path: str | os.PathLike, key: str = "id") -> None:
        self.path = Path(path)
        self.key = key
        self._lock = threading.Lock()
        self.records: dict[str, dict[str, Any]] = {}
        self.dropped_tail = False
        self._load()

    def _load(self) -> None:
        if not self.path.exists():
            return
        data = self.path.read_bytes()
        lines = data.split(b"\n")
        complete, tail = lines[:-1], lines[-1]
        for lineno, line in enumerate(complete, 1):
            if line.strip():
                try:
                    self._add(json.loads(line))
                except (json.JSONDecodeError, UnicodeDecodeError, StoreError) as e:
                    raise StoreError(
                        f"{self.path}: line {lineno} is not a record ({e}); fix or delete that line, or rerun with --overwrite"
                    ) from None
        if tail.strip():  # cut off by a kill during the write
            logger.warning("%s: dropping the last line, cut off when the previous run was killed", self.path)
            with open(self.path, "r+b") as f:
                f.truncate(len(data) - len(tail))
            self.dropped_tail = True

    def _add(self, record: Any) -> bool:
        if not isinstance(record, dict) or self.key not in record:
            raise StoreError(f"expected a JSON object with {self.key!r}")
        key = str(record[self.key])
        if key in self.records:
            return False
        self.records[key] = record
        return True

    def __contains__(self, key: str) -> bool:
        return key in self.records

    def get(self, key: str) -> dict[str, Any] | None:
        return self.records.get(key)

    def __len__(self) -> int:
        return len(self.records)

    def __iter__(self) -> Iterator[dict[str, Any]]:
        return iter(list(self.records.values()))

    def append(self, record: dict[str, Any]) -> bool:
        """Write ``record`` durably unless its key is already there; True when written."""
        line = json.dumps(record, ensure_ascii=False, sort_keys=True) + "\n"
        with self._lock:
            if not self._add(record):
                return False
            self.path.parent.mkdir(parents=True, exist_ok=True)
            with open(self.path, "a", encoding="utf-8") as f:
                f.write(line)
                f.flush()
                os.fsync(f.fileno())
        return True


class Memo:
    """Results shared by several items (a clip's caption, an image's embedding request), computed once.

    ``get(key, compute)`` returns the stored value, or computes it under a per-key lock and stores it.
    A :class:`Reject` raised by ``compute`` is stored too and raised again for every item that needs
    the value (the item then lands in the rejects with that reason); other exceptions (a lost
    endpoint) are not stored, so a rerun tries again.
    """

    def __init__(self, path: str | os.PathLike) -> None:
        self.store = JsonlStore(path, key="key")
        self._locks: dict[str, threading.Lock] = {}
        self._guard = threading.Lock()

    def get(self, key: str, compute: Callable[[], Any]) -> Any:
        from .errors import Reject

        with self._guard:
            lock = self._locks.setdefault(key, threading.Lock())
        with lock:
            record = self.store.get(key)
            if record is None:
                try:
                    value = compute()
                except Reject as reject:
                    record = {"key": key, "reject": reject.as_record()}
                else:
                    record = {"key": key, "value": value}
                self.store.append(record)
        if "reject" in record:
            raise Reject.from_record(record["reject"])
        return record["value"]


class RunLock:
    """An exclusive lock on ``output_dir`` (``filelock``): two runs never append to the same progress files."""

    def __init__(self, folder: Path) -> None:
        from filelock import FileLock

        Path(folder).mkdir(parents=True, exist_ok=True)
        self.folder = Path(folder)
        self.lock = FileLock(str(self.folder / ".groundpo-data.lock"), timeout=0)

    def __enter__(self) -> "RunLock":
        from filelock import Timeout

        try:
            self.lock.acquire()
        except Timeout:
            raise StoreError(f"another groundpo-data run is writing to {self.folder}") from None
        return self

    def __exit__(self, *exc: object) -> None:
        self.lock.release()
