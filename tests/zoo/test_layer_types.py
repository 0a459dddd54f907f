"""Every parameter of every registered architecture gets a layer type; the rules give the exact
split on known networks; unknown parameters fall back by rank and are reported."""

from __future__ import annotations

import warnings

import pytest
import torch
from torch import nn

from weightcast.zoo.layer_types import (
    LAYER_TYPES,
    LayerTypeWarning,
    assign_layer_types,
    count_by_type,
    layer_types,
)
from weightcast.zoo.models import ARCHITECTURES, count_parameters, create_model
from weightcast.zoo.tasks.base import TaskSpec

DEFAULT_SPECS = {
    "mnist1d": TaskSpec("signal", (1, 40), 10, "classification"),
    "shapes": TaskSpec("image", (1, 16, 16), 10, "classification"),
    "wine": TaskSpec("tabular", (13,), 3, "classification"),
    "stdlib-chars": TaskSpec("tokens", (64,), 100, "language_model"),
}


def _default_model(arch: str) -> nn.Module:
    return create_model(arch, DEFAULT_SPECS[ARCHITECTURES.metadata(arch)["default_task"]])


@pytest.mark.parametrize("arch", ARCHITECTURES.names())
def test_every_parameter_of_every_architecture_is_typed(arch: str):
    model = _default_model(arch)
    report = assign_layer_types(model)
    assert report.fallbacks == ()
    assert list(report.types) == [name for name, _ in model.named_parameters()]
    assert set(report.types.values()) <= set(LAYER_TYPES)
    counts = count_by_type(model)
    assert sum(counts.values()) == count_parameters(model)
    # rank rules hold whatever the owner: conv kernels rank >= 3, linear rank 2, biases rank 1
    params = dict(model.named_parameters())
    for name, kind in report.types.items():
        ndim = params[name].ndim
        assert {"conv": ndim >= 3, "linear": ndim == 2, "bias": ndim == 1}.get(kind, True), name


def test_syn2_mlp_split():
    model = create_model("mlp", TaskSpec("tabular", (1,), 1, "regression"), depth=1, width=10)
    assert layer_types(model) == {
        "hidden.0.weight": "linear",
        "hidden.0.bias": "bias",
        "head.weight": "linear",
        "head.bias": "bias",
    }
    assert count_by_type(model) == {"conv": 0, "linear": 20, "bias": 11, "norm": 0, "embedding": 0}


def test_resnet20_split():
    model = create_model("resnet20", TaskSpec("image", (3, 32, 32), 10, "classification"))
    types = layer_types(model)
    assert types["stem.weight"] == "conv"
    assert types["stages.0.0.bn1.weight"] == "norm"
    assert types["stages.0.0.bn1.bias"] == "norm"
    assert types["head.bias"] == "bias"
    # 19 bias-free 3x3 convolutions, 19 BatchNorms over 688 channels in all, a 64 -> 10 head
    assert count_by_type(model) == {
        "conv": 267696, "linear": 640, "bias": 10, "norm": 2 * 688, "embedding": 0
    }


def test_causal_transformer_split():
    model = create_model("causal-transformer", TaskSpec("tokens", (64,), 100, "language_model"))
    types = layer_types(model)
    assert types["tok_embedding.weight"] == "embedding"
    assert types["pos_embedding.weight"] == "embedding"
    assert types["blocks.0.attn.qkv.weight"] == "linear"
    assert types["blocks.0.ln1.weight"] == "norm"
    assert count_by_type(model)["embedding"] == (100 + 64) * 64


def test_depthwise_convolutions_are_conv():
    model = create_model("mobilenetv2", TaskSpec("image", (3, 16, 16), 10, "classification"))
    depthwise = [
        name
        for name, module in model.named_modules()
        if isinstance(module, nn.Conv2d) and module.groups > 1
    ]
    assert depthwise
    types = layer_types(model)
    assert all(types[f"{name}.weight"] == "conv" for name in depthwise)


class _Custom(nn.Module):
    """Torch building blocks beside parameters no rule knows."""

    def __init__(self):
        super().__init__()
        self.attn = nn.MultiheadAttention(8, 2, add_bias_kv=True)
        self.lstm = nn.LSTM(8, 4, proj_size=2)
        self.cell = nn.GRUCell(8, 4)
        self.norm = nn.GroupNorm(2, 8)
        self.pos_embed = nn.Parameter(torch.zeros(5, 8))
        self.scale = nn.Parameter(torch.ones(()))  # rank 0
        self.mixer = nn.Parameter(torch.zeros(8, 8))  # rank 2
        self.kernel = nn.Parameter(torch.zeros(2, 2, 3))  # rank 3
        self.act = nn.PReLU(8)  # rank-1 weight of an unknown owner
        self.register_buffer("running", torch.zeros(3))


def test_torch_building_blocks_and_fallbacks():
    model = _Custom()
    with pytest.warns(LayerTypeWarning, match="typed by rank: scale, mixer, kernel, act.weight"):
        types = layer_types(model)
    assert types == {
        "pos_embed": "embedding",
        "scale": "bias",
        "mixer": "linear",
        "kernel": "conv",
        "attn.in_proj_weight": "linear",
        "attn.in_proj_bias": "bias",
        "attn.bias_k": "bias",
        "attn.bias_v": "bias",
        "attn.out_proj.weight": "linear",
        "attn.out_proj.bias": "bias",
        "lstm.weight_ih_l0": "linear",
        "lstm.weight_hh_l0": "linear",
        "lstm.bias_ih_l0": "bias",
        "lstm.bias_hh_l0": "bias",
        "lstm.weight_hr_l0": "linear",
        "cell.weight_ih": "linear",
        "cell.weight_hh": "linear",
        "cell.bias_ih": "bias",
        "cell.bias_hh": "bias",
        "norm.weight": "norm",
        "norm.bias": "norm",
        "act.weight": "bias",
    }
    assert "running" not in types
    report = assign_layer_types(model)
    assert report.fallbacks == ("scale", "mixer", "kernel", "act.weight")


def test_shared_parameter_listed_once_and_user_norm_recognised():
    class RMSNorm(nn.Module):
        def __init__(self, dim: int):
            super().__init__()
            self.weight = nn.Parameter(torch.ones(dim))

    model = nn.Sequential(nn.Embedding(10, 4), RMSNorm(4), nn.Linear(4, 10, bias=False))
    model[2].weight = model[0].weight  # tied head, as in GPT-2
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert layer_types(model) == {"0.weight": "embedding", "1.weight": "norm"}
