"""The batched population trainer (zoo.population): a member trained in a group takes the same steps
as alone (`zoo.train.train`), to float32 rounding, for Adam, AdamW and SGD with momentum, with and
without BatchNorm; a diverging member stops alone; hooks see each member as a run."""

import dataclasses
import math

import pytest
import torch

from weightcast.zoo.optim import OptimizerConfig, ScheduleConfig, build_optimizer
from weightcast.zoo.population import (
    NotBatchable,
    StackedOptimizer,
    check_batchable,
    fit_group_size,
    group_key,
    train_population,
)
from weightcast.zoo.tasks import get_task
from weightcast.zoo.train import Hook, TrainConfig, train

U = 2.0**-24  # float32 unit roundoff
ADAM_EPS = 1e-8

# (arch, arch_kwargs, task): an MLP, a small convnet, and a BatchNorm ResNet (narrowed to stay fast)
ARCHS = [
    ("mlp", {}, "mnist1d"),
    ("nino-cnn", {}, "shapes"),
    ("resnet20", {"width": 0.25}, "shapes"),
]
OPTIMIZERS = ["adam", "adamw", "sgd"]


def small_task(name, n_train, n_val=128):
    task = get_task(name)
    return dataclasses.replace(
        task, x_train=task.x_train[:n_train], y_train=task.y_train[:n_train],
        x_val=task.x_val[:n_val], y_val=task.y_val[:n_val],
    )  # fmt: skip


def member_configs(arch, kwargs, task, optimizer, epochs, batch_size=64):
    """Three members that differ in everything a member may: seed, init, augmentation, lr, weight
    decay, momentum/betas and schedule."""
    lrs = {"adam": [1e-3, 3e-3, 1e-2], "adamw": [1e-3, 3e-3, 1e-2], "sgd": [1e-2, 3e-2, 1e-1]}[optimizer]
    augment = ["none", "shift", "noise"] if get_task(task).spec.input_kind != "tabular" else ["none"] * 3
    return [
        TrainConfig(
            arch=arch, arch_kwargs=kwargs, task=task, epochs=epochs, seed=seed, batch_size=batch_size,
            init=["default", "he", "default"][seed], augmentation=augment[seed], device="cpu",
            optimizer=OptimizerConfig(
                name=optimizer, lr=lrs[seed], weight_decay=[0.0, 1e-2, 1e-4][seed],
                momentum=[0.9, 0.5, 0.0][seed], beta1=[0.9, 0.8, 0.9][seed], beta2=[0.999, 0.99, 0.999][seed],
            ),
            schedule=ScheduleConfig(name=["constant", "cosine", "warmup-cosine"][seed], warmup_epochs=1),
        )  # fmt: skip
        for seed in range(3)
    ]


class Capture(Hook):
    """Weights (and gradients, where the loop leaves them) after every step; calls of each callback."""

    def __init__(self, perturb=0.0):
        self.perturb = perturb
        self.weights, self.grads, self.calls = [], [], []

    def on_train_start(self, state):
        self.calls.append("start")
        self.initial = [p.detach().clone() for p in state.model.parameters()]
        if self.perturb:
            with torch.no_grad():
                for p in state.model.parameters():
                    p.mul_(1 + self.perturb)

    def on_step_end(self, state, loss):
        self.weights.append([p.detach().clone() for p in state.model.parameters()])
        self.grads.append([None if p.grad is None else p.grad.clone() for p in state.model.parameters()])
        self.buffers = [b.detach().clone() for b in state.model.buffers()]

    def on_epoch_end(self, state):
        self.calls.append(f"epoch{state.epoch}")

    def on_train_end(self, state):
        self.calls.append("end")


@pytest.mark.parametrize("name", ["adam", "adamw", "sgd", "sgd-nesterov"])
def test_stacked_optimizer_matches_torch_optim(name):
    """Same gradients in, same weights out: each member as torch.optim updates it alone."""
    torch.manual_seed(0)
    settings = [(1e-3, 0.0, 0.9, 0.9, 0.999), (3e-2, 1e-2, 0.5, 0.8, 0.99), (0.1, 1e-4, 0.1, 0.5, 0.9)]
    opts = [
        OptimizerConfig(name=name.split("-")[0], lr=lr, weight_decay=wd, momentum=m, beta1=b1, beta2=b2,
                        nesterov=name.endswith("nesterov"))
        for lr, wd, m, b1, b2 in settings
    ]
    shapes = [(5, 4), (4,), (3, 2, 3, 3)]
    stacked = [torch.randn(len(opts), *s, requires_grad=True) for s in shapes]
    alone = [[torch.nn.Parameter(p[k].detach().clone()) for p in stacked] for k in range(len(opts))]
    torch_opts = [build_optimizer(params, o) for params, o in zip(alone, opts)]
    stacked_opt = StackedOptimizer(opts, stacked)
    for _ in range(5):
        # a scale per member, from 1 down to 1e-9 (below Adam's eps)
        grads = [torch.randn_like(p) * 10.0 ** torch.randint(-9, 1, (len(opts),) + (1,) * (p.dim() - 1))
                 for p in stacked]  # fmt: skip
        for p, g in zip(stacked, grads):
            p.grad = g.clone()
        stacked_opt.step(stacked, torch.tensor([o.lr for o in opts], dtype=torch.float64))
        for k, (params, opt) in enumerate(zip(alone, torch_opts)):
            for p, g in zip(params, grads):
                p.grad = g[k].clone()
            opt.step()
    # Same operations on the same values, except where a vectorized kernel rounds differently from
    # a scalar one (e.g. a fused multiply-add): a few units in the last place of each weight.
    for k, params in enumerate(alone):
        for p, s in zip(params, stacked):
            want = p.detach()
            torch.testing.assert_close(s[k].detach(), want, rtol=4 * U, atol=4 * U * float(want.abs().max()))
        if name.startswith("adam"):
            for i, p in enumerate(params):
                for slot in ("exp_avg", "exp_avg_sq"):
                    want = torch_opts[k].state[p][slot]
                    torch.testing.assert_close(stacked_opt.slots[slot][i][k], want, rtol=4 * U,
                                               atol=4 * U * float(want.abs().max()))


@pytest.mark.parametrize("optimizer", OPTIMIZERS)
@pytest.mark.parametrize("arch,kwargs,task_name", ARCHS)
def test_one_step_matches_alone(arch, kwargs, task_name, optimizer):
    """One optimizer step in a group = the same step alone, to float32 rounding."""
    task = small_task(task_name, n_train=64)  # one batch: one step per epoch
    configs = member_configs(arch, kwargs, task_name, optimizer, epochs=1)
    grouped, alone = [[Capture()] for _ in configs], [Capture() for _ in configs]
    train_population(configs, grouped, task=task)
    for config, hook in zip(configs, alone):
        train(config, [hook], task=task)
    # n: the longest reduction of a gradient (batch x input positions). Summed in another order (a
    # batched kernel), a sum of n float32 terms moves by at most ~n*u times their magnitude, for
    # which the tensor's largest gradient stands in: dg = n * u * max|g|.
    n = 64 * math.prod(task.spec.input_shape[1:] or (1,))
    for config, (hook_b,), hook_s in zip(configs, grouped, alone):
        opt = config.optimizer
        for w0, wb, ws, g in zip(hook_s.initial, hook_b.weights[0], hook_s.weights[0], hook_s.grads[0]):
            g = g + opt.weight_decay * w0 if opt.name == "adam" else g
            dg = n * U * float(g.abs().max())
            if opt.name == "sgd":  # first step: w - lr * g
                tol = opt.lr * dg + 2 * U * ws.abs()
            else:  # first step: w - lr * g / (|g| + eps), whose slope in g is lr * eps / (|g| + eps)^2;
                # the update (|.| <= lr) itself goes through ~8 roundings: 16 u lr
                slope = opt.lr * ADAM_EPS / (g.abs() + ADAM_EPS) ** 2
                tol = (slope * dg).clamp(max=2 * opt.lr) + 16 * U * opt.lr + 2 * U * ws.abs()
            excess = float(((wb - ws).abs() - tol).max())
            assert excess <= 0, f"member {config.seed}: a weight is {excess:.2g} beyond the tolerance"
        for bb, bs in zip(hook_b.buffers, hook_s.buffers):  # BatchNorm running stats and counts
            torch.testing.assert_close(bb, bs, rtol=n * U, atol=n * U)


@pytest.mark.parametrize("optimizer", OPTIMIZERS)
@pytest.mark.parametrize("arch,kwargs,task_name", ARCHS)
def test_short_run_history_within_rounding_sensitivity(arch, kwargs, task_name, optimizer):
    """A short run in a group keeps its history: 3 epochs x 4 steps.

    Tolerance: a group computes the same run with different float32 rounding, and how far rounding
    differences grow in T steps depends on the run (little for an MLP; a BatchNorm ResNet at a high
    lr amplifies them ~3x per step). So the yardstick is the run's own sensitivity: the same run
    alone with every initial weight moved by about one unit in the last place (w * (1 + 2u): 1 + u
    is 1 in float32). The group may differ
    from the run alone by at most 10x that (the perturbation is one rounding of the weights; a step
    in a group rounds gradients, moments and weights a few times, each as large), plus the rounding
    of the loss itself (8 u |loss|, summed over batches)."""
    task = small_task(task_name, n_train=256)
    configs = member_configs(arch, kwargs, task_name, optimizer, epochs=3)
    results = train_population(configs, task=task)
    for config, result in zip(configs, results):
        alone = train(config, task=task).history
        perturbed = train(config, [Capture(perturb=2 * U)], task=task).history
        assert len(result.history.records) == len(alone.records) == 4
        assert result.history.column("lr") == alone.column("lr")
        assert result.history.column("step") == alone.column("step")
        for column in ("val_loss", "val_metric", "train_loss"):
            got, want, moved = (h.column(column)[1:] for h in (result.history, alone, perturbed))
            sensitivity = max(abs(a - b) for a, b in zip(moved, want))
            for epoch, (a, b) in enumerate(zip(got, want), 1):
                tol = 10 * sensitivity + 8 * U * abs(b) * 4
                if column == "val_metric":  # a step function: the perturbed run's may not move at all
                    tol = max(tol, 4 / len(task.y_val))  # 4 of 128 examples with near-tied top logits
                where = f"member {config.seed} epoch {epoch} {column}"
                assert abs(a - b) <= tol, f"{where}: {a} vs {b}, tol {tol:.2g}"
        assert result.history.records[0].val_loss == pytest.approx(alone.records[0].val_loss, rel=8 * U)


def test_diverging_member_stops_alone():
    """A member whose loss turns NaN is recorded as diverged at that epoch's end and leaves the
    group; the others finish as if it were not there."""
    task = small_task("mnist1d", n_train=256)
    configs = member_configs("mlp", {}, "mnist1d", "sgd", epochs=3)
    configs[1] = dataclasses.replace(configs[1], optimizer=OptimizerConfig(name="sgd", lr=1e12))
    hooks = [[Capture()] for _ in configs]
    results = train_population(configs, hooks, task=task)
    bad = results[1].history
    assert bad.diverged and len(bad.records) == 2  # epoch 0 and the epoch that diverged
    assert not math.isfinite(bad.records[-1].train_loss)
    assert hooks[1][0].calls == ["start", "end"]  # no epoch end for the diverged epoch, as `train`
    assert train(configs[1], task=task).history.diverged
    for k in (0, 2):
        alone = train(configs[k], task=task).history
        assert not results[k].history.diverged
        assert hooks[k][0].calls == ["start", "epoch1", "epoch2", "epoch3", "end"]
        got, want = results[k].history.column("val_loss"), alone.column("val_loss")
        assert got == pytest.approx(want, rel=1e-5)


class StopAfterFirstEpoch(Hook):
    def on_epoch_end(self, state):
        state.stop = True


class ZeroFirstLayer(Hook):
    """Writes weights in place at epoch ends (as the nowcaster does) and resets optimizer state."""

    def on_epoch_end(self, state):
        with torch.no_grad():
            first = next(state.model.parameters())
            first.mul_(0.5)
            for value in state.optimizer.state[first].values():
                value.zero_()


def test_hooks_see_each_member_as_a_run():
    """Per-member models/optimizers alias the group: a hook's in-place writes change that member
    exactly as they change a run alone; `stop` ends only that member; members with different epochs
    leave when done."""
    task = small_task("shapes", n_train=128)
    configs = member_configs("nino-cnn", {}, "shapes", "adam", epochs=3)
    configs[2] = dataclasses.replace(configs[2], epochs=2)
    hooks = [[ZeroFirstLayer()], [StopAfterFirstEpoch()], []]
    results = train_population(configs, hooks, task=task)
    assert [len(r.history.records) for r in results] == [4, 2, 3]
    for config, member_hooks, result in zip(configs, hooks, results):
        alone = train(config, member_hooks, task=task)
        assert result.history.column("val_loss") == pytest.approx(alone.history.column("val_loss"), rel=1e-4)
        for (name, a), b in zip(result.model.named_parameters(), alone.model.parameters()):
            torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5, msg=name)


def test_not_batchable_runs_are_named():
    with pytest.raises(NotBatchable, match="gru"):
        check_batchable(TrainConfig(arch="gru", task="mnist1d"))
    with pytest.raises(NotBatchable, match="rmsprop"):
        check_batchable(TrainConfig(optimizer=OptimizerConfig(name="rmsprop")))
    with pytest.raises(NotBatchable, match="differ"):
        train_population([TrainConfig(batch_size=64), TrainConfig(batch_size=128)])
    a, b = TrainConfig(seed=1, init="he", augmentation="noise"), TrainConfig(seed=2)
    assert group_key(a) == group_key(b)  # seeds, inits, augmentations, lrs may differ within a group


def test_group_size_follows_memory():
    config = TrainConfig(arch="mlp", task="mnist1d", device="cpu")
    assert fit_group_size(config, 16) == 16
    small, large = fit_group_size(config, 0, free_bytes=10**8), fit_group_size(config, 0, free_bytes=10**10)
    assert 1 <= small < large and fit_group_size(config, 8, free_bytes=10**10) == 8


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_group_on_cuda_matches_cpu():
    task = small_task("shapes", n_train=256)
    cpu = member_configs("resnet20", {"width": 0.25}, "shapes", "sgd", epochs=1)
    gpu = [dataclasses.replace(c, device="cuda") for c in cpu]
    got, want = train_population(gpu, task=task), train_population(cpu, task=task)
    for a, b in zip(got, want):
        assert a.history.column("step") == b.history.column("step")
        assert a.history.records[-1].val_loss == pytest.approx(b.history.records[-1].val_loss, rel=0.05)
