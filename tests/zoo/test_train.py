"""The one training loop: determinism, learning, hooks, divergence, and the optimizer, schedule,
augmentation and initialization registries it draws on."""

import math

import pytest
import torch

from weightcast.zoo.augment import AUGMENTATIONS
from weightcast.zoo.config import ConfigError, load_config
from weightcast.zoo.initializers import INITIALIZERS, initialize
from weightcast.zoo.models import create_model
from weightcast.zoo.optim import OPTIMIZERS, SCHEDULES, OptimizerConfig, ScheduleConfig, build_optimizer, build_schedule
from weightcast.zoo.tasks import get_task
from weightcast.zoo.train import Hook, TrainConfig, train


def _config(**overrides) -> TrainConfig:
    return load_config(TrainConfig, overrides=[f"{k}={v}" for k, v in overrides.items()])


def test_same_seed_same_history_and_weights():
    cfg = _config(arch="mlp", task="mnist1d", epochs=2, seed=3, augmentation="noise")
    a, b = train(cfg), train(cfg)
    strip = lambda h: [(r.epoch, r.train_loss, r.val_loss, r.val_metric, r.lr, r.step) for r in h.records]
    assert strip(a.history) == strip(b.history)
    for pa, pb in zip(a.model.parameters(), b.model.parameters()):
        assert torch.equal(pa, pb)
    c = train(_config(arch="mlp", task="mnist1d", epochs=2, seed=4, augmentation="noise"))
    assert strip(c.history) != strip(a.history)


@pytest.mark.parametrize("arch", ["mlp", "conv1d"])
def test_loss_decreases_on_mnist1d(arch):
    history = train(_config(arch=arch, task="mnist1d", epochs=4, **{"optimizer.lr": 0.003})).history
    train_losses = history.column("train_loss")[1:]
    assert train_losses[-1] < 0.8 * train_losses[0]
    assert history.records[-1].val_loss < history.records[0].val_loss
    assert history.records[-1].val_metric > history.records[0].val_metric + 0.1


def test_history_records_and_hooks():
    calls = {"start": 0, "step": 0, "epoch": [], "end": 0}

    class Counter(Hook):
        def on_train_start(self, state):
            calls["start"] += 1

        def on_step_end(self, state, loss):
            calls["step"] += 1
            assert loss.dim() == 0

        def on_epoch_end(self, state):
            calls["epoch"].append(state.epoch)
            state.stop = state.epoch == 2  # hooks can end training early

        def on_train_end(self, state):
            calls["end"] += 1

    cfg = _config(arch="mlp", task="mnist1d", epochs=5, batch_size=500)
    history = train(cfg, hooks=[Counter()]).history
    steps_per_epoch = len(get_task("mnist1d").x_train) // 500
    assert calls == {"start": 1, "step": 2 * steps_per_epoch, "epoch": [1, 2], "end": 1}
    assert history.column("epoch") == [0, 1, 2]
    assert history.column("step") == [0, steps_per_epoch, 2 * steps_per_epoch]
    assert history.records[0].train_loss is None
    times = history.column("wall_time")
    assert times == sorted(times) and history.metric_name == "accuracy"
    assert not history.diverged


def test_divergent_run_stops_and_is_flagged():
    history = train(_config(arch="mlp", task="mnist1d", epochs=5, **{"optimizer.name": "sgd", "optimizer.lr": 1e6})).history
    assert history.diverged
    assert len(history.records) < 6
    last = history.records[-1]
    assert not (math.isfinite(last.train_loss) and math.isfinite(last.val_loss))


def test_incompatible_augmentation_and_device_errors():
    with pytest.raises(ConfigError, match="augmentation 'flip' applies to .*image.* 'signal' inputs"):
        train(_config(arch="mlp", task="mnist1d", augmentation="flip", epochs=1))
    with pytest.raises(ConfigError, match="device must be"):
        _config(device="tpu")
    if not torch.cuda.is_available():
        with pytest.raises(ConfigError, match="CUDA is not available"):
            train(_config(device="cuda", epochs=1))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_trains_on_cuda():
    history = train(_config(arch="conv1d", task="mnist1d", epochs=2, device="cuda")).history
    assert history.records[-1].val_metric > history.records[0].val_metric


def test_schedules_exact_multipliers():
    model = torch.nn.Linear(2, 2)

    def lrs(name, steps=10, per_epoch=2, **kw):
        opt = build_optimizer(model.parameters(), OptimizerConfig(name="sgd", lr=1.0))
        sched = build_schedule(opt, ScheduleConfig(name=name, **kw), steps, per_epoch)
        out = []
        for _ in range(steps):
            out.append(opt.param_groups[0]["lr"])
            opt.step()
            sched.step()
        return out

    assert lrs("constant") == [1.0] * 10
    assert lrs("step", step_epochs=2, gamma=0.5) == [1.0] * 4 + [0.5] * 4 + [0.25] * 2
    cosine = lrs("cosine")
    assert cosine[0] == 1.0 and cosine[5] == pytest.approx(0.5) and cosine[-1] < 0.03
    warm = lrs("warmup-cosine", warmup_epochs=1)  # 2 warm-up steps: 0.5, 1.0, then cosine over 8
    assert warm[:3] == [0.5, 1.0, 1.0] and warm[6] == pytest.approx(0.5)
    assert set(SCHEDULES.names()) == {"constant", "step", "cosine", "warmup-cosine"}


@pytest.mark.parametrize("name", OPTIMIZERS.names())
def test_every_optimizer_takes_a_step(name):
    model = torch.nn.Linear(3, 1)
    before = model.weight.detach().clone()
    opt = build_optimizer(model.parameters(), OptimizerConfig(name=name, lr=0.1, weight_decay=0.01, nesterov=name == "sgd"))
    model(torch.ones(4, 3)).sum().backward()
    opt.step()
    assert not torch.equal(before, model.weight)


@pytest.mark.parametrize("name", AUGMENTATIONS.names())
def test_augmentations_keep_shape_and_are_seeded(name):
    kinds = AUGMENTATIONS.metadata(name)["inputs"]
    x = torch.randn(8, 1, 6, 6) if "image" in kinds else torch.randn(8, 1, 40)
    out1 = AUGMENTATIONS.get(name)(x, torch.Generator().manual_seed(0))
    out2 = AUGMENTATIONS.get(name)(x, torch.Generator().manual_seed(0))
    assert out1.shape == x.shape and torch.equal(out1, out2)
    assert torch.equal(out1, x) == (name == "none")


def test_initializations():
    spec = get_task("mnist1d").spec
    for name in INITIALIZERS.names():
        torch.manual_seed(0)
        model = initialize(create_model("mlp", spec), name)
        linear = next(m for m in model.modules() if isinstance(m, torch.nn.Linear))
        if name == "default":
            assert linear.bias.abs().sum() > 0
        else:
            assert torch.all(linear.bias == 0)
    torch.manual_seed(0)
    he = initialize(create_model("mlp", spec, width=512), "he")
    first = next(m for m in he.modules() if isinstance(m, torch.nn.Linear))
    assert first.weight.std().item() == pytest.approx(math.sqrt(2 / first.in_features), rel=0.05)
