"""Dataset-building pipelines of the seed papers: ``groundpo-data <pipeline>``.

Each pipeline is one module beside its siblings (``mod_dpo.py``, ``vtc.py``, ``mfpo.py``,
``acpo.py``) holding a :class:`~groundpo.datagen.runner.Pipeline` subclass, plus one line in
:data:`PIPELINES`. Everything they share lives here once:

- ``options.py``   the common options (output, shard, limit, endpoints, retries) and the
                   dataclass -> command line / YAML parser;
- ``runner.py``    the resumable run: items with stable ids, ``--shard i/N``, ``--limit``,
                   bounded concurrency, per-item progress records, the outputs, ``merge``;
- ``resume.py``    append-only JSONL stores (progress, memo) that survive a kill, the run lock;
- ``backends.py``  OpenAI-compatible chat endpoints (retries, backoff, schema-checked answers)
                   and local transformers models (embeddings, detection, segmentation, tags);
- ``progress.py``  the progress bar and the end-of-run summary;
- ``media.py``     frames at a frame rate, audio tracks, muxing, image and audio encoding;
- ``prompts.py``   the editable prompt files in ``prompts/<pipeline>/``;
- ``annotate.py``  stage-1 clip annotation shared by the audiovisual pipelines.

Adding a pipeline: write ``<name>.py`` with a ``Pipeline`` subclass and add
``"<name>": "groundpo.datagen.<name>:<Class>"`` below; the command, ``--help``, resume,
shards, merge and the summary come with it.
"""

from __future__ import annotations

import importlib

PIPELINES: dict[str, str] = {
    "mod_dpo": "groundpo.datagen.mod_dpo:ModDPOPipeline",
    "vtc": "groundpo.datagen.vtc:VTCPipeline",
    "mfpo": "groundpo.datagen.mfpo:MFPOPipeline",
    "acpo": "groundpo.datagen.acpo:ACPOPipeline",
    "mbpo": "groundpo.datagen.mbpo:MBPOPipeline",
}


def get_pipeline(name: str):
    """The pipeline class registered as ``name`` (imported on first use)."""
    if name not in PIPELINES:
        raise KeyError(f"unknown pipeline {name!r}; expected one of {', '.join(sorted(PIPELINES))}")
    module, _, attr = PIPELINES[name].partition(":")
    return getattr(importlib.import_module(module), attr)
