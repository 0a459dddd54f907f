"""Tests of train_predictor.predictors: exact values of each predictor on hand-computed windows,
and the shared interface checked over the whole registry."""

from __future__ import annotations

import json
import math

import pytest
import torch

from weightcast.train_predictor.predictors import (
    LFD2,
    LFS,
    PREDICTORS,
    WNN,
    ExpFit,
    Introspection,
    LinearFit,
    NoJump,
    Poly2Fit,
    build_predictor,
)
from weightcast.train_predictor.predictors.curve_fit import PolynomialFit, polynomial_fit_map
from weightcast.train_predictor.predictors.introspection import introspection_steps
from weightcast.train_predictor.predictors.lfd import trajectory_regularizer
from weightcast.train_predictor.predictors.wnn import denormalize, normalize
from weightcast.zoo.config import ConfigError
from weightcast.zoo.registry import UnknownNameError

ALL_KINDS = PREDICTORS.names()
EXPECTED_KINDS = {
    "wnn", "lfd2", "lfd2-norm", "lfn", "lfl", "lfs", "no-jump", "linear-fit", "poly2-fit",
    "exp-fit", "plp", "introspection", "nino-mlp", "nino",
}  # fmt: skip


def _window(n: int, length: int, seed: int = 0, dtype=torch.float32) -> torch.Tensor:
    """Random-walk windows (n, length): what weight histories look like."""
    g = torch.Generator().manual_seed(seed)
    start = torch.randn(n, 1, generator=g, dtype=torch.float64)
    steps = 0.05 * torch.randn(n, length, generator=g, dtype=torch.float64)
    return (start + steps.cumsum(dim=1)).to(dtype)


def _randomize(predictor: torch.nn.Module, seed: int = 0) -> None:
    """Small random parameters, so that rebuild tests do not pass by a shared default init."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in predictor.parameters():
            p.copy_(0.1 * torch.randn(p.shape, generator=g))


# ---------------------------------------------------------------- WNN


def test_wnn_parameter_count_is_9425():
    dense = lambda i, o: i * o + o  # noqa: E731
    act = dense(64, 8) + 3 * dense(8, 64)  # 520 + 3 * 576
    stream = lambda i: dense(i, 64) + act + dense(64, 32)  # noqa: E731
    expected = stream(5) + stream(4) + dense(64, 1)  # 4712 + 4648 + 65
    assert (dense(5, 64), dense(4, 64), act, dense(64, 32)) == (384, 320, 2248, 2080)
    assert expected == 9425
    assert sum(p.numel() for p in WNN().parameters()) == 9425


def test_wnn_normalize_hand_window():
    window = torch.tensor([[1.0, 2.0, 4.0, 3.0, 5.0]])
    normalized, anchor, scale = normalize(window, eps=0.0)  # first 1, range 4 -> scale 8
    assert normalized.tolist() == [[0.0, 0.125, 0.375, 0.25, 0.5]]
    assert anchor.tolist() == [[1.0]] and scale.tolist() == [[8.0]]
    assert denormalize(normalized, anchor, scale).tolist() == window.tolist()
    window = window.double()
    normalized, _, scale = normalize(window, eps=1e-5)
    assert scale.item() == 2 * (4 + 1e-5)
    assert torch.allclose(normalized, (window - 1) / (2 * (4 + 1e-5)), rtol=0, atol=1e-15)
    # Anchored at the FIRST value, not the last; a decreasing window gives negative values.
    normalized, anchor, scale = normalize(torch.tensor([[4.0, 0.0, 2.0]]), eps=0.0)
    assert normalized.tolist() == [[0.0, -0.5, -0.25]] and anchor.item() == 4.0


def test_wnn_with_zero_head_reproduces_last_input():
    wnn = WNN(eps=0.0001)
    with torch.no_grad():
        wnn.head.weight.zero_()
        wnn.head.bias.zero_()
    window = _window(100, 5, dtype=torch.float64)
    assert torch.allclose(wnn.predict(window), window[:, -1], rtol=0, atol=1e-6)
    # Dyadic window: every intermediate is exact in float32.
    hand = torch.tensor([[1.0, 2.0, 4.0, 3.0, 5.0]])
    normalized, anchor, scale = normalize(hand, eps=0.0)
    assert (denormalize(normalized[:, -1:] + wnn.delta(normalized), anchor, scale)).item() == 5.0


def test_wnn_prediction_formula_and_bound():
    wnn = WNN()
    window = _window(50, 5)
    normalized, anchor, scale = normalize(window, wnn.eps)
    expected = window[:, 0] + scale[:, 0] * (normalized[:, -1] + wnn.delta(normalized)[:, 0])
    prediction = wnn.predict(window)  # no_grad: the in-place inference path
    assert torch.allclose(prediction, expected, atol=1e-6)
    assert torch.allclose(prediction, wnn(window)[:, 0], atol=1e-6)  # the autograd path
    # |jump from the last value| = scale * |tanh| < 2 * (range + eps)
    assert ((prediction - window[:, -1]).abs() < scale[:, 0]).all()


def test_wnn_init_bounds():
    torch.manual_seed(0)
    wnn = WNN()
    for layer in wnn.stream_layers():  # VarianceScaling(0.1, fan_in, uniform)
        limit = math.sqrt(3 * 0.1 / layer.in_features)
        assert layer.weight.abs().max() <= limit and layer.weight.abs().max() > 0.8 * limit
    keras_default = [wnn.head] + [
        getattr(s.act, name) for s in (wnn.values, wnn.diffs) for name in ("squeeze", "a", "b", "c")
    ]
    for layer in keras_default:  # glorot_uniform
        limit = math.sqrt(6 / (layer.in_features + layer.out_features))
        assert layer.weight.abs().max() <= limit
    for name, param in wnn.named_parameters():
        if name.endswith("bias"):
            assert not param.any(), name


def test_wnn_loss_is_normalized_l1_plus_penalties():
    wnn = WNN(eps=1e-5)
    with torch.no_grad():
        wnn.head.weight.zero_()
        wnn.head.bias.zero_()
    layers = [wnn.values.inp, wnn.diffs.inp, wnn.values.out, wnn.diffs.out]  # not the act network
    assert set(layers) == set(wnn.stream_layers())
    kernels = sum(layer.weight.abs().sum().item() for layer in layers)
    assert math.isclose(wnn.regularization().item(), 1e-6 * kernels, rel_tol=1e-5)
    window = torch.tensor([[1.0, 2.0, 4.0, 3.0, 5.0]])
    target = torch.tensor([9.0])
    # delta = 0, residual = (9 - 1) / scale - L[4] = (9 - 5) / (2 * (4 + 1e-5))
    expected_l1 = 4 / (2 * (4 + 1e-5))
    assert math.isclose(wnn.loss(window, target).item(), expected_l1 + 1e-6 * kernels, rel_tol=1e-5)
    with torch.no_grad():
        wnn.values.inp.bias.fill_(0.5)  # + 0.1 * 64 * 0.5
    assert math.isclose(
        wnn.loss(window, target).item(), expected_l1 + 1e-6 * kernels + 3.2, rel_tol=1e-5
    )
    wnn.loss(_window(8, 5), torch.randn(8)).backward()
    assert all(p.grad is not None for p in wnn.parameters())


# ---------------------------------------------------------------- LFD-2 family


def test_lfd2_last_value_weights_return_last_value():
    m = 7
    lfd = LFD2(input_length=4, horizon=m)
    with torch.no_grad():
        lfd.linear.weight.copy_(torch.tensor([[0.0, 1.0]] * m))
        lfd.linear.bias.zero_()
    window = _window(10, 4)
    assert torch.equal(lfd.predict_path(window), window[:, -1:].expand(10, m))
    assert torch.equal(lfd.predict(window), window[:, -1])
    assert torch.equal(lfd.predict(window, horizon=3), window[:, -1])
    with pytest.raises(ValueError, match="horizon"):
        lfd.predict(window, horizon=m + 1)
    # Normalized: anchored at the last value, so zero weights and bias also give it.
    norm = build_predictor("lfd2-norm", input_length=4, horizon=m)
    with torch.no_grad():
        norm.linear.weight.zero_()
        norm.linear.bias.zero_()
    assert torch.equal(norm.predict_path(window), window[:, -1:].expand(10, m))


def test_trajectory_regularizer_exact_values():
    last = torch.tensor([[0.0]])
    decelerating = torch.tensor([[1.0, 1.5, 1.75, 1.875]])  # steps 1, .5, .25, .125
    assert trajectory_regularizer(last, decelerating, start=1).item() == 0.0
    accelerating = torch.tensor([[1.0, 1.5, 3.5]])  # steps 1, .5, 2
    assert trajectory_regularizer(last, accelerating, start=1).item() == 0.75  # (0 + 1.5) / 2
    assert trajectory_regularizer(last, accelerating, start=2).item() == 1.5
    assert trajectory_regularizer(last, accelerating, start=3).item() == 0.0  # no pair left
    # The first step is taken from the last input: 0 -> 1 -> 5 has steps 1, 4.
    assert trajectory_regularizer(last, torch.tensor([[1.0, 5.0]]), start=1).item() == 3.0


def test_lfd2_loss_exact():
    lfd = LFD2(input_length=3, horizon=3, reg_weight=0.5, reg_start=1)
    with torch.no_grad():
        lfd.linear.weight.zero_()
        lfd.linear.bias.copy_(torch.tensor([1.0, 1.5, 3.5]))  # the accelerating path above
    window = torch.tensor([[2.0, 1.0, 0.0]])
    target = torch.tensor([[1.0, 2.0, 3.0]])  # L1: (0 + .5 + .5) / 3
    assert math.isclose(lfd.loss(window, target).item(), 1 / 3 + 0.5 * 0.75, rel_tol=1e-6)
    assert lfd.config["reg_start"] == 1 and LFD2(horizon=180).config["reg_start"] == 90


def test_lfd2_normalized_is_affine_equivariant():
    lfd = build_predictor("lfd2-norm", input_length=6, horizon=5, eps=1e-12)
    _randomize(lfd)
    window = _window(20, 6, dtype=torch.float64)
    a, b = 3.7, -2.0
    assert torch.allclose(lfd.predict_path(a * window + b), a * lfd.predict_path(window) + b, atol=1e-5)
    raw = LFD2(input_length=6, horizon=5)
    _randomize(raw)
    assert not torch.allclose(raw.predict_path(window + 1.0), raw.predict_path(window) + 1.0)


def test_lfd_family_columns():
    assert build_predictor("lfd2", input_length=21).columns == (0, 20)
    assert build_predictor("lfn", input_length=21).columns == tuple(range(21))
    assert build_predictor("lfl", input_length=21).columns == (20,)
    assert LFS(input_length=21, num_samples=5).columns == (0, 5, 10, 15, 20)
    random_cols = LFS(input_length=21, num_samples=6, sampling="random", seed=3).columns
    assert len(set(random_cols)) == 6 and list(random_cols) == sorted(random_cols)
    assert LFS(input_length=21, num_samples=6, sampling="random", seed=3).columns == random_cols


def test_lfd2_trains_on_linear_trajectories():
    torch.manual_seed(0)
    length, m = 21, 20
    tau = torch.arange(length + m, dtype=torch.float32)
    paths = torch.randn(512, 1) + 0.02 * torch.randn(512, 1) * tau  # w = a + b * tau
    window, target = paths[:, :length], paths[:, length:]
    lfd = LFD2(input_length=length, horizon=m)
    opt = torch.optim.Adam(lfd.parameters(), lr=0.02)
    first = lfd.loss(window, target).item()
    for _ in range(300):
        opt.zero_grad()
        loss = lfd.loss(window, target)
        loss.backward()
        opt.step()
    assert loss.item() < 0.05 * first


# ---------------------------------------------------------------- curve fits, PLP, Introspection


def test_linear_fit_extrapolates_a_line_exactly():
    window = torch.tensor([[3.0, 5.0, 7.0, 9.0, 11.0]], dtype=torch.float64)
    fit = LinearFit()
    assert fit.predict(window).item() == pytest.approx(21.0, abs=1e-12)
    assert fit.predict(window, horizon=2).item() == pytest.approx(15.0, abs=1e-12)
    assert polynomial_fit_map(5, 5, 1, 0.0).sum().item() == pytest.approx(1.0, abs=1e-12)


def test_linear_fit_ridge_matches_eq15_by_hand():
    # A A^T = [[30, 10], [10, 5]], A w = [30, 10] for w = tau; rho = 1:
    # c = [[31, 10], [10, 6]]^-1 [30, 10] = [80, 10] / 86, prediction at tau 9 = 730 / 86.
    window = torch.arange(5, dtype=torch.float64)[None]
    assert LinearFit(rho=1.0).predict(window).item() == pytest.approx(730 / 86, abs=1e-12)
    # General windows: the closed-form map equals an explicit ridge solve of eq. 15.
    windows = _window(6, 5, dtype=torch.float64)
    design = torch.stack([torch.arange(5.0), torch.ones(5)]).double()  # A: (2, 5)
    coef = torch.linalg.solve(design @ design.T + 0.3 * torch.eye(2).double(), design @ windows.T)
    expected = torch.tensor([9.0, 1.0]).double() @ coef
    assert torch.allclose(LinearFit(rho=0.3).predict(windows), expected, rtol=0, atol=1e-12)
    # The ridge shrinks every coefficient, the intercept included, toward 0: so does the
    # prediction as rho grows (not monotonically: intercept and slope shrink at different rates).
    assert LinearFit(rho=0.0).predict(window + 5).item() == pytest.approx(14.0, abs=1e-12)
    assert abs(LinearFit(rho=1e8).predict(window + 5).item()) < 1e-5


def test_poly2_fit_exact_on_quadratic():
    tau = torch.arange(5, dtype=torch.float64)
    window = (2 * tau**2 - 3 * tau + 1)[None]
    assert Poly2Fit().predict(window).item() == pytest.approx(2 * 81 - 27 + 1, abs=1e-9)
    assert Poly2Fit(horizon=1).predict(window).item() == pytest.approx(2 * 25 - 15 + 1, abs=1e-9)


def test_exp_fit_on_decay_line_and_constant():
    tau = torch.arange(5, dtype=torch.float64)
    decay = 2 + 3 * 0.7**tau
    line = 1 + 0.5 * tau
    constant = torch.full((5,), 4.0, dtype=torch.float64)
    growth = 1.3**tau  # clamped to r = 1: a line, never exponential growth
    out = ExpFit().predict(torch.stack([decay, line, constant, growth]))
    assert out[0].item() == pytest.approx(2 + 3 * 0.7**9, abs=1e-10)
    assert out[1].item() == pytest.approx(1 + 0.5 * 9, abs=1e-10)
    assert out[2].item() == 4.0
    assert out[3].item() == pytest.approx(LinearFit().predict(growth[None]).item(), abs=1e-9)
    decay32 = (2 + 3 * 0.8 ** torch.arange(5.0))[None]
    assert ExpFit(horizon=20).predict(decay32).item() == pytest.approx(2 + 3 * 0.8**24, abs=1e-5)


def test_no_jump_returns_last_value():
    window = _window(6, 3)
    assert torch.equal(NoJump(input_length=3).predict(window), window[:, -1])
    assert torch.equal(NoJump(input_length=3).predict(window, horizon=50), window[:, -1])


def test_plp_hand_example():
    window = torch.tensor([[1.0, 2.0, 4.0], [0.0, -1.0, -4.0]])
    plp = build_predictor("plp")
    # midpoints 1.5 and 3: slope 1.5 -> 4 + 1.5; midpoints -.5 and -2.5: slope -2 -> -4 - 2
    assert plp.predict(window).tolist() == [5.5, -6.0]
    assert plp.predict(window, horizon=2).tolist() == [7.0, -8.0]


def test_introspection_steps_shapes_and_scaling():
    assert introspection_steps(20) == (0, 8, 14, 20)
    assert introspection_steps(5) == (0, 2, 4, 5)  # 3.5 rounds half up
    net = Introspection(t=5)
    assert (net.input_length, net.horizon) == (6, 5)
    with torch.no_grad():  # hidden unit 0 copies the value at step t; the output reads it
        net.hidden.weight.zero_()
        net.hidden.bias.zero_()
        net.hidden.weight[0, 3] = 1.0
        net.out.weight.zero_()
        net.out.bias.zero_()
        net.out.weight[0, 0] = 1.0
    window = torch.rand(9, 6) + 0.5
    assert torch.allclose(net.predict(window), window[:, -1])
    target = window[:, -1] + 0.002
    assert net.loss(window, target).item() == pytest.approx(2.0, rel=1e-3)  # 1000 * 0.002
    net.out.bias.data.fill_(1.0)  # 1 in scaled units = 0.001 in weight units
    assert torch.allclose(net.predict(window), window[:, -1] + 0.001)


# ---------------------------------------------------------------- every registered predictor


def test_registry_holds_the_expected_names():
    assert set(ALL_KINDS) == EXPECTED_KINDS


@pytest.mark.parametrize("kind", ALL_KINDS)
def test_predict_shapes_and_finiteness(kind):
    predictor = build_predictor(kind)
    window = _window(33, predictor.input_length)
    out = predictor.predict(window)
    path = predictor.predict_path(window)
    assert out.shape == (33,) and path.shape == (33, len(predictor.horizons))
    assert torch.isfinite(out).all() and torch.isfinite(path).all()
    assert not out.requires_grad and out.dtype == window.dtype
    assert torch.allclose(out, path[:, predictor.horizons.index(predictor.horizon)], rtol=1e-6, atol=1e-6)
    assert predictor.horizon == predictor.horizons[-1] and predictor.supports_horizon(predictor.horizon)
    assert predictor.predict(window[:0]).shape == (0,)


@pytest.mark.parametrize("kind", ALL_KINDS)
def test_rebuild_from_config(kind):
    predictor = build_predictor(kind)
    _randomize(predictor)
    config = json.loads(json.dumps(predictor.config))  # what the Hub mixin will store
    rebuilt = build_predictor(kind, **config)
    rebuilt.load_state_dict(predictor.state_dict())
    assert rebuilt.config == predictor.config and rebuilt.kind == kind
    window = _window(17, predictor.input_length)
    assert torch.equal(rebuilt.predict_path(window), predictor.predict_path(window))


def _chunking_tolerance(predictor, window):
    """How far two evaluations of the same prediction may differ when only the chunking (and so the
    BLAS kernel and its summation order) changes. The curve fits are one dot product with a fixed
    map c of length L, whose float32 error is at most gamma_L * (|w| @ |c|), gamma_L = L u / (1 - L u)
    with u = 2^-24 (Higham, Accuracy and Stability, 3.1); two such results differ by at most twice
    that. The map's coefficients of an extrapolated quadratic reach ~10, so a fixed rtol does not
    hold on every CPU. Every other kind computes element-wise or in fixed-size blocks and keeps the
    relative tolerance of a few roundings."""
    relative = 1e-6 * window.abs().amax(dim=1) + 1e-7
    if isinstance(predictor, PolynomialFit):
        coefficients = polynomial_fit_map(predictor.input_length, predictor.horizon, predictor.degree, predictor.rho)
        length, u = window.shape[1], torch.finfo(torch.float32).eps / 2
        gamma = length * u / (1 - length * u)
        return torch.maximum(relative, 2 * gamma * (window.double().abs() @ coefficients.abs()).float())
    return relative


@pytest.mark.parametrize("kind", ALL_KINDS)
def test_chunked_equals_unchunked(kind):
    predictor = build_predictor(kind)
    window = _window(50, predictor.input_length, seed=1)
    whole = predictor.predict(window)
    chunked = predictor.predict(window, chunk_size=7)
    assert ((chunked - whole).abs() <= _chunking_tolerance(predictor, window)).all()
    path = predictor.predict_path(window)
    assert torch.allclose(predictor.predict_path(window, chunk_size=1), path, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("kind", ALL_KINDS)
def test_dtype_and_loss_contract(kind):
    predictor = build_predictor(kind)
    window = _window(9, predictor.input_length, dtype=torch.float64)
    assert predictor.predict(window).dtype == torch.float64
    assert predictor.predict(window.half()).dtype == torch.float16
    target = torch.randn(9, len(predictor.horizons))
    if predictor.trainable:
        loss = predictor.loss(window.float(), target)
        assert loss.dim() == 0 and torch.isfinite(loss)
        with pytest.raises(ValueError, match="targets of shape"):
            predictor.loss(window.float(), target[:5])
    else:
        assert not list(predictor.parameters())
        with pytest.raises(TypeError, match="no loss"):
            predictor.loss(window, target)


@pytest.mark.parametrize("kind", ALL_KINDS)
def test_bad_window_raises(kind):
    predictor = build_predictor(kind)
    with pytest.raises(ValueError, match="windows of shape"):
        predictor.predict(torch.zeros(4, predictor.input_length + 1))
    with pytest.raises(ValueError, match="floating point"):
        predictor.predict(torch.zeros(4, predictor.input_length, dtype=torch.int64))


def test_build_errors():
    with pytest.raises(UnknownNameError, match="valid: exp-fit"):
        build_predictor("nope")
    with pytest.raises(ConfigError, match="valid keys"):
        build_predictor("wnn", skip=5)
    with pytest.raises(ConfigError, match="lfd2"):
        build_predictor("lfd2-norm", normalize=False)
    with pytest.raises(ConfigError, match="rho"):
        build_predictor("poly2-fit", input_length=2)
    with pytest.raises(ValueError, match="horizon=3"):
        WNN().predict(torch.zeros(2, 5), horizon=3)


@pytest.mark.parametrize("kind", ["lfd2", "lfd2-norm"])
def test_lfd2_no_jump_init_starts_at_the_last_value(kind):
    predictor = build_predictor(kind, input_length=4, horizon=3, init="no-jump")
    window = torch.tensor([[1.0, 2.0, 4.0, 3.0], [0.5, 0.25, 0.0, -1.0]])
    assert torch.equal(predictor.predict_path(window), window[:, -1:].expand(2, 3))
    assert build_predictor(kind, **predictor.config).config["init"] == "no-jump"
    with pytest.raises(ConfigError, match="init must be one of"):
        build_predictor(kind, init="zeros")
