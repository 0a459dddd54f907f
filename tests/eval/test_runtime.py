"""The live-training runtime of `eval`: jumps, the guard, non-finite rollback, optimizer-state
policies, what is left alone, farcast mode, bad input, the zoo hook and DDP.

Most tests move the parameters by hand between calls (`_set`), so the expected jump is known
exactly; bundles are built from rule-based predictors or hand-set WNN / LFD-2 weights."""

import copy
import math

import pytest
import torch
import torch.distributed as dist
from torch import nn
from weightcast.eval.runtime import (
    NowcastConfig,
    Nowcaster,
    NowcastHook,
    NowcastWarning,
    apply_optimizer_policy,
)
from weightcast.train_predictor.bundle import MissingPredictorError, PredictorBundle
from weightcast.train_predictor.predictors import LFD2, WNN
from weightcast.zoo.config import ConfigError
from weightcast.zoo.tasks import get_task
from weightcast.zoo.train import TrainConfig, train


def _bundle(kind: str = "linear-fit", **config) -> PredictorBundle:
    """A bundle whose one fitted predictor (linear) serves every layer type by the default fallback."""
    return PredictorBundle(kind, {"linear": {"input_length": 5, "horizon": 5, **config}})


def _linear_model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Linear(4, 3)  # weight: linear, bias: bias


def _set(model: nn.Module, values: dict[str, torch.Tensor]) -> None:
    with torch.no_grad():
        for name, param in model.named_parameters():
            if name in values:
                param.copy_(values[name])


def _params(model: nn.Module) -> dict[str, torch.Tensor]:
    return {name: param.detach().clone() for name, param in model.named_parameters()}


def _run_linear(model, nowcaster, start, slope, times):
    """Set every parameter to start + slope * t and call the nowcaster, for each t in `times`."""
    jumps = []
    for t in times:
        _set(model, {n: start[n] + slope[n] * t for n in start})
        jumps.append(nowcaster())
    return jumps


@pytest.mark.parametrize(
    "bundle, buffer_dtype, exact",
    [
        (_bundle("no-jump"), "float32", True),
        (_bundle("no-jump"), "float16", True),  # the step is rounded, never the weights
        (PredictorBundle.from_predictors({"linear": WNN()}), "float32", False),
    ],
    ids=["no-jump", "no-jump-float16-buffer", "wnn-zero-head"],
)
def test_zero_residual_jump_leaves_model_unchanged(bundle, buffer_dtype, exact):
    if bundle.kind == "wnn":
        nn.init.zeros_(bundle.predictors["linear"].head.weight)  # delta = tanh(0) = 0
    model = _linear_model()
    nowcaster = Nowcaster(model, None, bundle, NowcastConfig(guard=False, buffer_dtype=buffer_dtype))
    generator = torch.Generator().manual_seed(1)
    for call in range(1, 6):
        with torch.no_grad():
            for param in model.parameters():
                param.add_(0.01 * torch.randn(param.shape, generator=generator))
        before = _params(model)
        jump = nowcaster()
        assert (jump is None) == (call < 5)
    assert jump.outcome == "accepted" and jump.call == 5
    for name, param in model.named_parameters():
        if exact:
            assert torch.equal(param, before[name])
        else:  # anchor + scale * ((w - anchor) / scale): equal up to rounding
            torch.testing.assert_close(param.detach(), before[name], rtol=0, atol=1e-6)


@pytest.mark.parametrize("chunk_size", [1_000_000, 5])
def test_linear_fit_extrapolates_linear_trajectories(chunk_size):
    model = _linear_model()
    start = _params(model)
    slope = {n: torch.randn(p.shape, generator=torch.Generator().manual_seed(2)) for n, p in start.items()}
    nowcaster = Nowcaster(model, None, _bundle(), NowcastConfig(guard=False, chunk_size=chunk_size))
    jumps = _run_linear(model, nowcaster, start, slope, range(1, 6))  # window t = 1..5, horizon 5
    assert [j is None for j in jumps] == [True] * 4 + [False]
    for name, param in model.named_parameters():
        torch.testing.assert_close(param.detach(), start[name] + 10 * slope[name])
    # The trajectory goes on from the jumped weights; the next window holds only calls after the jump.
    jumps = _run_linear(model, nowcaster, start, slope, range(11, 16))
    assert jumps[-1].outcome == "accepted" and jumps[-1].call == 10
    for name, param in model.named_parameters():
        torch.testing.assert_close(param.detach(), start[name] + 20 * slope[name])
    stats = nowcaster.stats
    assert (stats.calls, stats.attempted, stats.accepted) == (10, 2, 2)
    assert stats.rolled_back_guard == stats.rolled_back_nonfinite == 0 and stats.seconds > 0
    assert nowcaster.predicted == {"weight": "linear", "bias": "bias"} and nowcaster.untouched == {}


def test_period_longer_than_window_uses_the_latest_snapshots():
    model = _linear_model()
    start, slope = _params(model), {n: torch.full(p.shape, 0.5) for n, p in _params(model).items()}
    bundle = _bundle(input_length=3, horizon=2)
    nowcaster = Nowcaster(model, None, bundle, NowcastConfig(guard=False, period=4))
    # A kink: constant up to t = 2, then linear; the window at call 4 is t = 2, 3, 4 only.
    for t in range(1, 5):
        _set(model, {n: start[n] + slope[n] * max(t - 2, 0) for n in start})
        jump = nowcaster()
    assert jump.call == 4 and nowcaster.stats.attempted == 1
    for name, param in model.named_parameters():
        torch.testing.assert_close(param.detach(), start[name] + slope[name] * (4 - 2 + 2))


def test_guard_rolls_back_a_jump_that_raises_the_probe_loss():
    model = nn.Sequential(nn.Linear(4, 3), nn.Dropout(0.5))
    model[1].eval()  # a submodule in eval mode stays so after the probe
    seen_modes = []

    def probe(module):  # grows with |w|: a jump outwards raises it
        seen_modes.append([m.training for m in module.modules()])
        return sum(p.abs().sum() for p in module.parameters())

    start = _params(model)
    outwards = {n: 0.1 * v for n, v in start.items()}
    nowcaster = Nowcaster(
        model, None, _bundle(), NowcastConfig(guard_rule="veto", tolerance=0.01), probe=probe
    )
    jumps = _run_linear(model, nowcaster, start, outwards, range(1, 6))
    jump = jumps[-1]
    assert jump.outcome == "rolled_back_guard" and jump.probe_after > jump.probe_before * 1.01
    for name, param in model.named_parameters():  # restored exactly to the call's weights
        assert torch.equal(param.detach(), start[name] + outwards[name] * 5)
    # eval mode inside the probe: at construction (the probe's check), before the jump, at the
    # window's oldest snapshot (the first period's progress credit) and after the jump
    assert seen_modes == [[False, False, False]] * 4
    assert model.training and model[0].training and not model[1].training  # modes restored
    # Shrinking weights: the probe loss falls, the jump is kept.
    _run_linear(model, nowcaster, start, {n: -0.05 * v for n, v in start.items()}, range(1, 6))
    stats = nowcaster.stats
    assert (stats.attempted, stats.accepted, stats.rolled_back_guard) == (2, 1, 1)
    assert stats.jumps[-1].probe_after < stats.jumps[-1].probe_before
    for name, param in model.named_parameters():
        torch.testing.assert_close(param.detach(), start[name] * (1 - 0.05 * 10))


def _momentum_sgd(model: nn.Module) -> torch.optim.Optimizer:
    """SGD with momentum after one step: every parameter has a momentum buffer."""
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    sum(p.sum() for p in model.parameters()).backward()
    optimizer.step()
    return optimizer


def test_lookahead_undoes_a_jump_whose_loss_has_not_come_back():
    """guard_rule="accept" keeps the full jump without a probe after it; one snapshot interval
    later the probe loss is still above its value before the jump, so the weights and the
    optimizer state go back to what they were before the jump, and the history restarts there."""
    model = _linear_model()
    optimizer = _momentum_sgd(model)
    probe = lambda module: float(sum(p.abs().sum() for p in module.parameters()))  # noqa: E731
    start = _params(model)
    outwards = {n: 0.1 * v for n, v in start.items()}
    config = NowcastConfig(guard_rule="accept", lookahead=True, tolerance=0.01)
    nowcaster = Nowcaster(model, optimizer, _bundle(), config, probe=probe)
    jump = _run_linear(model, nowcaster, start, outwards, range(1, 6))[-1]
    assert jump.outcome == "accepted" and jump.probe_after is None and jump.probes == 1  # the before
    momenta = [optimizer.state[p]["momentum_buffer"].clone() for p in model.parameters()]
    for p in model.parameters():  # training after the jump changes the optimizer state
        optimizer.state[p]["momentum_buffer"].mul_(3.0)
    _set(model, {n: start[n] + outwards[n] * 11 for n in start})  # still outwards: the loss is higher
    assert nowcaster() is None
    assert jump.outcome == "rolled_back_lookahead" and jump.scale == 0.0
    assert jump.probe_lookahead == float(sum((start[n] + outwards[n] * 11).abs().sum() for n in start))
    for name, param in model.named_parameters():  # the weights before the jump, exactly
        assert torch.equal(param.detach(), start[name] + outwards[name] * 5)
    for p, momentum in zip(model.parameters(), momenta):  # and the optimizer state before it
        assert torch.equal(optimizer.state[p]["momentum_buffer"], momentum)
    stats = nowcaster.stats
    assert (stats.accepted, stats.rolled_back_lookahead, stats.attempted) == (0, 1, 1)
    assert nowcaster._count == 1  # the history restarted from the restored weights


def test_lookahead_keeps_a_jump_whose_loss_has_come_back():
    model = _linear_model()
    probe = lambda module: float(sum(p.abs().sum() for p in module.parameters()))  # noqa: E731
    start = _params(model)
    inwards = {n: -0.05 * v for n, v in start.items()}
    config = NowcastConfig(guard_rule="accept", lookahead=True)
    nowcaster = Nowcaster(model, None, _bundle(), config, probe=probe)
    jump = _run_linear(model, nowcaster, start, inwards, range(1, 6))[-1]
    jumped = _params(model)
    nowcaster()  # the verdict: the weights are the jumped ones, whose loss is below the one before
    assert jump.outcome == "accepted" and jump.probe_lookahead < jump.probe_before
    assert all(torch.equal(param.detach(), jumped[name]) for name, param in model.named_parameters())
    assert (nowcaster.stats.accepted, nowcaster.stats.rolled_back_lookahead) == (1, 0)


def test_guard_tolerance_admits_a_small_rise():
    model = _linear_model()
    start = _params(model)
    probe = lambda module: sum(p.abs().sum() for p in module.parameters())  # noqa: E731
    slope = {n: 0.001 * v for n, v in start.items()}  # |w| rises 0.5% over the jump
    strict = Nowcaster(model, None, _bundle(), NowcastConfig(guard_rule="veto", tolerance=0.0), probe=probe)
    assert _run_linear(model, strict, start, slope, range(1, 6))[-1].outcome == "rolled_back_guard"
    lenient = Nowcaster(model, None, _bundle(), NowcastConfig(guard_rule="veto", tolerance=0.01), probe=probe)
    assert _run_linear(model, lenient, start, slope, range(1, 6))[-1].outcome == "accepted"


def test_nonfinite_predictions_roll_back_with_a_warning():
    wnn = WNN()
    nn.init.constant_(wnn.head.bias, math.nan)
    model = _linear_model()
    probe_calls = []
    bundle = PredictorBundle.from_predictors({"linear": wnn})
    nowcaster = Nowcaster(model, None, bundle, probe=lambda m: probe_calls.append(1) or 0.0)
    for _ in range(4):
        assert nowcaster() is None
    before = _params(model)
    message = r"'wnn' bundle predicted NaN/Inf for layer type\(s\) linear, bias"
    with pytest.warns(NowcastWarning, match=message):
        jump = nowcaster()
    assert jump.outcome == "rolled_back_nonfinite" and jump.probe_before is None
    assert all(torch.equal(p, before[n]) for n, p in model.named_parameters())
    assert probe_calls == [1]  # its check at construction only: nothing written, nothing to probe
    with pytest.warns(NowcastWarning):
        for _ in range(5):  # the run goes on; the next attempt is rolled back again
            nowcaster()
    stats = nowcaster.stats
    assert (stats.attempted, stats.rolled_back_nonfinite, stats.accepted) == (2, 2, 0)


def _optimizer_with_state(name: str):
    model = _linear_model()
    optimizer = (
        torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
        if name == "sgd"
        else torch.optim.Adam(model.parameters(), lr=0.01)
    )
    generator = torch.Generator().manual_seed(3)
    for _ in range(3):
        x, y = torch.randn(8, 4, generator=generator), torch.randn(8, 3, generator=generator)
        optimizer.zero_grad()
        nn.functional.mse_loss(model(x), y).backward()
        optimizer.step()
    return model, optimizer


@pytest.mark.parametrize("optimizer_name", ["sgd", "adam"])
@pytest.mark.parametrize("policy", ["keep", "reset", "rescale"])
def test_optimizer_policies(optimizer_name, policy):
    model, optimizer = _optimizer_with_state(optimizer_name)
    config = NowcastConfig(guard=False, optimizer_policy=policy, momentum_scale=0.25)
    nowcaster = Nowcaster(model, optimizer, _bundle(input_length=2, horizon=1), config)
    before = copy.deepcopy(optimizer.state_dict()["state"])
    assert nowcaster() is None and nowcaster().outcome == "accepted"
    after = optimizer.state_dict()["state"]
    keys = {"sgd": {"momentum_buffer"}, "adam": {"step", "exp_avg", "exp_avg_sq"}}[optimizer_name]
    for index in (0, 1):
        assert set(after[index]) == keys
        for key in keys:
            old, new = before[index][key], after[index][key]
            if policy == "keep" or (policy == "rescale" and key not in ("momentum_buffer", "exp_avg")):
                assert torch.equal(new, old)
            elif policy == "reset":
                assert torch.equal(new, torch.zeros_like(old))
            else:
                assert torch.equal(new, 0.25 * old) and old.abs().sum() > 0


def test_reset_makes_adam_state_that_of_a_fresh_optimizer():
    model, optimizer = _optimizer_with_state("adam")
    apply_optimizer_policy(optimizer, model.parameters(), "reset")
    fresh_model = copy.deepcopy(model)
    fresh = torch.optim.Adam(fresh_model.parameters(), lr=0.01)
    x, y = torch.randn(8, 4), torch.randn(8, 3)
    for m, opt in ((model, optimizer), (fresh_model, fresh)):
        opt.zero_grad()
        nn.functional.mse_loss(m(x), y).backward()
        opt.step()
    for a, b in zip(model.parameters(), fresh_model.parameters()):
        assert torch.equal(a, b)


class _Mixed(nn.Module):
    """Linear + BatchNorm, a frozen layer, and a bare parameter of unknown layer type."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.fc = nn.Linear(4, 3)
        self.bn = nn.BatchNorm1d(3)
        self.frozen = nn.Linear(3, 3)
        self.frozen.requires_grad_(False)
        self.scale = nn.Parameter(torch.ones(3))  # typed by rank alone

    def forward(self, x):
        return self.frozen(self.bn(self.fc(x))) * self.scale


def test_buffers_frozen_and_unknown_parameters_are_left_alone():
    model = _Mixed()
    model(torch.randn(16, 4))  # train mode: BN running statistics move away from their init
    running = {n: b.clone() for n, b in model.named_buffers()}
    start = _params(model)
    slope = {n: torch.full(p.shape, 0.1) for n, p in start.items()}
    probe = (torch.randn(8, 4), torch.randn(8, 3), nn.functional.mse_loss)
    config = NowcastConfig(guard_rule="veto", tolerance=1e6)  # keep the jump whatever the probe says
    with pytest.warns(NowcastWarning, match="left untouched by the nowcaster: scale"):
        nowcaster = Nowcaster(model, None, _bundle(), config, probe=probe)
    assert nowcaster.untouched == {
        "frozen.weight": "frozen (requires_grad=False)",
        "frozen.bias": "frozen (requires_grad=False)",
        "scale": "unknown layer type (its module is not recognised by zoo.layer_types)",
    }
    predicted = {"fc.weight": "linear", "fc.bias": "bias", "bn.weight": "norm", "bn.bias": "norm"}
    assert nowcaster.predicted == predicted
    # The predicted parameters extrapolate; the others keep the values set by hand.
    jump = _run_linear(model, nowcaster, start, slope, range(1, 6))[-1]
    assert jump.outcome == "accepted"
    for name, param in model.named_parameters():
        expected = start[name] + slope[name] * (10 if name in nowcaster.predicted else 5)
        torch.testing.assert_close(param.detach(), expected)
    for name, buffer in model.named_buffers():
        assert torch.equal(buffer, running[name])


def test_probe_normalizes_batchnorm_with_the_probe_batch_and_restores_its_statistics():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 3), nn.BatchNorm1d(3), nn.Dropout(0.5))
    with torch.no_grad():  # running statistics from other weights: eval mode would be far off
        model[1].running_mean.fill_(100.0)
    running = {n: b.clone() for n, b in model.named_buffers()}
    x, y = torch.randn(32, 4), torch.randn(32, 3)
    seen = []
    nowcaster = Nowcaster(model, None, _bundle(), probe=lambda m: seen.append(m(x)) or 0.0)
    start = _params(model)
    _run_linear(
        model, nowcaster, start, {n: torch.full(p.shape, 0.01) for n, p in start.items()}, range(1, 6)
    )
    # construction, before the jump, the window's oldest snapshot, after the jump; mode restored
    assert len(seen) == 4 and model.training
    reference = copy.deepcopy(model).train()
    reference[2].eval()  # dropout off, batch statistics on
    with torch.no_grad():
        torch.testing.assert_close(seen[3], reference(x))  # the probe after the jump
    for name, buffer in model.named_buffers():
        assert torch.equal(buffer, running[name]), name


def test_farcast_jumps_exactly_once():
    lfd2 = LFD2(input_length=3, horizon=4, reg_weight=0.0)
    with torch.no_grad():  # pred_j = w_2 + j (w_2 - w_0) / 2: exact on straight lines
        j = torch.arange(1, 5, dtype=torch.float32)
        lfd2.linear.weight.copy_(torch.stack([-j / 2, 1 + j / 2], dim=1))
        lfd2.linear.bias.zero_()
    bundle = PredictorBundle.from_predictors({"linear": lfd2})
    model = _linear_model()
    start = _params(model)
    slope = {n: torch.full(p.shape, 0.2) for n, p in start.items()}
    nowcaster = Nowcaster(model, None, bundle, NowcastConfig(mode="farcast", guard=False))
    assert (nowcaster.config.farcast_after, nowcaster.config.horizon) == (2, 4)
    jumps = _run_linear(model, nowcaster, start, slope, range(1, 3))  # window: t = 0 (start), 1, 2
    assert jumps[-1].outcome == "accepted"
    for name, param in model.named_parameters():
        torch.testing.assert_close(param.detach(), start[name] + 6 * slope[name])
    jumps = _run_linear(model, nowcaster, start, slope, range(7, 20))
    assert all(j is None for j in jumps)
    assert (nowcaster.stats.calls, nowcaster.stats.attempted) == (15, 1)
    for name, param in model.named_parameters():
        torch.testing.assert_close(param.detach(), start[name] + 19 * slope[name])


@pytest.mark.parametrize(
    "config, message",
    [
        (NowcastConfig(period=3, guard=False), "period=3 is shorter than the bundle's window of 5 snapshots"),
        (NowcastConfig("farcast", farcast_after=3, guard=False), "farcast_after=3 calls give 4 snapshots"),
        (NowcastConfig(horizon=3, guard=False), None),  # rule-based fits extrapolate to any horizon
        (NowcastConfig(), r"the guard .* needs a probe"),
        (NowcastConfig(guard=False, optimizer_policy="reset"), "optimizer_policy='reset' needs the optimiz"),
    ],
)
def test_configs_that_do_not_fit_the_bundle_or_model(config, message):
    if message is None:
        Nowcaster(_linear_model(), None, _bundle(), config)
    else:
        with pytest.raises(ConfigError, match=message):
            Nowcaster(_linear_model(), None, _bundle(), config)


@pytest.mark.parametrize(
    "overrides, message",
    [
        ({"mode": "jump"}, "mode must be one of nowcast, farcast"),
        ({"optimizer_policy": "zero"}, "optimizer_policy must be one of keep, reset, rescale"),
        ({"buffer_dtype": "int8"}, "buffer_dtype must be one of"),
        ({"period": 0}, "period must be >= 1"),
        ({"tolerance": -0.1}, "tolerance is a relative rise"),
        ({"layer_types": ["dense"]}, "layer_types must be a non-empty list of conv, linear"),
        ({"buffer_device": "gpu7"}, "buffer_device must be a torch device"),
    ],
)
def test_invalid_configs_raise(overrides, message):
    with pytest.raises(ConfigError, match=message):
        NowcastConfig(**overrides)


def test_wnn_horizon_must_be_one_it_was_trained_for():
    bundle = PredictorBundle.from_predictors({"linear": WNN()})
    with pytest.raises(ConfigError, match=r"covers horizons \(5,\), not horizon=3"):
        Nowcaster(_linear_model(), None, bundle, NowcastConfig(horizon=3, guard=False))


def test_missing_layer_type_names_the_parameters_or_is_excluded():
    bundle = PredictorBundle("linear-fit", {"linear": {"input_length": 5, "horizon": 5}}, fallback={})
    message = r"layer type 'bias'.*1 parameter\(s\) of layer type 'bias' \(bias\)"
    with pytest.raises(MissingPredictorError, match=message):
        Nowcaster(_linear_model(), None, bundle, NowcastConfig(guard=False))
    nowcaster = Nowcaster(_linear_model(), None, bundle, NowcastConfig(guard=False, layer_types=["linear"]))
    assert nowcaster.predicted == {"weight": "linear"}
    assert nowcaster.untouched == {"bias": "layer type 'bias' not in NowcastConfig.layer_types"}


def test_bundle_loads_from_a_folder(tmp_path):
    from weightcast.train_predictor.bundle import save_bundle

    save_bundle(_bundle(), tmp_path / "bundle")
    nowcaster = Nowcaster(_linear_model(), None, str(tmp_path / "bundle"), NowcastConfig(guard=False))
    assert nowcaster.bundle.kind == "linear-fit" and nowcaster.config.period == 5
    with pytest.raises(TypeError, match="bundle must be a PredictorBundle"):
        Nowcaster(_linear_model(), None, 42, NowcastConfig(guard=False))


@pytest.fixture(scope="module")
def mnist1d():
    return get_task("mnist1d")


def _zoo_config(**overrides) -> TrainConfig:
    return TrainConfig(arch="mlp", arch_kwargs={"width": 32}, task="mnist1d", batch_size=500, **overrides)


def test_hook_in_zoo_training(mnist1d):
    hook = NowcastHook(_bundle(input_length=2, horizon=1), NowcastConfig(period=2))
    history = train(_zoo_config(epochs=4), hooks=[hook], task=mnist1d).history
    assert not history.diverged and all(math.isfinite(r.val_loss) for r in history.records)
    stats = hook.stats
    assert (stats.calls, stats.attempted) == (4, 2) and [j.call for j in stats.jumps] == [2, 4]
    assert stats.accepted + stats.rolled_back_guard == 2
    assert all(j.probe_before is not None and math.isfinite(j.probe_after) for j in stats.jumps)
    # Every 4 steps instead of every epoch (8 steps per epoch): 2 epochs, 4 calls, 2 attempts.
    hook = NowcastHook(_bundle(input_length=2, horizon=1), NowcastConfig(period=2), every_steps=4)
    train(_zoo_config(epochs=2), hooks=[hook], task=mnist1d)
    assert (hook.stats.calls, hook.stats.attempted) == (4, 2)


def test_hook_with_no_jump_changes_nothing_in_the_run(mnist1d):
    plain = train(_zoo_config(epochs=2), task=mnist1d)
    hook = NowcastHook(_bundle("no-jump", input_length=2, horizon=1))
    nowcast = train(_zoo_config(epochs=2), hooks=[hook], task=mnist1d)
    assert hook.stats.accepted == 1  # probe loss unchanged: within tolerance
    assert plain.history.column("val_loss") == nowcast.history.column("val_loss")
    for a, b in zip(plain.model.parameters(), nowcast.model.parameters()):
        assert torch.equal(a, b)


def test_hook_rejects_bad_settings():
    with pytest.raises(ConfigError, match="period=2 is shorter"):
        NowcastHook(_bundle(), NowcastConfig(period=2))
    with pytest.raises(ConfigError, match="every_steps >= 0"):
        NowcastHook(_bundle(), every_steps=-1)


def test_ddp_wrapped_model(tmp_path):
    dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'store'}", rank=0, world_size=1)
    try:
        model = _linear_model()
        ddp = nn.parallel.DistributedDataParallel(model)
        start = _params(model)
        slope = {n: torch.full(p.shape, -0.1) for n, p in start.items()}
        probe = (torch.randn(8, 4), torch.randn(8, 3), nn.functional.mse_loss)
        nowcaster = Nowcaster(
            ddp, None, _bundle(), NowcastConfig(guard_rule="veto", tolerance=1e6), probe=probe
        )
        assert nowcaster.module is model and nowcaster.predicted == {"weight": "linear", "bias": "bias"}
        assert _run_linear(model, nowcaster, start, slope, range(1, 6))[-1].outcome == "accepted"
        for name, param in model.named_parameters():
            torch.testing.assert_close(param.detach(), start[name] + 10 * slope[name])
        ddp(torch.randn(8, 4)).sum().backward()  # the wrapper still trains after a jump
        assert all(p.grad is not None for p in model.parameters())
    finally:
        dist.destroy_process_group()


# --- step cadence, horizon schedule, per-tensor predictors ---------------------------------------


def test_step_cadence_snapshots_every_n_calls_and_jumps_every_period():
    """Called every step: a snapshot every 3 calls, a jump every 15; the window is the weights
    at calls 3, 6, ..., 15 and the horizon (5) counts snapshot intervals, i.e. 15 calls ahead."""
    model = _linear_model()
    start = _params(model)
    slope = {n: torch.full(p.shape, 0.125) for n, p in start.items()}
    config = NowcastConfig(guard=False, snapshot_every=3, period=15)
    nowcaster = Nowcaster(model, None, _bundle(), config)
    jumps = _run_linear(model, nowcaster, start, slope, range(1, 16))
    assert [j is not None for j in jumps] == [False] * 14 + [True]
    assert jumps[-1].call == 15 and jumps[-1].horizon == 5
    for name, param in model.named_parameters():
        torch.testing.assert_close(param.detach(), start[name] + slope[name] * (15 + 5 * 3))
    assert nowcaster.stats.calls == 15 and nowcaster.stats.attempted == 1


def test_step_cadence_defaults_and_errors():
    bundle = _bundle()
    assert (
        NowcastConfig(snapshot_every=200).for_bundle(bundle).period == 1000
    )  # NiNo: 5 states, period/5 apart
    assert NowcastConfig("farcast", snapshot_every=4).for_bundle(bundle).farcast_after == 16
    with pytest.raises(ConfigError, match="period=1001 is not a multiple of snapshot_every=200"):
        NowcastConfig(snapshot_every=200, period=1001).for_bundle(bundle)
    with pytest.raises(
        ConfigError, match=r"period=800 is shorter than the bundle's window of 5 snapshots \(one"
    ):
        NowcastConfig(snapshot_every=200, period=800).for_bundle(bundle)
    with pytest.raises(ConfigError, match="snapshot_every must be >= 1"):
        NowcastConfig(snapshot_every=0)


def test_nino_horizon_schedule_decreases_over_the_run():
    from weightcast.eval.runtime import horizon_schedule
    from weightcast.train_predictor.predictors.nino import nino_horizon_schedule

    config = NowcastConfig(guard=False, horizon=40, horizon_schedule="nino", max_calls=50)
    expected = nino_horizon_schedule(50, 5, 40)  # 10 jumps, from 40 down to 1
    assert horizon_schedule(config.for_bundle(_bundle("no-jump"))) == expected and expected[-1] == 1
    nowcaster = Nowcaster(_linear_model(), None, _bundle("no-jump"), config)
    for _ in range(60):  # past max_calls: the last horizon goes on
        nowcaster()
    assert [j.horizon for j in nowcaster.stats.jumps] == expected + [1, 1]
    with pytest.raises(ConfigError, match="needs max_calls"):
        Nowcaster(_linear_model(), None, _bundle(), NowcastConfig(guard=False, horizon_schedule="nino"))
    wnn = PredictorBundle.from_predictors({"linear": WNN()})
    with pytest.raises(
        ConfigError, match=r"covers horizons \(5,\), not horizon=1, 2, 3, 4 \(the nino schedule"
    ):
        Nowcaster(
            _linear_model(), None, wnn, NowcastConfig(guard=False, horizon_schedule="nino", max_calls=50)
        )


def test_per_tensor_predictor_gets_one_parameter_tensor_per_call():
    from weightcast.train_predictor.predictors.nino import NiNoMLP

    torch.manual_seed(0)
    nino = NiNoMLP(input_length=3, horizon=4, hidden=8, depth=1)
    model = nn.Sequential(nn.Linear(4, 3), nn.Linear(3, 2))  # 2 weights (linear), 2 biases (bias)
    config = NowcastConfig(guard=False, horizon=2, chunk_size=5)  # chunking must not split a tensor
    nowcaster = Nowcaster(model, None, PredictorBundle.from_predictors({"linear": nino}), config)
    predictor = nowcaster._groups[0].predictor
    assert all(group.predictor is predictor for group in nowcaster._groups)  # the fallback serves bias
    calls = []
    original = predictor.predict

    def spy(window, horizon=None, *, layer_type=None, **kwargs):
        calls.append((tuple(window.shape), horizon, layer_type))
        return original(window, horizon, layer_type=layer_type, **kwargs)

    predictor.predict = spy
    generator = torch.Generator().manual_seed(1)
    states = [_params(model)]
    for _ in range(3):  # a jump every 3 calls (the window): the states after calls 1, 2, 3
        _set(model, {n: v + 0.1 * torch.randn(v.shape, generator=generator) for n, v in states[-1].items()})
        states.append(_params(model))
        jump = nowcaster()
    assert jump.outcome == "accepted"
    assert sorted(calls) == sorted(
        [((12, 3), 2, "linear"), ((6, 3), 2, "linear"), ((3, 3), 2, "bias"), ((2, 3), 2, "bias")]
    )
    for name, param in model.named_parameters():  # each tensor predicted from its own window alone
        window = torch.stack([s[name].reshape(-1) for s in states[1:]], dim=1)
        layer_type = "linear" if name.endswith("weight") else "bias"
        expected = original(window, 2, layer_type=layer_type).view(param.shape)
        torch.testing.assert_close(param.detach(), expected, rtol=0, atol=1e-6)


# --- exception safety -------------------------------------------------------------------------


@pytest.mark.parametrize("error", [KeyboardInterrupt, MemoryError])
def test_an_exception_in_the_probe_restores_the_weights_and_counts_the_attempt(error):
    model = _linear_model()
    start = _params(model)
    slope = {n: torch.full(p.shape, 0.1) for n, p in start.items()}
    probes = []

    def probe(module):
        probes.append(1)
        if len(probes) == 3:  # construction, before the jump, then after it is written
            raise error("probe interrupted")
        return 1.0

    nowcaster = Nowcaster(model, None, _bundle(), probe=probe)
    with pytest.raises(error, match="probe interrupted"):
        _run_linear(model, nowcaster, start, slope, range(1, 6))
    for name, param in model.named_parameters():
        assert torch.equal(param.detach(), start[name] + slope[name] * 5)  # the pre-jump weights
    stats = nowcaster.stats
    assert (stats.attempted, stats.rolled_back_error, stats.accepted) == (1, 1, 0)
    assert stats.jumps[-1].outcome == "rolled_back_error" and stats.seconds > 0
    assert _run_linear(model, nowcaster, start, slope, range(6, 11))[-1].outcome == "accepted"  # goes on


def test_an_exception_in_the_prediction_leaves_the_weights_unchanged():
    model = _linear_model()
    nowcaster = Nowcaster(model, None, _bundle(), NowcastConfig(guard=False))
    for _ in range(4):
        nowcaster()
    before = _params(model)

    def out_of_memory(*args, **kwargs):
        raise MemoryError("predictor out of memory")

    for group in nowcaster._groups:
        group.predictor.predict = out_of_memory
    with pytest.raises(MemoryError):
        nowcaster()
    assert all(torch.equal(p, before[n]) for n, p in model.named_parameters())
    assert nowcaster.stats.rolled_back_error == 1


def test_a_probe_that_returns_no_scalar_fails_at_construction():
    with pytest.raises(ConfigError, match=r"the probe returned a tensor of shape \(8,\)"):
        Nowcaster(_linear_model(), None, _bundle(), probe=lambda m: torch.ones(8))
    with pytest.raises(ConfigError, match="the probe returned a str"):
        Nowcaster(_linear_model(), None, _bundle(), probe=lambda m: "loss")
    Nowcaster(
        _linear_model(), None, _bundle(), probe=lambda m: torch.ones(())
    )  # a 0-dim tensor is one number


def test_an_all_nan_probe_warns_once_and_every_jump_is_rolled_back():
    model = _linear_model()
    with pytest.warns(NowcastWarning, match="the probe loss is NaN/Inf at construction") as record:
        nowcaster = Nowcaster(model, None, _bundle(), probe=lambda m: math.nan)
        for _ in range(15):
            nowcaster()
    assert len([w for w in record if issubclass(w.category, NowcastWarning)]) == 1
    stats = nowcaster.stats
    assert (stats.attempted, stats.rolled_back_guard, stats.accepted) == (3, 3, 0)


# --- checkpointing --------------------------------------------------------------------------


def _resumable_run(steps, checkpoint_at=None, path=None, **nowcast):
    """A plain loop on fixed data: an MLP, AdamW, a nowcaster called every step (a snapshot every
    2 steps, a jump every 10, the line-search guard). With `checkpoint_at`, the model, optimizer
    and nowcaster are saved after that step and everything is rebuilt from the checkpoint."""
    generator = torch.Generator().manual_seed(0)
    x, y = torch.randn(64, 4, generator=generator), torch.randn(64, 3, generator=generator)

    def build():
        torch.manual_seed(0)
        model = nn.Sequential(nn.Linear(4, 8), nn.Tanh(), nn.Linear(8, 3))
        optimizer = torch.optim.AdamW(model.parameters(), lr=0.05)
        config = NowcastConfig(snapshot_every=2, period=10, optimizer_policy="rescale", **nowcast)
        probe = (x[:32], y[:32], nn.functional.mse_loss)
        return model, optimizer, Nowcaster(model, optimizer, _bundle(), config, probe=probe)

    model, optimizer, nowcaster = build()
    for step in range(steps):
        batch = slice(8 * (step % 8), 8 * (step % 8) + 8)
        optimizer.zero_grad()
        nn.functional.mse_loss(model(x[batch]), y[batch]).backward()
        optimizer.step()
        nowcaster()
        if step + 1 == checkpoint_at:
            state = {
                "model": model.state_dict(),
                "optimizer": optimizer.state_dict(),
                "nowcaster": nowcaster.state_dict(),
            }
            torch.save(state, path)
            del model, optimizer, nowcaster, state
            model, optimizer, nowcaster = build()  # a new process would start here
            state = torch.load(path, weights_only=True)
            model.load_state_dict(state["model"])
            optimizer.load_state_dict(state["optimizer"])
            nowcaster.load_state_dict(state["nowcaster"])
    return model, nowcaster


@pytest.mark.parametrize("lookahead", [False, True], ids=["line-search", "lookahead"])
# mid-period, right after a jump, off a snapshot, between the jump at step 30 and its look-ahead verdict
@pytest.mark.parametrize("checkpoint_at", [7, 10, 23, 31])
def test_a_resumed_run_makes_exactly_the_jumps_of_an_uninterrupted_one(tmp_path, checkpoint_at, lookahead):
    """With the look-ahead, the checkpoint after step 31 holds the step-30 jump awaiting its verdict."""
    plain_model, plain = _resumable_run(40, lookahead=lookahead)
    model, resumed = _resumable_run(40, checkpoint_at, tmp_path / "checkpoint.pt", lookahead=lookahead)
    for a, b in zip(plain_model.parameters(), model.parameters()):
        assert torch.equal(a, b)  # bit-identical: same jumps, same scales, same optimizer state
    outcomes = lambda n: [(j.call, j.outcome, j.scale, j.horizon) for j in n.stats.jumps]  # noqa: E731
    assert outcomes(resumed) == outcomes(plain) and len(outcomes(plain)) == 4
    assert plain.stats.accepted >= 1  # the run exercised an accepted jump, not only rollbacks
    judged = [j.call for j in resumed.stats.jumps if j.probe_lookahead is not None]
    assert judged == ([30] if lookahead else [])  # the look-ahead judged the jump across the checkpoint
    assert (resumed.stats.calls, resumed.stats.attempted) == (plain.stats.calls, plain.stats.attempted)


def test_load_state_dict_refuses_another_cadence_or_model():
    state = Nowcaster(_linear_model(), None, _bundle(), NowcastConfig(guard=False)).state_dict()
    other = Nowcaster(_linear_model(), None, _bundle(), NowcastConfig(guard=False, period=6))
    with pytest.raises(ConfigError, match="differs from this one in its cadence"):
        other.load_state_dict(state)
    model = nn.Sequential(nn.Linear(4, 3))
    with pytest.raises(ConfigError, match="differs from this one in its parameters"):
        Nowcaster(model, None, _bundle(), NowcastConfig(guard=False)).load_state_dict(state)
    with pytest.raises(ConfigError, match="state version"):
        other.load_state_dict({**state, "version": 99})


# --- overhead ------------------------------------------------------------------------------


def test_min_payoff_skips_jumps_whose_cost_cannot_pay():
    """A payoff no jump can reach (1e12 x its cost): the first jump runs and is timed, later ones
    are skipped; min_payoff=0 (the default) never skips."""
    nowcaster = Nowcaster(_linear_model(), None, _bundle(), NowcastConfig(guard=False, min_payoff=1e12))
    jumps = [nowcaster() for _ in range(15)]
    assert [j.call for j in jumps if j is not None] == [5]
    assert (nowcaster.stats.attempted, nowcaster.stats.skipped) == (1, 2)
    nowcaster = Nowcaster(_linear_model(), None, _bundle(), NowcastConfig(guard=False))
    assert sum(nowcaster() is not None for _ in range(15)) == 3 and nowcaster.stats.skipped == 0


def test_hook_with_step_cadence_and_the_nino_schedule(mnist1d):
    """8 steps per epoch, 2 epochs: a call every step, a snapshot every 2, a jump every 4 steps;
    max_calls filled in from the run's 16 steps."""
    from weightcast.train_predictor.predictors.nino import nino_horizon_schedule

    config = NowcastConfig(period=4, snapshot_every=2, horizon=9, horizon_schedule="nino")
    hook = NowcastHook(_bundle("no-jump", input_length=2, horizon=1), config, every_steps=1)
    train(_zoo_config(epochs=2), hooks=[hook], task=mnist1d)
    assert hook.nowcaster.config.max_calls == 16 and hook.stats.calls == 16
    assert [j.horizon for j in hook.stats.jumps] == nino_horizon_schedule(16, 4, 9)


def test_an_interrupted_snapshot_is_taken_at_the_next_call():
    """The snapshot of call 5, the call a jump is due at, is interrupted: call 6 takes it and
    makes the jump (it is not lost for the rest of the run)."""
    model = _linear_model()
    nowcaster = Nowcaster(model, None, _bundle(), NowcastConfig(guard=False))
    snapshot, calls = nowcaster._snapshot, []

    def interrupt_call_5(*args):  # the construction's snapshot was taken before the patch
        calls.append(1)
        if len(calls) == 5:
            raise KeyboardInterrupt
        snapshot(*args)

    nowcaster._snapshot = interrupt_call_5
    assert all(nowcaster() is None for _ in range(4))
    with pytest.raises(KeyboardInterrupt):
        nowcaster()
    jump = nowcaster()
    assert jump is not None and jump.call == 6 and jump.outcome == "accepted"
    assert [j is None for j in (nowcaster() for _ in range(5))] == [True] * 4 + [False]  # then every 5
