"""Checks that every upstream symbol we patch is where LLaMA-Factory 0.9.5 (or DeepSpeed 0.18.4) put it.

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


def installed_version(package: str = "llamafactory") -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(package)
    except PackageNotFoundError:
        return "not installed"


def require(
    module: ModuleType, *names: str, package: str = "llamafactory", expected: str = EXPECTED_LLAMAFACTORY
) -> list[Any]:
    """Return ``module.<name>`` for each name; raise :class:`UpstreamMismatch` naming what is missing.

    ``package``/``expected``: the distribution that owns ``module`` and the version groundpo's patch
    was written against (LLaMA-Factory unless a patch of another library says otherwise).
    """
    global _version_checked
    if not _version_checked and package == "llamafactory":
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
                    f"groundpo patches `{getattr(module, '__name__', module)}.{name}`, which does not exist in the "
                    f"installed {package} {installed_version(package)}. groundpo expects {package}=={expected}: "
                    f"run `pip install {package}=={expected}` (or the README's setup command)."
                )
            obj = getattr(obj, part)
        values.append(obj)
    return values
