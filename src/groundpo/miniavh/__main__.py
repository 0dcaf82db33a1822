"""``python -m groundpo.miniavh`` (or ``scripts/miniavh.py``): run or continue a MiniAVH comparison.

    python -m groundpo.miniavh                     # the default size, seeds 0 1 2, saves/miniavh/default
    python -m groundpo.miniavh --quick             # every stage at a toy size (the test suite runs it)
    python -m groundpo.miniavh --size large        # a bigger world and model, five seeds (a GPU machine)
    python -m groundpo.miniavh --seeds 0,1,2,3,4 --output_dir saves/miniavh/five-seeds

Run the same command again to continue a run that stopped: finished stages are skipped.
"""

from __future__ import annotations

import argparse
import sys

from .pipeline import RunConfigMismatch, run
from .plan import METHODS, SIZES, size_with


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m groundpo.miniavh", description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", choices=sorted(SIZES), default="default", help="the preset (default: default)")
    parser.add_argument("--quick", action="store_true", help="same as --size quick: mechanics only, one to two minutes")
    parser.add_argument("--output_dir", help="run folder (default: saves/miniavh/<size>)")
    parser.add_argument("--seeds", help="comma-separated training seeds (default: the preset's)")
    parser.add_argument("--methods", help=f"comma-separated subset of {','.join(METHODS)} (default: all)")
    for name, kind, what in (("n_pref", int, "preference contexts"), ("n_test", int, "held-out clips"),
                             ("pref_lr", float, "learning rate of every preference method"),
                             ("pref_batch", int, "batch size of every preference method")):
        parser.add_argument(f"--{name}", type=kind, help=f"{what} (default: the preset's)")
    parser.add_argument("--overwrite", action="store_true", help="delete the run folder and start over")
    parser.add_argument("--report_only", action="store_true",
                        help="write the tables and plot from the runs finished so far (a partial report), run nothing")
    parser.add_argument("--isolate", action="store_true",
                        help="run every training as its own `llamafactory-cli train` and every evaluation as its own "
                             "`groundpo-eval` process (slower: imports once per job)")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    name = "quick" if args.quick else args.size
    seeds = [int(s) for s in args.seeds.split(",")] if args.seeds else None
    methods = tuple(m.strip() for m in args.methods.split(",")) if args.methods else None
    if methods and (unknown := [m for m in methods if m not in METHODS]):
        print(f"unknown method(s) {unknown}; choose from {list(METHODS)}", file=sys.stderr)
        return 2
    for key in ("n_pref", "n_test", "pref_batch"):
        if getattr(args, key) is not None and getattr(args, key) < 1:
            print(f"--{key} must be at least 1, got {getattr(args, key)}", file=sys.stderr)
            return 2
    if args.pref_lr is not None and not args.pref_lr > 0:
        print(f"--pref_lr must be positive, got {args.pref_lr}", file=sys.stderr)
        return 2
    size = size_with(name, seeds=seeds, methods=methods, n_pref=args.n_pref, n_test=args.n_test, pref_lr=args.pref_lr,
                     pref_batch=args.pref_batch)
    output_dir = args.output_dir or f"saves/miniavh/{name}"
    if args.report_only:
        from pathlib import Path

        from .pipeline import report_only

        try:
            results = report_only(size, Path(output_dir))
        except (RunConfigMismatch, FileNotFoundError) as e:
            print(f"miniavh: {e}", file=sys.stderr)
            return 1
        print(f"results: {results / 'summary.md'}\nplot:    {results / 'plot.png'}", flush=True)
        return 0
    try:
        results = run(size, output_dir, overwrite=args.overwrite, isolate=args.isolate)
    except (RunConfigMismatch, RuntimeError) as e:
        print(f"miniavh: {e}", file=sys.stderr)
        return 1
    print(f"results: {results / 'summary.md'}\nplot:    {results / 'plot.png'}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
