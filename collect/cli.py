"""`weightcast collect` (collect's command): build a collection of weight histories, or join the
indexes of a job array's parts.

    weightcast collect --config configs/collect/debug.yaml [key.sub=value ...]
    weightcast collect --config configs/collect/zoo-cpu.yaml part=0/4      # one part of four
    weightcast collect merge-index runs/collect/zoo-cpu                     # after every part
"""

from __future__ import annotations

import argparse
import sys

from weightcast.cli import Command, add_config_arguments

from weightcast.collect.config import load_collect_config
from weightcast.collect.engines import run_collection
from weightcast.collect.index import index_summary, write_index

__all__ = ["COMMAND"]

_MERGE = "merge-index"


def _collect(args: argparse.Namespace) -> int:
    try:
        if args.overrides[:1] == [_MERGE]:
            return _merge_index(args)
        config = load_collect_config(args.config, args.overrides)
        result = run_collection(config, progress=not args.no_progress)
    except KeyboardInterrupt:
        print(
            "weightcast collect: interrupted; finished runs are committed, "
            "run the same command again to resume",
            file=sys.stderr,
        )
        return 130
    diverged = sum(s["status"] == "diverged" for s in result.finished)
    print(f"finished {len(result.finished)} runs now ({diverged} diverged); log: {result.root / 'log.txt'}")
    if result.index is not None:
        print(index_summary(result.index))
        print(f"index: {result.root / 'collection.json'}")
    else:
        print("this part is done; other parts are not: run `weightcast collect merge-index "
              f"{result.root}` once every part has finished")
    return 0


def _merge_index(args: argparse.Namespace) -> int:
    rest = args.overrides[1:]
    if args.config and not rest:
        root = load_collect_config(args.config, []).out_dir
    elif len(rest) == 1 and "=" not in rest[0]:
        root = rest[0]
    else:
        usage = f"usage: weightcast collect {_MERGE} COLLECTION_DIR [--partial]  (or --config FILE)"
        print(usage, file=sys.stderr)
        return 2
    index = write_index(root, allow_partial=args.partial)
    print(index_summary(index))
    return 0


def _configure(parser: argparse.ArgumentParser) -> None:
    add_config_arguments(parser, "collect")
    parser.epilog = (
        f"`weightcast collect {_MERGE} DIR [--partial]` builds the index of a collection whose parts "
        "(part=i/N) ran as separate jobs."
    )
    parser.add_argument(
        "--no-progress", action="store_true", help="no progress bar (log.txt still has every run)"
    )
    parser.add_argument(
        "--partial", action="store_true", help=f"{_MERGE}: index the committed runs even if some are missing"
    )
    parser.set_defaults(func=_collect)


COMMAND = Command(
    "collect", "train zoo runs and record their weight histories into webdataset shards", _configure
)
