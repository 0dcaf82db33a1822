"""The three ways an item can go wrong, and what the runner does with each.

- :class:`Reject`: the item's content cannot become a row (an answer that stays malformed, a QA
  pair that fails verification, a swap whose audio is too similar). The item is done: it is
  recorded with its reason and lands in ``rejects.jsonl``; a rerun does not ask again.
- :class:`TransientError`: the endpoint stayed unreachable or overloaded through every retry.
  The item is not recorded, so the next run tries it again; the run ends "incomplete".
- :class:`InputError` / :class:`FatalBackendError`: bad input (a missing file, an unreadable
  caption file) or an endpoint that refuses every request (wrong model name, bad key). The run
  stops with a message naming the item, field and path; what was built so far stays. Missing
  files and bad source files are found before the first request.
- :class:`MediaError`: one item's media file exists but cannot be decoded (a corrupt video, a
  clip without an audio track). The item is rejected (``unreadable_media``, with the path) and
  the build goes on: one bad file in 100k does not stop it.
"""

from __future__ import annotations

from typing import Any


class Reject(Exception):
    """An item (or one of its rows) that cannot be built; ``reason`` is a short code for the summary."""

    def __init__(self, reason: str, detail: str, **extra: Any) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail
        self.extra = extra

    def as_record(self) -> dict[str, Any]:
        return {"reason": self.reason, "detail": self.detail, **self.extra}

    @classmethod
    def from_record(cls, record: dict[str, Any]) -> "Reject":
        extra = {k: v for k, v in record.items() if k not in ("reason", "detail")}
        return cls(record["reason"], record["detail"], **extra)


class TransientError(RuntimeError):
    """An endpoint that stayed unavailable through every retry; the item is tried again next run."""


class FatalBackendError(RuntimeError):
    """An endpoint that refuses requests for a reason retrying cannot fix (4xx other than 408/409/429)."""


class InputError(ValueError):
    """Bad input data or a bad model path; the message names the item, field and path."""


class MediaError(InputError):
    """A media file that cannot be decoded; rejects the item that needs it."""
