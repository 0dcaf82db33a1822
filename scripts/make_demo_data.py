#!/usr/bin/env python
"""Regenerate the deterministic demo datasets (default: ``data/demo/``) and register them.

    python scripts/make_demo_data.py [--out data/demo] [--seed 0] [--no-register]

Writes ``mod_pref.json``, ``jompo_pref.json``, ``mfpo_pref.json``, ``acpo_pref.json`` and ``media/``
under ``--out`` (same seed, same bytes), then adds the ``demo_*`` entries to the
``dataset_info.json`` next to the output folder, keeping any other entries there.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))  # run from a checkout

from groundpo.testing.demo_data import DATASET_FILES, make_demo_dataset, register_demo_datasets


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="data/demo", help="output folder (default: data/demo)")
    parser.add_argument("--seed", type=int, default=0, help="generator seed (default: 0)")
    parser.add_argument(
        "--no-register", action="store_true", help="do not touch dataset_info.json next to the output folder"
    )
    args = parser.parse_args(argv)

    out = make_demo_dataset(args.out, seed=args.seed, media_prefix=f"{Path(args.out).name}/media")
    for name, file_name in DATASET_FILES.items():
        rows = json.loads((out / file_name).read_text(encoding="utf-8"))
        print(f"wrote {out / file_name}: {len(rows)} rows ({name})")
    media = sorted((out / "media").iterdir())
    total = sum(p.stat().st_size for p in out.rglob("*") if p.is_file())
    print(f"wrote {out / 'media'}: {len(media)} files; {total / 1024:.1f} KiB in all")
    if not args.no_register:
        info = register_demo_datasets(out.parent / "dataset_info.json", folder=out.name)
        print(f"registered {', '.join(DATASET_FILES)} in {info}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
