"""The nowcaster's guard (`eval.runtime.guard`): the backtracking line search, the allowed rise
(relative, a fraction of the period's progress, the loss's noise) and how a `Nowcaster` applies
them to a jump whose step is known exactly (a linear fit on straight-line trajectories)."""

import math

import pytest
import torch
from torch import nn
from weightcast.eval.runtime import NowcastConfig, Nowcaster
from weightcast.eval.runtime.guard import allowed_rise, confirmed, line_search, trajectory_noise
from weightcast.train_predictor.bundle import PredictorBundle


def _recorder(losses: dict[float, float]):
    calls = []

    def loss_at(scale):
        calls.append(scale)
        return losses[scale]

    return loss_at, calls


def test_line_search_keeps_the_largest_scale_within_the_allowed_rise():
    loss_at, calls = _recorder({1.0: 3.0, 0.5: 1.05, 0.25: 0.5})
    result = line_search(loss_at, before=1.0, scales=[0.25, 1.0, 0.5], rise=0.1)
    assert (result.scale, result.loss) == (0.5, 1.05)  # within 1.0 + 0.1, though 0.25 is lower
    assert calls == [1.0, 0.5]  # largest first; stops at the first kept scale
    assert result.tried == [(1.0, 3.0), (0.5, 1.05)]


def test_line_search_rolls_back_when_no_scale_is_within_the_rise():
    loss_at, calls = _recorder({1.0: 3.0, 0.5: 2.0, 0.25: 1.5})
    result = line_search(loss_at, before=1.0, scales=[1.0, 0.5, 0.25], rise=0.1)
    assert result.scale == 0.0 and result.loss == 1.5 and calls == [1.0, 0.5, 0.25]


def test_line_search_skips_nonfinite_losses_and_expands_a_full_step_that_helps():
    loss_at, _ = _recorder({1.0: math.nan, 0.5: 0.9, 0.25: 0.95})
    assert line_search(loss_at, 1.0, [1.0, 0.5, 0.25], 0.0).scale == 0.5
    loss_at, _ = _recorder({1.0: math.inf, 0.5: math.nan, 0.25: math.nan})
    result = line_search(loss_at, 1.0, [1.0, 0.5, 0.25], 0.0)
    assert result.scale == 0.0 and math.isnan(result.loss)
    loss_at, calls = _recorder({1.0: 0.8, 2.0: 0.7})
    assert line_search(loss_at, 1.0, [1.0, 0.5], 0.0, expand=True).scale == 2.0 and calls == [1.0, 2.0]
    loss_at, _ = _recorder({1.0: 0.8, 2.0: 0.9})  # doubling does not pay: the full step is kept
    assert line_search(loss_at, 1.0, [1.0, 0.5], 0.0, expand=True).scale == 1.0


def test_allowed_rise_is_the_largest_credit():
    assert allowed_rise(2.0, 0.01) == pytest.approx(0.02)
    assert allowed_rise(2.0, 0.01, progress=1.0, progress_tolerance=0.5) == 0.5
    assert allowed_rise(2.0, 0.01, progress=-1.0, progress_tolerance=0.5) == pytest.approx(0.02)  # no fall
    assert allowed_rise(2.0, 0.01, progress=math.nan, progress_tolerance=0.5) == pytest.approx(0.02)
    assert allowed_rise(2.0, 0.01, noise=0.3, noise_tolerance=2.0) == pytest.approx(0.6)


def test_lookahead_confirms_a_loss_back_within_tolerance_of_its_value_before_the_jump():
    assert confirmed(2.0, 2.0, 0.0) and confirmed(2.0, 2.02, 0.01) and not confirmed(2.0, 2.03, 0.01)
    assert confirmed(-1.0, -0.99, 0.01)  # relative to |before|: a negative loss works too
    assert not confirmed(2.0, math.nan, 1.0) and not confirmed(2.0, math.inf, 1.0)


def test_trajectory_noise_is_the_residual_spread_about_a_line():
    assert trajectory_noise([5.0, 4.0, 3.0, 2.0, 1.0]) == pytest.approx(0.0, abs=1e-12)
    # residuals +-d alternating about a line of 3 points: (d, -2d, d) after the fit; sqrt(6 d^2 / 1)
    assert trajectory_noise([1.1, 0.8, 1.1]) == pytest.approx(math.sqrt(6 * 0.1**2), rel=1e-9)
    assert trajectory_noise([1.0, 2.0]) == 0.0 and trajectory_noise([1.0, math.nan, 2.0]) == 0.0


def _bundle() -> PredictorBundle:
    return PredictorBundle("linear-fit", {"linear": {"input_length": 5, "horizon": 5}})


def _straight_run(config: NowcastConfig, probe):
    """A Linear(4, 3) whose weights move by `slope` per call (t = 1..5): the linear fit's step
    at call 5 is exactly 5 x slope. Returns the model, the weights at call 5, the step and the jump."""
    torch.manual_seed(0)
    model = nn.Linear(4, 3)
    start = {n: p.detach().clone() for n, p in model.named_parameters()}
    slope = {n: torch.full(p.shape, 0.25) for n, p in start.items()}  # a power of 2: exact in float32
    nowcaster = Nowcaster(model, None, _bundle(), config, probe=probe)
    for t in range(1, 6):
        with torch.no_grad():
            for name, param in model.named_parameters():
                param.copy_(start[name] + slope[name] * t)
        jump = nowcaster()
    weights = {n: start[n] + slope[n] * 5 for n in start}
    return model, weights, {n: 5 * slope[n] for n in slope}, jump, nowcaster


def test_nowcaster_keeps_the_jump_at_the_scale_the_line_search_finds():
    targets = {}

    def probe(module):  # squared distance to a point 0.4 of the way along the step
        return float(sum(((p - targets[n]) ** 2).sum() for n, p in module.named_parameters()))

    torch.manual_seed(0)
    reference = nn.Linear(4, 3)
    for name, param in reference.named_parameters():
        targets[name] = param.detach() + 0.25 * 5 + 0.4 * 1.25
    config = NowcastConfig(tolerance=0.0, progress_tolerance=0.0)
    model, weights, step, jump, nowcaster = _straight_run(config, probe)
    # before: 0.4^2 |s|^2; scale 1: 0.6^2 |s|^2 (too high); scale 0.5: 0.1^2 |s|^2 (kept)
    assert jump.outcome == "accepted" and jump.scale == 0.5 and jump.probes == 3
    for name, param in model.named_parameters():
        torch.testing.assert_close(param.detach(), weights[name] + 0.5 * step[name], rtol=0, atol=1e-6)
    assert nowcaster.stats.jumps[-1].probe_after < jump.probe_before


def test_veto_rolls_back_what_the_line_search_keeps():
    targets = {}

    def probe(module):
        return float(sum(((p - targets[n]) ** 2).sum() for n, p in module.named_parameters()))

    torch.manual_seed(0)
    for name, param in nn.Linear(4, 3).named_parameters():
        targets[name] = param.detach() + 0.25 * 5 + 0.4 * 1.25
    config = NowcastConfig(guard_rule="veto", tolerance=0.0, progress_tolerance=0.0)
    model, weights, _, jump, _ = _straight_run(config, probe)
    assert jump.outcome == "rolled_back_guard" and jump.scale == 0.0 and jump.probes == 2
    for name, param in model.named_parameters():
        assert torch.equal(param.detach(), weights[name])


def test_progress_tolerance_admits_a_rise_smaller_than_the_periods_fall():
    """The probe falls from 10 (the window's oldest snapshot) to 2 over the period, then the jump
    raises it to 3: a rise of 1 is 50% of the loss (vetoed at 1%) but 1/8 of the period's progress
    of 8. The first period's fall counts from the window's start, not from construction."""
    # construction, before the jump, the window's oldest snapshot (first attempt), the full step
    losses = iter([50.0, 2.0, 10.0, 3.0])
    config = NowcastConfig(guard_rule="veto", progress_tolerance=0.5)
    assert _straight_run(config, lambda m: next(losses))[3].outcome == "accepted"
    losses = iter([50.0, 2.0, 3.0])  # no credit, no probe of the window's start
    strict = NowcastConfig(guard_rule="veto", progress_tolerance=0.0)
    assert _straight_run(strict, lambda m: next(losses))[3].outcome == "rolled_back_guard"
    losses = iter([50.0, 2.0, 2.5, 3.0])  # a fall of 0.5 over the window: half of it is below the rise of 1
    assert _straight_run(config, lambda m: next(losses))[3].outcome == "rolled_back_guard"


def test_default_guard_is_the_line_search_with_progress_credit():
    config = NowcastConfig()
    assert (config.guard, config.guard_rule, config.scales) == (True, "line-search", [1.0, 0.5, 0.25])
    assert (config.tolerance, config.progress_tolerance, config.noise_tolerance) == (0.01, 0.5, 0.0)


def test_noise_tolerance_probes_every_snapshot():
    seen = []
    config = NowcastConfig(noise_tolerance=2.0)
    _straight_run(config, lambda m: seen.append(1) or 1.0)
    assert len(seen) == 1 + 5 + 1  # construction, the 5 snapshots (the last one serves as 'before'), scale 1


@pytest.mark.slow
def test_guard_benchmark_runs_and_summarizes():
    from weightcast.eval.guard_benchmark import run_benchmark

    results = run_benchmark(["help"], [0], ["linear-fit"], ["none", "line-search-progress"])
    methods = results["help"]["methods"]
    assert set(methods) == {"linear-fit/none", "linear-fit/line-search-progress"}
    unguarded, guarded = methods["linear-fit/none"], methods["linear-fit/line-search-progress"]
    assert unguarded["probes"] == 0 and unguarded["accepted"] == 6  # 30 epochs, a jump every 5
    assert guarded["probes"] >= 6 and guarded["accepted"] + guarded["rolled_back"] == 6
    assert all(m["speedup"] > 0 and 0 <= m["overhead"] for m in methods.values())
