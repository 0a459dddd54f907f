"""The LFD-2 paper reproduction (train_predictor.lfd2_benchmark): the Syn-1 / Syn-2 generators,
the split, the step indexing of the metric, the least-squares reference and the --quick run."""

import math
import re

import numpy as np
import pytest
import torch

from weightcast.train_predictor import lfd2_benchmark as bench
from weightcast.train_predictor.predictors import build_predictor
from weightcast.zoo.tasks.synthetic import make_syn1, make_syn2


@pytest.fixture(scope="module")
def syn1_gd() -> np.ndarray:
    return bench.syn1_trajectories(200, "gd")


def test_syn1_shapes_and_gd_decreases_the_loss_monotonically(syn1_gd):
    assert syn1_gd.shape == (200, 201, 3) and syn1_gd.dtype == np.float64
    for i in range(0, 200, 20):
        x, y = make_syn1(i)
        loss = ((syn1_gd[i] @ x.T - y) ** 2).sum(axis=1)  # (201,) ||X w_t - y||^2
        assert np.all(np.diff(loss) < 0)
        assert loss[-1] < 0.5 * loss[0]
    assert np.all((syn1_gd[:, 0] >= 0) & (syn1_gd[:, 0] <= 1))  # w_0 ~ U(0, 1)


def test_syn1_gd_step_is_the_authors_update(syn1_gd):
    x, y = make_syn1(3)
    w0, w1 = syn1_gd[3, 0], syn1_gd[3, 1]
    lr = 0.01 / np.linalg.eigvalsh(x.T @ x).max()
    np.testing.assert_allclose(w1, w0 - lr * (x.T @ x @ w0 - x.T @ y), rtol=1e-12)


def test_syn1_sgd_shares_the_start_and_is_deterministic(syn1_gd):
    sgd = bench.syn1_trajectories(5, "sgd")
    assert sgd.shape == (5, 201, 3)
    np.testing.assert_array_equal(sgd, bench.syn1_trajectories(5, "sgd"))
    np.testing.assert_array_equal(sgd[:, 0], syn1_gd[:5, 0])  # same problem, same w_0
    assert not np.allclose(sgd[:, 1:], syn1_gd[:5, 1:])
    np.testing.assert_array_equal(bench.syn1_trajectories(5, "gd"), syn1_gd[:5])  # seed i = problem i


def test_syn2_trajectories():
    adam = bench.syn2_trajectories(3, "adam", 0.005)
    sgd = bench.syn2_trajectories(3, "sgd", 0.002)
    assert adam.shape == sgd.shape == (3, 201, bench.SYN2_PARAMETERS)
    np.testing.assert_array_equal(adam, bench.syn2_trajectories(3, "adam", 0.005))
    np.testing.assert_array_equal(adam[:, 0], sgd[:, 0])  # the same seeded initialization
    # Adam's first step moves a parameter by lr |g| / (|g| + eps): lr unless its gradient is ~0.
    first = np.abs(adam[:, 1] - adam[:, 0])
    assert first.max() <= 0.005 * (1 + 1e-12)
    assert (np.abs(first - 0.005) < 1e-5).mean() > 0.5
    # Fitting works: the final MLP fits y = X w* better than the initial one (Adam, lr 0.005).
    for i in range(3):
        x, y = (torch.from_numpy(a) for a in make_syn2(i))
        losses = [_mlp_mse(adam[i, t], x, y) for t in (0, 200)]
        assert losses[1] < losses[0]
    with pytest.raises(ValueError, match="must be one of"):
        bench.syn2_trajectories(1, "rmsprop", 0.01)


def test_every_benchmark_generates_its_shape():
    for name, benchmark in bench.BENCHMARKS.items():
        params = 3 if name.startswith("syn1") else bench.SYN2_PARAMETERS
        assert benchmark.generate(2).shape == (2, 201, params), name
        assert benchmark.paper in bench.PAPER_TABLES


def test_paper_tables_are_complete():
    models = {"Introspection", "WNN", "LFN", "DLinear", "LFS", "LFL", "LFD-2"}
    assert set(bench.PAPER_TABLES) == {"Syn-1 GD", "Syn-1 SGD", "Syn-2 SGD", "Syn-2 Adam"}
    for table in bench.PAPER_TABLES.values():
        assert set(table) == models
        assert all(len(row) == len(bench.STEPS) for row in table.values())
    assert bench.PAPER_TABLES["Syn-1 GD"]["LFD-2"] == ((0.207, 0.021), (4.39, 0.39), (44.9, 5.0), (81.1, 9.6))
    assert bench.PAPER_TABLES["Syn-2 Adam"]["DLinear"][3] == (45.6, 4.9)


def test_split_problems():
    train, val, test = bench.split_problems(200, seed=3)
    assert (len(train), len(val), len(test)) == (100, 50, 50)
    assert sorted(np.concatenate([train, val, test]).tolist()) == list(range(200))
    np.testing.assert_array_equal(train, bench.split_problems(200, seed=3)[0])
    assert not np.array_equal(train, bench.split_problems(200, seed=4)[0])
    with pytest.raises(ValueError, match="at least 4 problems"):
        bench.split_problems(3, seed=0)


def test_step_s_is_state_index_s():
    # w_t = t^2 per series: no jump predicts 20^2, so the error at step s is s^2 - 400.
    t = torch.arange(201, dtype=torch.float64)
    test = (t**2).expand(2, 3, 201)  # (problems, P, 201)
    no_jump = build_predictor("no-jump", input_length=21)
    np.testing.assert_allclose(bench.step_mse(no_jump, test), [(s * s - 400.0) ** 2 for s in bench.STEPS])
    # LFD-2 set to w_n + (j + 1) (w_n - w_0) / 20 for output j is exact on w_t = t.
    lfd2 = build_predictor("lfd2").double()
    with torch.no_grad():
        steps = torch.arange(1, 181, dtype=torch.float64)
        lfd2.linear.weight.copy_(torch.stack([-steps / 20, 1 + steps / 20], dim=1))
        lfd2.linear.bias.zero_()
    np.testing.assert_allclose(bench.step_mse(lfd2, t.expand(2, 3, 201)), 0.0, atol=1e-20)
    # on w_t = t^2 it predicts 400 + 20 h at horizon h = s - 20: at step 40, 800 for 1600
    assert bench.step_mse(lfd2, (t**2).expand(1, 1, 201))[0] == (1600 - 800) ** 2
    with pytest.raises(ValueError, match="state indices"):
        bench.step_mse(no_jump, test, steps=(20,))


def test_least_squares_lfn_reproduces_gd_exactly(syn1_gd):
    # Proposition 1 of the paper: linear dynamics are a linear map of the window.
    data = torch.from_numpy(syn1_gd).transpose(1, 2)  # (problems, P, 201)
    lfn, lfd2 = build_predictor("lfn").double(), build_predictor("lfd2").double()
    bench.fit_least_squares(lfn, data[:100])
    bench.fit_least_squares(lfd2, data[:100])
    lfn_mse, lfd2_mse = bench.step_mse(lfn, data[150:]), bench.step_mse(lfd2, data[150:])
    assert np.all(lfn_mse < 1e-10)
    assert np.all(lfd2_mse > 1e-6) and np.all(np.diff(lfd2_mse) > 0)
    with pytest.raises(ValueError, match="normalized"):
        bench.fit_least_squares(build_predictor("lfd2-norm"), data[:100])


def test_fit_farcaster_early_stops_and_restores_the_best():
    data = torch.from_numpy(bench.syn1_trajectories(12, "gd")).transpose(1, 2).float()
    torch.manual_seed(0)
    lfd2 = build_predictor("lfd2")
    before = bench.step_mse(lfd2, data[8:].double())
    epochs = bench.fit_farcaster(lfd2, data[:6], data[6:8], lr=0.05, max_epochs=1000, patience=3)
    assert 1 <= epochs < 1000  # stopped early
    assert np.all(bench.step_mse(lfd2, data[8:].double()) < 0.1 * before)


def test_quick_run_writes_a_finite_table(tmp_path):
    out = tmp_path / "report.md"
    assert bench.main(["--quick", "--out", str(out)]) == 0
    report = out.read_text()
    ours = [line for line in report.splitlines() if "| ours |" in line]
    farcasters = len(bench.FARCASTERS) + len(bench.LEAST_SQUARES) + len(bench.RULE_BASED)
    assert len(ours) == len(bench.BENCHMARKS) * farcasters
    for line in ours:
        numbers = [float(v) for v in re.findall(r"[-+]?\d*\.?\d+(?:e[-+]?\d+)?", line.split("| ours |")[1])]
        assert len(numbers) == 2 * len(bench.STEPS) and all(math.isfinite(v) for v in numbers), line
    assert "| LFD-2 | paper | 0.207 (0.021) | 4.39 (0.39) | 44.9 (5) | 81.1 (9.6) |" in report
    assert report.count("| Syn-1 GD | 40 |") == 1 and "nan" not in report


def _mlp_mse(theta: np.ndarray, x: torch.Tensor, y: torch.Tensor) -> float:
    """MSE of the 1 -> 10 -> 1 MLP with flat parameters theta (31,) on (x (100, 1), y (100,))."""
    w1, b1, w2, b2 = np.split(theta, [10, 20, 30])
    hidden = torch.relu(x @ torch.from_numpy(w1)[None, :] + torch.from_numpy(b1))  # (100, 10)
    return ((hidden @ torch.from_numpy(w2) + torch.from_numpy(b2) - y) ** 2).mean().item()
