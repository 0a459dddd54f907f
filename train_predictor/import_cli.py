"""`weightcast import`: the `train_predictor` stage's command that turns a peer's released checkpoint,
a file the user already has, into a predictor bundle folder (`train_predictor.importers`).

    weightcast import wnn-authors --conv NWNN_Conv_13.pt --fc NWNN_FC_13.pt --bias NWNN_Bias_13.pt \
        -o imported/wnn-authors
    weightcast import nino nino_mlp.pt -o imported/nino-mlp
    weightcast import nino nino.pt -o imported/nino          # or nino_no_posw.pt

The folder loads like any bundle (`PredictorBundle.from_pretrained(folder)`, `bundle: <folder>` in
eval configs). Nothing is downloaded.
"""

from __future__ import annotations

import argparse
import shlex

from weightcast.train_predictor.bundle import save_bundle
from weightcast.train_predictor.importers import import_nino, import_wnn_authors

from weightcast.cli import Command

__all__ = ["COMMAND"]


def _import(args: argparse.Namespace) -> int:
    if args.peer == "wnn-authors":
        bundle = import_wnn_authors(args.conv, args.fc, args.bias, command=_wnn_command(args))
    else:
        bundle = import_nino(args.checkpoint, command=_nino_command(args))
    folder = save_bundle(bundle, args.output)
    print(f"imported {bundle.kind!r} bundle ({', '.join(bundle.layer_types)}) to {folder}")
    return 0


def _wnn_command(args: argparse.Namespace) -> str:
    return shlex.join(["weightcast", "import", "wnn-authors", "--conv", str(args.conv), "--fc", str(args.fc),
                       "--bias", str(args.bias), "-o", str(args.output)])  # fmt: skip


def _nino_command(args: argparse.Namespace) -> str:
    return shlex.join(["weightcast", "import", "nino", str(args.checkpoint), "-o", str(args.output)])


def _configure(parser: argparse.ArgumentParser) -> None:
    peers = parser.add_subparsers(dest="peer", metavar="PEER", required=True)
    wnn = peers.add_parser(
        "wnn-authors",
        help="the WNN authors' three networks (jjh6297/WNN): PyTorch .pt state dicts or Keras .h5 "
        "(needs h5py)",
    )
    wnn.add_argument("--conv", required=True, metavar="FILE", help="NWNN_Conv_13.pt or .h5")
    wnn.add_argument("--fc", required=True, metavar="FILE", help="NWNN_FC_13.pt or .h5")
    wnn.add_argument("--bias", required=True, metavar="FILE", help="NWNN_Bias_13.pt or .h5")
    nino = peers.add_parser(
        "nino",
        help="a NiNo checkpoint (SamsungSAILMontreal/nino): nino_mlp.pt (nino-mlp), nino.pt or "
        "nino_no_posw.pt (nino)",
    )
    nino.add_argument("checkpoint", metavar="FILE", help="{'state_dict', 'model_args'} .pt file")
    for sub in (wnn, nino):
        sub.add_argument("-o", "--output", required=True, metavar="FOLDER", help="bundle folder to write")
        sub.set_defaults(func=_import)


COMMAND = Command(
    "import",
    "turn a peer's released checkpoint you already have (WNN authors, NiNo) into a predictor bundle folder",
    _configure,
)
