"""Checks that every upstream symbol we patch is where LLaMA-Factory 0.9.5 put it.

Each patch in this package calls :func:`require` on its targets before touching them. If
LLaMA-Factory moved or renamed one, training stops at start-up with a message that names the
symbol and the upstream version groundpo was written against, instead of failing later in an
obscure way.
"""

from __future__ import annotations

import logging
from types import ModuleType
from typing import Any

EXPECTED_LLAMAFACTORY = "0.9.5"

logger = logging.getLogger("groundpo")
_version_checked = False


class UpstreamMismatch(RuntimeError):
    """LLaMA-Factory does not have a symbol that groundpo patches."""


def installed_version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("llamafactory")
    except PackageNotFoundError:
        return "not installed"


def require(module: ModuleType, *names: str) -> list[Any]:
    """Return ``module.<name>`` for each name; raise :class:`UpstreamMismatch` naming what is missing."""
    global _version_checked
    if not _version_checked:
        _version_checked = True
        found = installed_version()
        if found != EXPECTED_LLAMAFACTORY:
            logger.warning(
                "groundpo was written against llamafactory==%s; llamafactory %s is installed.",
                EXPECTED_LLAMAFACTORY,
                found,
            )

    values = []
    for name in names:
        obj: Any = module
        for part in name.split("."):
            if not hasattr(obj, part):
                raise UpstreamMismatch(
                    f"groundpo patches `{module.__name__}.{name}`, which does not exist in the installed "
                    f"llamafactory {installed_version()}. groundpo expects llamafactory=={EXPECTED_LLAMAFACTORY}: "
                    f"run `pip install llamafactory=={EXPECTED_LLAMAFACTORY}` (or the README's setup command)."
                )
            obj = getattr(obj, part)
        values.append(obj)
    return values
