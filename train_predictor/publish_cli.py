"""`weightcast publish <bundle-folder> --repo-id org/name`: the `train_predictor` stage's command
that uploads a saved predictor bundle to the Hugging Face Hub (`train_predictor.hub.publish`)."""

from __future__ import annotations

import argparse

from weightcast.cli import Command
from weightcast.train_predictor.bundle import publish

__all__ = ["COMMAND"]


def _publish(args: argparse.Namespace) -> int:
    url = publish(args.folder, args.repo_id, private=args.private, revision=args.revision)
    print(f"published {args.folder} to {args.repo_id}: {url}")
    return 0


def _configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("folder", help="bundle folder (config.json, model.safetensors, README.md)")
    parser.add_argument(
        "--repo-id", required=True, metavar="ORG/NAME", help="Hub model repository, created if missing"
    )
    parser.add_argument("--private", action="store_true", help="create the repository as private")
    parser.add_argument(
        "--revision", metavar="BRANCH", help="branch to commit to, created if missing (default: main)"
    )
    parser.set_defaults(func=_publish)


COMMAND = Command(
    "publish",
    "upload a predictor bundle folder to the Hugging Face Hub (token: HF_TOKEN or `hf auth login`)",
    _configure,
)
