"""Every registered architecture builds, runs forward and backward on each compatible task shape,
and `create_model` rejects bad requests with errors that say what would be valid."""

from __future__ import annotations

import pytest
import torch

from weightcast.zoo.config import ConfigError
from weightcast.zoo.models import ARCHITECTURES, count_parameters, create_model, is_compatible
from weightcast.zoo.registry import UnknownNameError
from weightcast.zoo.tasks.base import TaskSpec, task_loss

SPECS = {
    "image-1x8x8": TaskSpec("image", (1, 8, 8), 10, "classification"),
    "image-1x16x16": TaskSpec("image", (1, 16, 16), 10, "classification"),
    "image-3x32x32-regression": TaskSpec("image", (3, 32, 32), 2, "regression"),
    "signal-1x40": TaskSpec("signal", (1, 40), 10, "classification"),
    "signal-3x24-regression": TaskSpec("signal", (3, 24), 2, "regression"),
    "tabular-13": TaskSpec("tabular", (13,), 3, "classification"),
    "tabular-1-regression": TaskSpec("tabular", (1,), 1, "regression"),
    "tokens-64": TaskSpec("tokens", (64,), 50, "language_model"),
}
PAIRS = [
    (arch, spec_name)
    for arch in ARCHITECTURES.names()
    for spec_name, spec in SPECS.items()
    if is_compatible(arch, spec)
]
IMAGE_ARCHS = [arch for arch in ARCHITECTURES.names() if "image" in ARCHITECTURES.metadata(arch)["inputs"]]
DEFAULT_TASKS = ("mnist1d", "shapes", "wine", "stdlib-chars")


def _batch(spec: TaskSpec, n: int = 4) -> tuple[torch.Tensor, torch.Tensor]:
    if spec.input_kind == "tokens":
        x = torch.randint(0, spec.num_outputs, (n, *spec.input_shape))
    else:
        x = torch.randn(n, *spec.input_shape)
    if spec.objective == "classification":
        y = torch.randint(0, spec.num_outputs, (n,))
    elif spec.objective == "regression":
        y = torch.randn(n, spec.num_outputs)
    else:
        y = torch.randint(0, spec.num_outputs, (n, *spec.input_shape))
    return x, y


def _expected_shape(spec: TaskSpec, n: int = 4) -> tuple[int, ...]:
    if spec.objective == "language_model":
        return (n, spec.input_shape[0], spec.num_outputs)
    return (n, spec.num_outputs)


def test_every_architecture_has_a_compatible_spec_and_metadata():
    covered = {arch for arch, _ in PAIRS}
    assert covered == set(ARCHITECTURES.names())
    for arch in ARCHITECTURES.names():
        meta = ARCHITECTURES.metadata(arch)
        assert meta["default_task"] in DEFAULT_TASKS, arch
        assert set(meta["inputs"]) <= {"image", "signal", "tabular", "tokens"}, arch


@pytest.mark.parametrize("arch,spec_name", PAIRS)
def test_forward_backward(arch: str, spec_name: str):
    torch.manual_seed(0)
    spec = SPECS[spec_name]
    model = create_model(arch, spec)
    x, y = _batch(spec)
    out = model(x)
    assert out.shape == _expected_shape(spec)
    loss = task_loss(spec.objective, out, y)
    assert torch.isfinite(loss)
    loss.backward()
    missing = [name for name, p in model.named_parameters() if p.grad is None]
    assert not missing, f"{arch} parameters without a gradient: {missing}"
    assert all(torch.isfinite(p.grad).all() for p in model.parameters())


@pytest.mark.parametrize("arch", IMAGE_ARCHS)
@pytest.mark.parametrize("shape", [(1, 8, 8), (3, 8, 8), (1, 16, 16), (3, 16, 16), (1, 28, 28), (3, 32, 32)])
def test_image_models_take_small_and_cifar_sized_inputs(arch: str, shape: tuple[int, int, int]):
    spec = TaskSpec("image", shape, 7, "classification")
    model = create_model(arch, spec).eval()
    with torch.no_grad():
        out = model(torch.randn(2, *shape))
    assert out.shape == (2, 7)
    assert torch.isfinite(out).all()


@pytest.mark.parametrize(
    "arch,spec,kwargs,expected",
    [
        # LFD-2's Syn-2 network: 1 -> 10 -> 1
        ("mlp", TaskSpec("tabular", (1,), 1, "regression"), {"depth": 1, "width": 10}, 31),
        ("mlp", TaskSpec("tabular", (13,), 3, "classification"), {"depth": 0}, 13 * 3 + 3),
        # classic LeNet-5 on 32x32 (C3 fully connected): 61,706
        ("lenet5", TaskSpec("image", (1, 32, 32), 10, "classification"), {}, 61706),
        ("lenet5", TaskSpec("image", (1, 28, 28), 10, "classification"), {}, 61706),
        # NiNo's FM/16 and FM/32 networks on FashionMNIST
        ("nino-cnn", TaskSpec("image", (1, 28, 28), 10, "classification"), {}, 14378),
        ("nino-cnn-wide", TaskSpec("image", (1, 28, 28), 10, "classification"), {}, 56394),
        # He et al.'s CIFAR ResNets with option-A shortcuts
        ("resnet20", TaskSpec("image", (3, 32, 32), 10, "classification"), {}, 269722),
        ("resnet32", TaskSpec("image", (3, 32, 32), 10, "classification"), {}, 464154),
        # CIFAR VGG-11 at full width, BatchNorm, no conv biases
        ("vgg11", TaskSpec("image", (3, 32, 32), 10, "classification"), {"width": 1.0}, 9228362),
    ],
)
def test_parameter_counts_of_reference_networks(arch, spec, kwargs, expected):
    assert count_parameters(create_model(arch, spec, **kwargs)) == expected


def test_wnn_cnn_layers_match_the_paper():
    model = create_model("wnn-cnn", TaskSpec("image", (3, 32, 32), 10, "classification"))
    convs = [m for m in model.modules() if isinstance(m, torch.nn.Conv2d)]
    linears = [m for m in model.modules() if isinstance(m, torch.nn.Linear)]
    assert [c.out_channels for c in convs] == [8, 16, 32, 32]
    assert all(c.kernel_size == (3, 3) for c in convs)
    # four pools: 32 -> 2, flattened 32 * 2 * 2 = 128 -> 64 -> 10
    assert [(m.in_features, m.out_features) for m in linears] == [(128, 64), (64, 10)]


def test_width_and_shortcut_kwargs():
    spec = TaskSpec("image", (3, 16, 16), 10, "classification")
    narrow = create_model("resnet20", spec, width=0.5)
    assert narrow.head.in_features == 32
    option_b = create_model("resnet20", spec, shortcut="B")
    assert count_parameters(option_b) > count_parameters(create_model("resnet20", spec))
    no_bn = create_model("vgg11", spec, batch_norm=False)
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in no_bn.modules())
    wide = create_model("mobilenetv2", spec, width=1.0)
    assert count_parameters(wide) > count_parameters(create_model("mobilenetv2", spec))
    assert create_model("gru", SPECS["signal-1x40"], hidden=8, layers=2).rnn.num_layers == 2


def test_causal_transformer_is_causal():
    torch.manual_seed(0)
    spec = SPECS["tokens-64"]
    model = create_model("causal-transformer", spec).eval()
    tokens = torch.randint(0, 50, (1, 64))
    changed = tokens.clone()
    changed[0, 40:] = (changed[0, 40:] + 1) % 50
    with torch.no_grad():
        a, b = model(tokens), model(changed)
    assert torch.allclose(a[0, :40], b[0, :40], atol=1e-5)
    assert not torch.allclose(a[0, 40:], b[0, 40:])


def test_incompatible_pair_raises_config_error():
    with pytest.raises(ConfigError, match="takes inputs"):
        create_model("resnet20", SPECS["signal-1x40"])
    with pytest.raises(ConfigError, match="language_model"):
        create_model("mlp", TaskSpec("tabular", (13,), 3, "language_model"))
    with pytest.raises(ConfigError, match="objectives"):
        create_model("causal-transformer", TaskSpec("tokens", (64,), 50, "classification"))


def test_bad_kwargs_raise_config_error():
    with pytest.raises(ConfigError, match="depth must be a number >= 0"):
        create_model("mlp", SPECS["tabular-13"], depth=-1)
    with pytest.raises(ConfigError, match="multiple of heads"):
        create_model("transformer", SPECS["signal-1x40"], d_model=30)
    with pytest.raises(ConfigError, match="shortcut must be one of"):
        create_model("resnet20", SPECS["image-1x8x8"], shortcut="C")
    with pytest.raises(ConfigError, match="bad arch_kwargs"):
        create_model("lenet5", SPECS["image-1x8x8"], width=2)


def test_unknown_name_lists_valid_names():
    with pytest.raises(UnknownNameError) as info:
        create_model("resnet1000", SPECS["image-1x8x8"])
    for name in ("resnet20", "mlp", "causal-transformer"):
        assert name in str(info.value)
