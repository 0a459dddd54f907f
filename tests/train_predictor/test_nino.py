"""Tests of the NiNo predictors (train_predictor.predictors.nino): the horizon schedule, the type-id map,
nino-mlp against a float64 reference of NiNo's formula, the per-tensor calling contract and the loss."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from weightcast.train_predictor.predictors import NiNoMLP, build_predictor
from weightcast.train_predictor.predictors.nino import (
    NINO_TYPE_IDS,
    nino_horizon_schedule,
    nino_type_id,
    tensor_stats,
)

U = torch.finfo(torch.float32).eps / 2  # unit roundoff of float32


def _tensor_window(numel: int, length: int = 5, seed: int = 0) -> torch.Tensor:
    """One parameter tensor's states (numel, length): N(0, 0.1) values drifting by ~1e-3 per state."""
    g = torch.Generator().manual_seed(seed)
    start = 0.1 * torch.randn(numel, 1, generator=g, dtype=torch.float64)
    drift = 1e-3 * torch.randn(numel, length, generator=g, dtype=torch.float64).cumsum(1)
    return (start + drift).float()


def _randomized(predictor: NiNoMLP, seed: int = 0) -> NiNoMLP:
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in predictor.parameters():
            p.copy_(0.3 * torch.randn(p.shape, generator=g))
    return predictor


def reference_nino_mlp(predictor: NiNoMLP, window: torch.Tensor, type_id: int, k: int) -> np.ndarray:
    """NiNo's graph-free step in float64 NumPy, written from its code: scale_params('std') over the
    tensor (mean, Bessel std, eps 1e-6), edge_proj + layer_embed, MLP with SiLU, row k-1 of the
    head added to the last scaled state, unscale with std."""
    w = window.double().numpy()
    s = {k_: v.detach().double().numpy() for k_, v in predictor.state_dict().items()}
    mean, std = w.mean(), w.std(ddof=1)
    z = (w - mean) / (std + predictor.eps)
    h = z @ s["proj.weight"].T + s["proj.bias"] + s["type_embed.weight"][type_id]
    for i in range(predictor.config["depth"]):
        h = h @ s[f"mlp.{2 * i}.weight"].T + s[f"mlp.{2 * i}.bias"]
        h = h / (1 + np.exp(-h))
    delta = h @ s["head.weight"][k - 1] + s["head.bias"][k - 1]
    return (z[:, -1] + delta) * std + mean


def test_horizon_schedule_matches_nino():
    assert nino_horizon_schedule(10_000, 1000) == [40, 33, 26, 21, 16, 11, 8, 5, 3, 1]
    assert nino_horizon_schedule(500, 1000) == [40]  # fewer steps than a period: one jump
    assert nino_horizon_schedule(3000, 1000, k_max=9) == [9, 4, 1]
    with pytest.raises(ValueError):
        nino_horizon_schedule(0, 1000)


def test_type_ids():
    assert NINO_TYPE_IDS == {"linear": 1, "bias": 2, "conv": 3, "norm": 4, "embedding": 5}
    assert nino_type_id("norm", "bn1.weight") == 4 and nino_type_id("norm", "bn1.bias") == 2
    assert nino_type_id(7) == 7
    with pytest.raises(ValueError, match="unknown layer type"):
        nino_type_id("attention")
    with pytest.raises(ValueError):
        nino_type_id(15)


def test_parameter_count_is_nino_mlp_pt():
    # Linear(5, 128) + Embedding(15, 128) + 3 x Linear(128, 128) + Linear(128, 40): nino_mlp.pt's 57,384
    expected = 6 * 128 + 15 * 128 + 3 * 129 * 128 + 129 * 40
    assert expected == 57_384 == sum(p.numel() for p in NiNoMLP().parameters())


@pytest.mark.parametrize("layer_type, k", [("linear", 40), ("conv", 1), (2, 7)])
def test_predict_matches_reference(layer_type, k):
    predictor = _randomized(NiNoMLP(hidden=16, depth=2), seed=1)
    window = _tensor_window(300)
    type_id = nino_type_id(layer_type)
    expected = reference_nino_mlp(predictor, window, type_id, k)
    got = predictor.predict(window, k, layer_type=layer_type).double().numpy()
    # Float32 against float64: the output's own rounding (u |w|, a few additions: 4u |w|) plus the
    # network's error in standardized units times std: dot products of length <= 16 are within
    # gamma_16 ~ 16u of their magnitude (Higham 3.1); |z| <= ~4 and activations of O(1) at these
    # weights give < 1e-4 * std over the layers.
    std = window.double().std().item()
    tolerance = 4 * U * np.abs(expected) + 1e-4 * std
    assert (np.abs(got - expected) <= tolerance).all()
    path = predictor.predict_path(window, layer_type=layer_type)[:, k - 1].double().numpy()
    assert (np.abs(path - expected) <= tolerance).all()


def test_statistics_are_per_tensor_not_per_chunk():
    predictor = _randomized(NiNoMLP(hidden=8, depth=1, horizon=4))
    window = _tensor_window(100)
    whole = predictor.predict(window)
    chunked = predictor.predict(window, chunk_size=7)
    # Same statistics, same per-row arithmetic: equal up to BLAS blocking of the (rows, 8) matmuls.
    assert torch.allclose(chunked, whole, rtol=0, atol=8 * U * window.abs().max().item())
    # Standardizing each chunk on its own would give something else: the contract matters.
    per_chunk = torch.cat([predictor.predict(window[i : i + 7]) for i in range(0, 100, 7)])
    assert not torch.allclose(per_chunk, whole, rtol=0, atol=1e-6)


def test_zero_head_keeps_the_last_state_exactly():
    predictor = NiNoMLP(eps=0.0)
    with torch.no_grad():
        predictor.head.weight.zero_()
        predictor.head.bias.zero_()
    # Mean 4, std 2 (deviations 3, -3, 3, -3 and six 0: 36 / 9 = 4): every step of
    # (w - 4) / 2 * 2 + 4 is exact in float32.
    window = torch.tensor([[7.0, 1.0, 7.0, 1.0, 4.0], [4.0, 4.0, 4.0, 4.0, 4.0]])
    mean, std = tensor_stats(window)
    assert (mean.item(), std.item()) == (4.0, 2.0)
    assert torch.equal(predictor.predict(window, 5), window[:, -1])


def test_constant_tensor_and_empty_window():
    predictor = _randomized(NiNoMLP(horizon=3))
    constant = torch.full((10, 5), 0.25)
    assert torch.equal(predictor.predict(constant), constant[:, -1])  # std 0: the prediction is the mean
    assert predictor.predict(torch.empty(0, 5)).shape == (0,)


def test_bundle_predict_uses_the_configured_type():
    conv = _randomized(NiNoMLP(layer_type="conv", horizon=3))
    window = _tensor_window(50)
    assert torch.equal(conv.predict(window), conv.predict(window, layer_type=3))
    assert not torch.equal(conv.predict(window), conv.predict(window, layer_type="linear"))
    assert build_predictor("nino-mlp", **conv.config).config["layer_type"] == "conv"


def test_loss_multi_step_targets_and_groups():
    predictor = _randomized(NiNoMLP(hidden=8, depth=1, horizon=6))
    window = _tensor_window(64)
    future = window[:, -1:] + 1e-3 * torch.arange(1, 7)  # (64, 6)
    full = predictor.loss(window, future)
    assert full.dim() == 0 and torch.isfinite(full)
    predictor.loss(window, future[:, :2]).backward()  # m = 2 <= K: the first two rows
    with pytest.raises(ValueError, match="targets of shape"):
        predictor.loss(window, torch.zeros(64, 7))
    # One group holding every row is the same as no groups (the batch as one tensor).
    ones = torch.zeros(64, dtype=torch.long)
    assert torch.allclose(predictor.loss(window, future, groups=ones), full, rtol=1e-5)
    # Two tensors of very different scales, standardized per group: each as if alone.
    other = 100 * _tensor_window(64, seed=3)
    both = torch.cat([window, other])
    targets = torch.cat([future, other[:, -1:].expand(64, 6)])
    groups = torch.cat([ones, ones + 1])
    per_group = predictor.loss(both, targets, groups=groups)
    alone = (predictor.loss(window, future) + predictor.loss(other, targets[64:])) / 2
    assert torch.allclose(per_group, alone, rtol=1e-4)


def test_loss_is_l1_in_standardized_units():
    predictor = NiNoMLP(horizon=2, eps=0.0)
    with torch.no_grad():
        predictor.head.weight.zero_()
        predictor.head.bias.zero_()
    window = torch.tensor([[7.0, 1.0, 7.0, 1.0, 4.0], [4.0, 4.0, 4.0, 4.0, 4.0]])  # mean 4, std 2
    target = window[:, -1:] + torch.tensor([[2.0, 4.0], [-2.0, 0.0]])  # |errors| / std: 1, 2, 1, 0
    assert predictor.loss(window, target).item() == 1.0


def test_trains_on_linear_trends():
    torch.manual_seed(0)
    predictor = NiNoMLP(hidden=32, depth=2, horizon=4)
    opt = torch.optim.Adam(predictor.parameters(), lr=3e-3)
    slope = 0.02 * torch.randn(256, 1)
    paths = torch.randn(256, 1) + slope * torch.arange(9.0)
    window, target = paths[:, :5], paths[:, 5:]
    first = predictor.loss(window, target).item()
    for _ in range(200):
        opt.zero_grad()
        loss = predictor.loss(window, target)
        loss.backward()
        opt.step()
    assert loss.item() < 0.2 * first
