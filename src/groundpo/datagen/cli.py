"""``groundpo-data``: build the seed papers' preference datasets.

    groundpo-data <pipeline> [config.yaml] [--option value ...]   build (or continue) a dataset
    groundpo-data merge --output_dir OUT SHARD_DIR [SHARD_DIR ...] join the shards of one build
    groundpo-data list                                            the pipelines
    groundpo-data <pipeline> --help                               every option of a pipeline

Exit status: 0 when the build is complete, 3 when items are left (an endpoint stayed unreachable;
rerun the same command), 2 for bad options or input, 1 for anything else. See docs/data.md.
"""

from __future__ import annotations

import argparse
import logging
import sys

from ..quiet import quiet_llamafactory
from . import PIPELINES, get_pipeline
from .errors import FatalBackendError, InputError, TransientError
from .options import OptionError, parse_options
from .resume import StoreError

EXIT_INCOMPLETE = 3
EXIT_BAD_INPUT = 2


def _usage() -> str:
    lines = [__doc__.strip(), "", "pipelines:"]
    for name in PIPELINES:
        lines.append(f"  {name:<8} {get_pipeline(name).description}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    if not argv or argv[0] in ("-h", "--help", "list"):
        print(_usage())
        return 0
    command, rest = argv[0], argv[1:]
    try:
        if command == "merge":
            from .runner import merge

            parser = argparse.ArgumentParser(prog="groundpo-data merge", description="Join the shards of one build.")
            parser.add_argument("shards", nargs="+", help="the output folders of the shard runs")
            parser.add_argument("--output_dir", required=True, help="folder of the joined dataset")
            parser.add_argument("--allow_partial", action="store_true", help="join even when shards are missing or incomplete")
            args = parser.parse_args(rest)
            merge(args.shards, args.output_dir, allow_partial=args.allow_partial)
            return 0
        if command not in PIPELINES:
            raise OptionError(f"unknown pipeline or command {command!r}; expected one of {', '.join([*PIPELINES, 'merge', 'list'])}")
        from .runner import run

        pipeline_cls = get_pipeline(command)
        options = parse_options(pipeline_cls.options_class, rest, prog=f"groundpo-data {command}", description=pipeline_cls.__doc__ or "")
        with quiet_llamafactory():
            summary = run(pipeline_cls, options)
        return 0 if summary["complete"] else EXIT_INCOMPLETE
    except (OptionError, InputError, StoreError) as e:
        print(f"groundpo-data: error: {e}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except (FatalBackendError, TransientError) as e:
        print(f"groundpo-data: endpoint error: {e}", file=sys.stderr)
        return EXIT_INCOMPLETE if isinstance(e, TransientError) else 1


if __name__ == "__main__":
    sys.exit(main())
