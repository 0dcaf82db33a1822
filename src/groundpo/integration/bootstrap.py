"""Start-up hook: patch LLaMA-Factory modules the moment they are imported.

``groundpo_overlay.pth`` (installed into site-packages) calls :func:`install` at every interpreter
start-up. Nothing is imported then: a finder is put on ``sys.meta_path`` that waits for the
LLaMA-Factory modules listed in :data:`PATCHES`. When one of them has finished executing, the
matching patch function of ``groundpo.integration`` runs on it. This is how our stages reach
``llamafactory-cli train``, the ``torchrun`` children it spawns (fresh interpreters that import
only llamafactory) and the training subprocess that LlamaBoard starts.

Keep this module free of heavy imports: it runs in every Python process of the environment.
Set ``GROUNDPO_NO_OVERLAY=1`` to start an interpreter with upstream LLaMA-Factory untouched.
"""

from __future__ import annotations

import sys

# upstream module -> "groundpo module:function" that patches it, applied right after it loads
PATCHES: dict[str, str] = {
    "llamafactory.hparams.parser": "groundpo.integration.parser:patch",
    "llamafactory.train.tuner": "groundpo.integration.tuner:patch",
    "llamafactory.data.parser": "groundpo.integration.data:patch_dataset_attr",
    "llamafactory.data.loader": "groundpo.integration.data:patch_loader",
    "llamafactory.train.callbacks": "groundpo.integration.callbacks:patch",
    # LlamaBoard (llamafactory-cli webui): our stages and their controls
    "llamafactory.webui.common": "groundpo.integration.webui:patch_common",
    "llamafactory.webui.control": "groundpo.integration.webui:patch_control",
    "llamafactory.webui.runner": "groundpo.integration.webui:patch_runner",
    "llamafactory.webui.engine": "groundpo.integration.webui:patch_engine",
    "llamafactory.webui.components.train": "groundpo.integration.webui:patch_train_tab",
    "llamafactory.webui.interface": "groundpo.integration.webui:patch_interface",
    # DeepSpeed ZeRO-3 on gloo (the CPU harness): gathers that complete in order
    "deepspeed.runtime.zero.partition_parameters": "groundpo.integration.deepspeed_gloo:patch",
}

_applied: set[str] = set()


def _apply(module_name: str) -> None:
    if module_name in _applied:
        return
    _applied.add(module_name)
    target, func = PATCHES[module_name].split(":")
    from importlib import import_module

    getattr(import_module(target), func)(sys.modules[module_name])


class _PatchingLoader:  # a loader by protocol; importlib.abc would slow every start-up
    def __init__(self, loader, name: str) -> None:
        self._loader = loader
        self._name = name

    def create_module(self, spec):
        return self._loader.create_module(spec)

    def exec_module(self, module) -> None:
        self._loader.exec_module(module)
        _apply(self._name)

    def __getattr__(self, item):  # get_source, is_package, ... for tools that ask the loader
        return getattr(self._loader, item)


class _PatchingFinder:  # a meta path finder by protocol
    def find_spec(self, fullname, path, target=None):
        if fullname not in PATCHES or fullname in _applied:
            return None
        for finder in sys.meta_path:
            if finder is self or not hasattr(finder, "find_spec"):
                continue
            spec = finder.find_spec(fullname, path, target)
            if spec is not None:
                if spec.loader is not None and not isinstance(spec.loader, _PatchingLoader):
                    spec.loader = _PatchingLoader(spec.loader, fullname)
                return spec
        return None


_FINDER = _PatchingFinder()


def install() -> None:
    """Put the finder first on ``sys.meta_path``; patch modules that are already imported."""
    if _FINDER not in sys.meta_path:
        sys.meta_path.insert(0, _FINDER)
    for name in PATCHES:
        if name in sys.modules:
            _apply(name)


def is_installed() -> bool:
    return _FINDER in sys.meta_path


def applied() -> frozenset[str]:
    """Names of the upstream modules patched in this process (for tests and diagnostics)."""
    return frozenset(_applied)
