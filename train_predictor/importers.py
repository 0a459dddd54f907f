"""Importers of the peers' released checkpoints (train_predictor stage): a file the user already has
becomes a `PredictorBundle` whose model card says where it came from. Nothing is downloaded, and
nothing is unpickled: PyTorch files are read with `torch.load(weights_only=True)`, Keras files with
h5py (the optional extra `weightcast[import]`), never TensorFlow.

WNN authors (jjh6297/WNN): the three `NWNN_{Conv,FC,Bias}_13` networks, as the PyTorch state dicts
of their port (`.pt`) or the original Keras weights (`.h5`), become a `wnn` bundle (conv, linear,
bias; norm and embedding fall back as usual) with `eps=1.001e-5`, their code's `1e-8 + 1e-5`.
Layer map (the Keras creation order, which the port's names keep):

    dense    -> values.inp        dense_6  -> diffs.inp         (L1-regularized, `.linear` in the .pt)
    dense_1  -> values.act.squeeze  dense_7 -> diffs.act.squeeze
    dense_2  -> values.act.a (added) dense_8 -> diffs.act.a
    dense_3  -> values.act.b (x exp) dense_9 -> diffs.act.b
    dense_4  -> values.act.c (in exp) dense_10 -> diffs.act.c
    dense_5  -> values.out        dense_11 -> diffs.out         (L1-regularized)
    dense_12 -> head

In a Keras file the layers are `dense_{b+i}` (b = the file's first index: 14 in the released
ones); kernels are (in, out) and are transposed. weightcast's WNN computes what the paper and
the Keras networks compute (LeakyReLU slope 0.3, de-normalization from the normalized last
value); the port's 0.01 slope and its bias path are not imported, only the weights.

NiNo (SamsungSAILMontreal/nino): `{'state_dict', 'model_args'}` files. `model_args['gnn']` False
(`nino_mlp.pt`, `nino_mlp_h32.pt`) becomes a `nino-mlp` bundle: one copy of the network per
weightcast layer type, each configured with its NiNo type id (`nino.NINO_TYPE_IDS`). Its keys:
`layer_embed` -> `type_embed`, `edge_proj.fc.0` -> `proj`, `edge_mlp.fc.{0,2,4}` -> `mlp.{0,2,4}`,
`edge_mlp.fc.6` -> `head`. `model_args['gnn']` True (`nino_no_posw.pt`) becomes a `nino` bundle
(`nino_graph.NiNoGraph`): `gnn.convs.i.{edge_encoder, pre_nns.0.0, post_nns.0.0, lin}` ->
`convs.i.{edge_encoder, pre, post, lin}`, `gnn.edge_update.i.*` -> `edge_updates.i.*`,
`edge_out.fc.{0,2}` -> `edge_out.{0,2}`, `node_proj.fc.0` -> `node_proj`. The default `nino.pt`
(`wte_pos_enc` True) adds the token-position embedding: `wte_pos_enc_layer` (vocab_size + 1, hid)
-> `token_embed` (`NiNoGraph(vocab_size=...)`: row 0 for the nodes that are not tokens, row t + 1
for token t of the model's token embedding; tokens >= vocab_size get row 0 with a warning). With
`wte_pos_enc` and `lpe` 0 NiNo has no `node_proj`, which weightcast's nino then does not use
(imported as zeros).
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import Tensor
from weightcast.train_predictor.bundle import PredictorBundle
from weightcast.train_predictor.predictors import WNN, NiNoGraph, NiNoMLP, Predictor
from weightcast.zoo.layer_types import LAYER_TYPES

from weightcast.errors import WeightcastError

__all__ = [
    "WNN_AUTHORS_EPS",
    "WNN_AUTHORS_FILES",
    "CheckpointImportError",
    "import_nino",
    "import_wnn_authors",
    "load_nino_checkpoint",
    "load_wnn_authors",
    "nino_graph_from_checkpoint",
    "nino_mlp_from_checkpoint",
    "wnn_authors_state_dict",
]

WNN_AUTHORS_EPS = 1.001e-5  # their code divides by 2 * (range + 1e-8 + 1e-5)
# weightcast layer type -> the authors' network for it
WNN_AUTHORS_FILES = {"conv": "NWNN_Conv_13", "linear": "NWNN_FC_13", "bias": "NWNN_Bias_13"}
# authors' layer index -> weightcast WNN module; the L1-regularized ones are `LinearL1` in the .pt
_WNN_LAYERS = {
    0: "values.inp", 1: "values.act.squeeze", 2: "values.act.a", 3: "values.act.b", 4: "values.act.c",
    5: "values.out", 6: "diffs.inp", 7: "diffs.act.squeeze", 8: "diffs.act.a", 9: "diffs.act.b",
    10: "diffs.act.c", 11: "diffs.out", 12: "head",
}  # fmt: skip
_WNN_L1 = (0, 5, 6, 11)
_WNN_PT_BUFFERS = ("weight_loss", "bias_loss")  # the port's regularization bookkeeping, not weights
_NINO_REPO = "SamsungSAILMontreal/nino"
_WNN_REPO = "jjh6297/WNN"
# NiNoModel defaults (its optim/model.py) and the values weightcast's nino-mlp implements.
_NINO_DEFAULTS: dict[str, Any] = dict(
    ctx=5, hid=128, gnn=True, dms=True, max_feat_size=9, input_layer="linear", act_name="silu",
    residual=True, seq_len=40, improved_graph=True, wte_pos_enc=True, vocab_size=50257, edge_types=15,
    lpe=8, scale_method="std", upd_scale=1.0, layers=3,
)  # fmt: skip
_NINO_REQUIRED = dict(dms=True, input_layer="linear", act_name="silu", residual=True, scale_method="std",
                      upd_scale=1.0, improved_graph=True)  # fmt: skip
_NINO_IGNORED = ("chunk_size", "message_passing_device", "edge_sample_ratio", "final_edge_update")


class CheckpointImportError(WeightcastError, ValueError):
    """A file given to an importer is not the checkpoint it should be (missing, another format,
    keys or shapes that do not match); the message names the file and what was expected."""


# ---------------------------------------------------------------- WNN authors


def wnn_authors_state_dict(path: str | Path) -> dict[str, Tensor]:
    """The weights of one of the WNN authors' networks (`.pt` state dict of their PyTorch port or
    `.h5` Keras weights) as a state dict of weightcast's `WNN`."""
    path = _existing(path)
    suffix = path.suffix.lower()
    if suffix in (".pt", ".pth"):
        layers = _wnn_layers_from_pt(path)
    elif suffix in (".h5", ".hdf5", ".keras"):
        layers = _wnn_layers_from_h5(path)
    else:
        raise CheckpointImportError(
            f"{path}: unknown WNN weights format {suffix!r}; give the authors' .pt state dict or .h5 "
            "Keras file"
        )
    state = {}
    for index, module in _WNN_LAYERS.items():
        weight, bias = layers[index]
        state[f"{module}.weight"], state[f"{module}.bias"] = weight, bias
    expected = WNN(eps=WNN_AUTHORS_EPS).state_dict()
    wrong = {
        k: (tuple(v.shape), tuple(expected[k].shape))
        for k, v in state.items()
        if v.shape != expected[k].shape
    }
    if wrong:
        raise CheckpointImportError(
            f"{path}: layer shapes do not match the WNN of input length 5 ((found, expected) by "
            f"weightcast name): {wrong}"
        )
    return {k: v.to(torch.float32).contiguous() for k, v in state.items()}


def load_wnn_authors(path: str | Path) -> WNN:
    """One of the WNN authors' networks as a weightcast `WNN` (eps 1.001e-5, input length 5)."""
    wnn = WNN(input_length=5, horizon=5, eps=WNN_AUTHORS_EPS)
    wnn.load_state_dict(wnn_authors_state_dict(path))
    return wnn


def import_wnn_authors(
    conv: str | Path, fc: str | Path, bias: str | Path, *, command: str | None = None
) -> PredictorBundle:
    """A `wnn` bundle of the WNN authors' three networks (files `NWNN_{Conv,FC,Bias}_13.pt` or
    `.h5`): conv, linear and bias fitted, norm -> bias and embedding -> linear by fallback."""
    files = {"conv": _existing(conv), "linear": _existing(fc), "bias": _existing(bias)}
    predictors = {layer_type: load_wnn_authors(path) for layer_type, path in files.items()}
    trained_on = {
        "collection": f"the WNN authors' released weights ({_WNN_REPO}, NWNN_*_13), imported by weightcast",
        "source": f"https://github.com/{_WNN_REPO}",
        "files": [f"{t}: {p.name} (sha256 {_sha256(p)})" for t, p in files.items()],
        "license": "the source repository states none; ask its authors before redistributing",
        "note": "Keras networks: LeakyReLU slope 0.3, eps 1.001e-5; the PyTorch port's 0.01 slope "
        "is not used",
    }
    return PredictorBundle.from_predictors(
        predictors, trained_on=trained_on, commands=[command] if command else []
    )


def _wnn_layers_from_pt(path: Path) -> dict[int, tuple[Tensor, Tensor]]:
    state = _torch_load(path)
    if "state_dict" in state and isinstance(state["state_dict"], Mapping):
        state = state["state_dict"]
    layers, used = {}, set()
    for index in _WNN_LAYERS:
        prefix = ("dense" if index == 0 else f"dense_{index}") + (".linear" if index in _WNN_L1 else "")
        keys = (f"{prefix}.weight", f"{prefix}.bias")
        missing = [k for k in keys if k not in state]
        if missing:
            raise CheckpointImportError(
                f"{path}: not a WNN authors' state dict: missing {missing} (expected the keys "
                "dense[.linear], "
                f"dense_1 .. dense_12 of their PyTorch port)"
            )
        layers[index] = (state[keys[0]], state[keys[1]])
        used.update(keys)
    unknown = sorted(k for k in set(state) - used if not k.endswith(_WNN_PT_BUFFERS))
    if unknown:
        raise CheckpointImportError(f"{path}: unexpected keys in a WNN authors' state dict: {unknown}")
    return layers


def _wnn_layers_from_h5(path: Path) -> dict[int, tuple[Tensor, Tensor]]:
    try:
        import h5py
    except ImportError:
        raise CheckpointImportError(
            f"{path}: reading Keras .h5 weights needs h5py: pip install 'weightcast[import]' (or h5py)"
        ) from None
    try:
        handle = h5py.File(path, "r")
    except OSError as err:
        raise CheckpointImportError(f"{path}: not an HDF5 file ({err})") from None
    with handle:
        root = handle["model_weights"] if "model_weights" in handle else handle  # full-model saves nest it
        found = {}
        for name in root:
            match = re.fullmatch(r"dense(?:_(\d+))?", name)
            if match:
                found[int(match.group(1) or 0)] = name
        if len(found) != len(_WNN_LAYERS) or max(found) - min(found) != len(_WNN_LAYERS) - 1:
            raise CheckpointImportError(
                f"{path}: expected 13 consecutive Keras Dense layers (the WNN), found "
                f"{sorted(found.values())}"
            )
        base = min(found)
        layers = {}
        for index in _WNN_LAYERS:
            group = root[found[base + index]]
            arrays: dict[str, Any] = {}

            def collect(key: str, item: Any, arrays: dict[str, Any] = arrays) -> None:
                if isinstance(item, h5py.Dataset):  # visititems stops at a non-None return
                    arrays[key.rsplit("/", 1)[-1]] = item[()]

            group.visititems(collect)
            if "kernel:0" not in arrays or "bias:0" not in arrays:
                raise CheckpointImportError(f"{path}: layer {found[base + index]} has no kernel:0 / bias:0")
            kernel = torch.from_numpy(arrays["kernel:0"]).T  # Keras (in, out) -> torch (out, in)
            bias = torch.from_numpy(arrays["bias:0"])
            layers[index] = (kernel, bias)
    return layers


# ---------------------------------------------------------------- NiNo


def load_nino_checkpoint(path: str | Path) -> tuple[dict[str, Tensor], dict[str, Any]]:
    """(state_dict, model_args with NiNoModel's defaults filled in) of a NiNo checkpoint."""
    path = _existing(path)
    content = _torch_load(path)
    if not isinstance(content, Mapping) or "state_dict" not in content:
        raise CheckpointImportError(
            f"{path}: not a NiNo checkpoint: expected a dict with 'state_dict' and 'model_args' "
            f"(as {_NINO_REPO}'s checkpoints/*.pt), got {_describe(content)}"
        )
    args = {**_NINO_DEFAULTS, **dict(content.get("model_args") or {})}
    for key in _NINO_IGNORED:
        args.pop(key, None)
    wrong = {k: args[k] for k, v in _NINO_REQUIRED.items() if args.get(k) != v}
    if wrong:
        raise CheckpointImportError(
            f"{path}: model_args {wrong} are not supported; weightcast implements NiNo with {_NINO_REQUIRED}"
        )
    return dict(content["state_dict"]), args


def nino_mlp_from_checkpoint(path: str | Path, layer_type: str = "linear") -> NiNoMLP:
    """A graph-free NiNo checkpoint (`model_args['gnn']` False) as a `nino-mlp` predictor."""
    state, args = load_nino_checkpoint(path)
    if not _is_mlp(args):
        raise CheckpointImportError(
            f"{path}: a NiNo graph network (model_args gnn={args['gnn']!r}); nino-mlp holds the graph-free "
            f"checkpoints (nino_mlp.pt); import this one with import_nino (kind 'nino')"
        )
    predictor = NiNoMLP(
        input_length=args["ctx"], horizon=args["seq_len"], hidden=args["hid"], depth=3,
        num_types=args["edge_types"], layer_type=layer_type,
    )  # fmt: skip
    mapping = {
        "layer_embed.weight": "type_embed.weight",
        "edge_proj.fc.0.weight": "proj.weight", "edge_proj.fc.0.bias": "proj.bias",
        "edge_mlp.fc.0.weight": "mlp.0.weight", "edge_mlp.fc.0.bias": "mlp.0.bias",
        "edge_mlp.fc.2.weight": "mlp.2.weight", "edge_mlp.fc.2.bias": "mlp.2.bias",
        "edge_mlp.fc.4.weight": "mlp.4.weight", "edge_mlp.fc.4.bias": "mlp.4.bias",
        "edge_mlp.fc.6.weight": "head.weight", "edge_mlp.fc.6.bias": "head.bias",
    }  # fmt: skip
    _load_mapped(predictor, state, mapping, path)
    return predictor


def nino_graph_from_checkpoint(path: str | Path, layer_type: str = "linear") -> NiNoGraph:
    """A NiNo graph-network checkpoint (gnn True: the default `nino.pt`, with the token-position
    embedding `wte_pos_enc`, or `nino_no_posw.pt`, without) as a `nino` predictor."""
    state, args = load_nino_checkpoint(path)
    if _is_mlp(args):
        raise CheckpointImportError(f"{path}: a graph-free NiNo checkpoint; import it as nino-mlp")
    tokens = bool(args["wte_pos_enc"])
    vocab_size = args["vocab_size"] if tokens else 0
    if tokens and (not isinstance(vocab_size, int) or isinstance(vocab_size, bool) or vocab_size < 1):
        raise CheckpointImportError(
            f"{path}: model_args wte_pos_enc=True needs vocab_size, a positive int (GPT-2's 50257 in "
            f"nino.pt); got {vocab_size!r}"
        )
    layers = args["layers"]
    predictor = NiNoGraph(
        input_length=args["ctx"], horizon=args["seq_len"], hidden=args["hid"], layers=layers,
        max_feat=args["max_feat_size"], lpe=args["lpe"], num_types=args["edge_types"], layer_type=layer_type,
        vocab_size=vocab_size,
    )  # fmt: skip
    mapping = {
        "layer_embed.weight": "type_embed.weight",
        "node_proj.fc.0.weight": "node_proj.weight", "node_proj.fc.0.bias": "node_proj.bias",
        "edge_proj.fc.0.weight": "edge_proj.weight", "edge_proj.fc.0.bias": "edge_proj.bias",
        "edge_out.fc.0.weight": "edge_out.0.weight", "edge_out.fc.0.bias": "edge_out.0.bias",
        "edge_out.fc.2.weight": "edge_out.2.weight", "edge_out.fc.2.bias": "edge_out.2.bias",
    }  # fmt: skip
    absent: tuple[str, ...] = ()
    if tokens:
        mapping["wte_pos_enc_layer.weight"] = "token_embed.weight"
        if not args["lpe"]:  # NiNoModel builds node_proj only with lpe or without wte_pos_enc
            for kind in ("weight", "bias"):
                del mapping[f"node_proj.fc.0.{kind}"]
            absent = ("node_proj.weight", "node_proj.bias")  # unused at lpe 0: zeros
    names = {"edge_encoder": "edge_encoder", "pre_nns.0.0": "pre", "post_nns.0.0": "post", "lin": "lin"}
    for i in range(layers):
        for theirs, ours in names.items():
            for kind in ("weight", "bias"):
                mapping[f"gnn.convs.{i}.{theirs}.{kind}"] = f"convs.{i}.{ours}.{kind}"
    for i in range(layers - 1):
        for name in ("lin_e", "lin_s", "lin_t", "lin1"):
            for kind in ("weight", "bias"):
                mapping[f"gnn.edge_update.{i}.{name}.{kind}"] = f"edge_updates.{i}.{name}.{kind}"
    _load_mapped(predictor, state, mapping, path, absent=absent)
    return predictor


def import_nino(path: str | Path, *, command: str | None = None) -> PredictorBundle:
    """A bundle of a NiNo checkpoint: `nino-mlp` for the graph-free ones (one copy per layer type,
    each with its NiNo type id), `nino` for the graph network."""
    path = _existing(path)
    _, args = load_nino_checkpoint(path)
    if _is_mlp(args):
        predictors: dict[str, Predictor] = {t: nino_mlp_from_checkpoint(path, t) for t in LAYER_TYPES}
    else:
        predictors = {t: nino_graph_from_checkpoint(path, t) for t in LAYER_TYPES}
    tokens = not _is_mlp(args) and bool(args["wte_pos_enc"])
    shown = ["gnn", "ctx", "hid", "seq_len", "edge_types", "lpe", "wte_pos_enc"]
    shown += ["vocab_size"] if tokens else []
    trained_on = {
        "collection": f"NiNo's released checkpoint {path.name} ({_NINO_REPO}), imported by weightcast",
        "source": f"https://github.com/{_NINO_REPO}",
        "files": [f"{path.name} (sha256 {_sha256(path)})"],
        "model_args": {k: args[k] for k in shown},
        "license": "MIT (Samsung Electronics Co., Ltd.), see the source repository's LICENSE",
        "note": "windows are c=5 states period/5 steps apart; horizon k in context spacings "
        "(NiNo's schedule: nino_horizon_schedule)",
    }
    if tokens:
        trained_on["token_embedding"] = (
            f"imported (wte_pos_enc_layer -> token_embed, {args['vocab_size']} tokens + the non-token "
            "row 0): token t of the model's token embedding (its first nn.Embedding indexed by a model "
            f"input) reads row t + 1; tokens >= {args['vocab_size']} read row 0, with a warning; NiNo "
            "trained it on GPT-2's vocabulary"
        )
    elif not _is_mlp(args):
        trained_on["token_embedding"] = "none (wte_pos_enc False in the checkpoint)"
    return PredictorBundle.from_predictors(
        predictors, trained_on=trained_on, commands=[command] if command else []
    )


def _is_mlp(args: Mapping[str, Any]) -> bool:
    return args["gnn"] in (False, None, "None", "none")


def _load_mapped(
    predictor: torch.nn.Module,
    state: Mapping[str, Tensor],
    mapping: Mapping[str, str],
    path: Path,
    absent: tuple[str, ...] = (),
) -> None:
    """Load `state` renamed by `mapping` (peer key -> ours) strictly, naming what does not fit;
    our `absent` entries, which the peer's network does not have (and ours does not use), become
    zeros, so that every copy of an imported network is the same (the runtime's graph path needs
    one network for all layer types)."""
    missing = sorted(set(mapping) - set(state))
    unknown = sorted(set(state) - set(mapping))
    if missing or unknown:
        raise CheckpointImportError(
            f"{path}: state dict keys do not match: missing {missing}, unexpected {unknown}"
        )
    ours = predictor.state_dict()
    renamed = {mapping[k]: v.to(torch.float32) for k, v in state.items()}
    wrong = {
        k: (tuple(v.shape), tuple(ours[k].shape)) for k, v in renamed.items() if v.shape != ours[k].shape
    }
    if wrong:
        raise CheckpointImportError(f"{path}: shapes (found, expected) do not match: {wrong}")
    predictor.load_state_dict({**renamed, **{k: torch.zeros_like(ours[k]) for k in absent}})


# ---------------------------------------------------------------- files


def _existing(path: str | Path) -> Path:
    path = Path(path)
    if not path.is_file():
        raise CheckpointImportError(f"{path}: no such file (importers read a checkpoint you already have)")
    return path


def _torch_load(path: Path) -> Any:
    """torch.load with weights_only=True: tensors and plain containers only, no code runs."""
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # pickle errors, zip errors, refused globals: all mean "not this format"
        raise CheckpointImportError(
            f"{path}: cannot be read as a PyTorch weights file with torch.load(weights_only=True): {err}"
        ) from None


def _describe(content: Any) -> str:
    if isinstance(content, Mapping):
        return f"keys {sorted(map(str, content))[:10]}"
    return f"a {type(content).__name__}"


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()
