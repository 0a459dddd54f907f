"""The layer-type map of weightcast (zoo, used by collect, train_predictor and eval): every
parameter of a model gets one of `LAYER_TYPES`, and a predictor is fitted per layer type.

The type follows the module that owns the parameter (from `named_modules()`) and the parameter's
own name in it:

- `norm`: every parameter of a normalization layer (BatchNorm*, SyncBatchNorm, InstanceNorm*,
  LayerNorm, GroupNorm, RMSNorm, and any module whose class name ends in `Norm`, `Norm1d`,
  `Norm2d` or `Norm3d`, so that user-written RMSNorm/LayerNorm2d classes count too).
- `embedding`: the table of `nn.Embedding` / `nn.EmbeddingBag` (the zoo's own models use
  `nn.Embedding` for learned positions too), and any parameter whose own name is `embedding`,
  `embeddings`, `embed` or `emb` or ends in `_` + one of these (`pos_embedding`, `pos_embed`,
  `position_embeddings`), the usual names of positional tables kept as bare `nn.Parameter`s.
- `conv`: the `weight` of `nn.Conv1d/2d/3d` and `nn.ConvTranspose1d/2d/3d` (depthwise and
  grouped included).
- `linear`: the `weight` of `nn.Linear` and `nn.Bilinear`; `in_proj_weight` and
  `q/k/v_proj_weight` of `nn.MultiheadAttention` (its `out_proj` is an `nn.Linear`); the
  `weight_ih*`, `weight_hh*` and `weight_hr*` matrices of RNN/LSTM/GRU layers and cells.
- `bias`: the `bias` of those conv and linear layers, `in_proj_bias`, `bias_k`, `bias_v` of
  attention, the `bias_ih*`/`bias_hh*` vectors of recurrent layers.

Anything else is typed by rank (>= 3: conv, 2: linear, 0 or 1: bias) and listed in
`LayerTypeReport.fallbacks`; `layer_types` also warns with a `LayerTypeWarning`. Buffers (BN
running statistics) are not parameters and never appear."""

from __future__ import annotations

import re
import warnings
from dataclasses import dataclass

from torch import nn

from weightcast.errors import WeightcastWarning

__all__ = [
    "LAYER_TYPES",
    "LayerTypeReport",
    "LayerTypeWarning",
    "assign_layer_types",
    "layer_types",
    "count_by_type",
]

LAYER_TYPES = ("conv", "linear", "bias", "norm", "embedding")


class LayerTypeWarning(WeightcastWarning):
    """Some parameters were typed by their rank alone."""


@dataclass(frozen=True)
class LayerTypeReport:
    types: dict[str, str]  # parameter name (as in named_parameters()) -> layer type, in that order
    fallbacks: tuple[str, ...]  # names typed by rank alone, because their owner was not recognised


def assign_layer_types(model: nn.Module) -> LayerTypeReport:
    """Layer type of every parameter of `model`, and which of them were typed by rank alone."""
    # named_parameters() lists a shared parameter once, under its first owner: keep that name.
    names = [name for name, _ in model.named_parameters()]
    wanted = set(names)
    found: dict[str, str] = {}
    fallbacks: list[str] = []
    for prefix, module in model.named_modules():
        for leaf, param in module.named_parameters(recurse=False):
            name = f"{prefix}.{leaf}" if prefix else leaf
            if name not in wanted:
                continue
            kind = _known_type(module, leaf)
            if kind is None:
                kind = _type_by_rank(param.ndim)
                fallbacks.append(name)
            found[name] = kind
    return LayerTypeReport({name: found[name] for name in names}, tuple(fallbacks))


def layer_types(model: nn.Module) -> dict[str, str]:
    """Parameter name -> layer type (one of `LAYER_TYPES`) for every parameter of `model`;
    warns (`LayerTypeWarning`) naming the parameters typed by rank alone."""
    report = assign_layer_types(model)
    if report.fallbacks:
        warnings.warn(
            f"{len(report.fallbacks)} parameter(s) of {type(model).__name__} have no known layer "
            f"type and were typed by rank: {', '.join(report.fallbacks)}",
            LayerTypeWarning,
            stacklevel=2,
        )
    return report.types


def count_by_type(model: nn.Module) -> dict[str, int]:
    """Number of scalar parameters of `model` per layer type (every type of `LAYER_TYPES`)."""
    counts = dict.fromkeys(LAYER_TYPES, 0)
    types = assign_layer_types(model).types
    for name, param in model.named_parameters():
        counts[types[name]] += param.numel()
    return counts


_NORM_CLASSES = (
    nn.modules.batchnorm._NormBase,  # BatchNorm*, SyncBatchNorm, InstanceNorm* and their Lazy forms
    nn.LayerNorm,
    nn.GroupNorm,
    nn.RMSNorm,
)
_NORM_CLASS_NAME = re.compile(r"Norm([123][dD])?$")
_EMBEDDING_CLASSES = (nn.Embedding, nn.EmbeddingBag)
_CONV_CLASSES = (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.ConvTranspose1d, nn.ConvTranspose2d, nn.ConvTranspose3d)
_LINEAR_CLASSES = (nn.Linear, nn.Bilinear)
_RECURRENT_CLASSES = (nn.RNNBase, nn.RNNCellBase)
_EMBEDDING_NAME = re.compile(r"(^|_)(embedding|embeddings|embed|emb)$")
_ATTENTION_TYPES = {
    "in_proj_weight": "linear",
    "q_proj_weight": "linear",
    "k_proj_weight": "linear",
    "v_proj_weight": "linear",
    "in_proj_bias": "bias",
    "bias_k": "bias",
    "bias_v": "bias",
}


def _known_type(module: nn.Module, leaf: str) -> str | None:
    """Layer type of parameter `leaf` owned directly by `module`, or None if not recognised."""
    if isinstance(module, _NORM_CLASSES) or _NORM_CLASS_NAME.search(type(module).__name__):
        return "norm"
    if isinstance(module, _EMBEDDING_CLASSES) or _EMBEDDING_NAME.search(leaf):
        return "embedding"
    if isinstance(module, _CONV_CLASSES + _LINEAR_CLASSES) and leaf in ("weight", "bias"):
        if leaf == "bias":
            return "bias"
        return "conv" if isinstance(module, _CONV_CLASSES) else "linear"
    if isinstance(module, nn.MultiheadAttention):
        return _ATTENTION_TYPES.get(leaf)
    if isinstance(module, _RECURRENT_CLASSES):
        if leaf.startswith("weight_"):
            return "linear"
        if leaf.startswith("bias_"):
            return "bias"
    return None


def _type_by_rank(ndim: int) -> str:
    if ndim >= 3:
        return "conv"
    return "linear" if ndim == 2 else "bias"
