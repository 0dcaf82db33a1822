"""Quiet LLaMA-Factory while a command-line tool loads models: no config dumps between progress bars."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager


@contextmanager
def quiet_llamafactory() -> Iterator[None]:
    """Set ``LLAMAFACTORY_VERBOSITY=WARN`` unless the user chose a level, and restore the environment
    afterwards, so that child processes started later (``llamafactory-cli train``) log as usual."""
    chosen = "LLAMAFACTORY_VERBOSITY" in os.environ
    os.environ.setdefault("LLAMAFACTORY_VERBOSITY", "WARN")
    try:
        yield
    finally:
        if not chosen:
            os.environ.pop("LLAMAFACTORY_VERBOSITY", None)
