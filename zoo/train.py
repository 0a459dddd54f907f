"""The one training loop of weightcast. `collect` records weights through its hooks, `eval` applies
predictors through them; no stage writes a loop of its own.

    history = train(TrainConfig(arch="mlp", task="mnist1d", epochs=5)).history
"""

import math
import time
from dataclasses import asdict, dataclass, field
from typing import Any, Optional, Sequence

import torch
from torch import nn

from weightcast.zoo.augment import AUGMENTATIONS, augmentation_inputs
from weightcast.zoo.config import ConfigError
from weightcast.zoo.initializers import INITIALIZERS, initialize
from weightcast.zoo.models import ARCHITECTURES, create_model
from weightcast.zoo.optim import OptimizerConfig, ScheduleConfig, build_optimizer, build_schedule
from weightcast.zoo.tasks import TASKS, Task, get_task

__all__ = [
    "TrainConfig",
    "EpochRecord",
    "History",
    "TrainState",
    "Hook",
    "TrainResult",
    "train",
    "evaluate",
    "resolve_device",
    "build_model",
]


@dataclass
class TrainConfig:
    """One training run of a zoo member: everything that determines its weight trajectory."""

    arch: str = "mlp"
    arch_kwargs: dict[str, Any] = field(default_factory=dict)
    task: str = "mnist1d"
    data_dir: Optional[str] = None  # for file-based tasks (mnist, fashion-mnist, cifar10, cifar100)
    optimizer: OptimizerConfig = field(default_factory=OptimizerConfig)
    schedule: ScheduleConfig = field(default_factory=ScheduleConfig)
    augmentation: str = "none"
    init: str = "default"
    batch_size: int = 128
    epochs: int = 10
    seed: int = 0
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    eval_batch_size: int = 1024

    def __post_init__(self) -> None:
        ARCHITECTURES.check(self.arch)
        TASKS.check(self.task)
        AUGMENTATIONS.check(self.augmentation)
        INITIALIZERS.check(self.init)
        for name in ("batch_size", "epochs", "eval_batch_size"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name} must be >= 1, got {getattr(self, name)}")
        if not (self.device in ("auto", "cpu", "cuda") or self.device.startswith("cuda:")):
            raise ConfigError(f"device must be auto, cpu, cuda or cuda:N, got {self.device!r}")


@dataclass
class EpochRecord:
    epoch: int  # 0 = before training
    train_loss: Optional[float]  # mean over the epoch's batches; None at epoch 0
    val_loss: float
    val_metric: float
    lr: float  # the lr of the epoch's last step
    step: int  # optimizer steps taken so far
    wall_time: float  # seconds since training started, evaluation and hooks included


@dataclass
class History:
    metric_name: str
    records: list[EpochRecord] = field(default_factory=list)
    diverged: bool = False  # stopped early on a non-finite loss

    @property
    def best_metric(self) -> float:
        return max(r.val_metric for r in self.records if math.isfinite(r.val_metric))

    def column(self, name: str) -> list[Any]:
        return [getattr(r, name) for r in self.records]

    def to_dicts(self) -> list[dict[str, Any]]:
        return [asdict(r) for r in self.records]


@dataclass
class TrainState:
    """What hooks see (and may change: the model's weights, `stop`)."""

    config: TrainConfig
    task: Task
    model: nn.Module
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler
    device: torch.device
    history: History
    epoch: int = 0
    step: int = 0
    stop: bool = False  # a hook sets this to end training after the current epoch


class Hook:
    """Callbacks of the training loop; subclass and override what you need."""

    def on_train_start(self, state: TrainState) -> None: ...

    def on_step_end(self, state: TrainState, loss: torch.Tensor) -> None: ...

    def on_epoch_end(self, state: TrainState) -> None: ...

    def on_train_end(self, state: TrainState) -> None: ...


@dataclass
class TrainResult:
    history: History
    model: nn.Module
    task: Task


def resolve_device(device: str) -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError(f"device {device!r} asked for, but CUDA is not available here; use cpu or auto")
    return torch.device(device)


def build_model(config: TrainConfig, task: Task) -> nn.Module:
    """The run's model with its seeded initialization (same seed, same weights)."""
    torch.manual_seed(config.seed)
    model = create_model(config.arch, task.spec, **config.arch_kwargs)
    return initialize(model, config.init)


def train(config: TrainConfig, hooks: Sequence[Hook] = (), task: Task | None = None) -> TrainResult:
    """Train `config` and return its per-epoch history (epoch 0 = the initial model).

    Deterministic for a seed on CPU. A non-finite training or validation loss ends the run with
    `history.diverged = True`; the epoch that diverged is recorded."""
    task = task or get_task(config.task, config.data_dir)
    if task.spec.input_kind not in augmentation_inputs(config.augmentation):
        raise ConfigError(
            f"augmentation {config.augmentation!r} applies to {augmentation_inputs(config.augmentation)} "
            f"inputs, but task {task.name!r} has {task.spec.input_kind!r} inputs"
        )
    device = resolve_device(config.device)
    model = build_model(config, task).to(device)
    augment = AUGMENTATIONS.get(config.augmentation)
    generator = torch.Generator().manual_seed(config.seed)  # shuffling and augmentation

    x_train, y_train = task.x_train.to(device), task.y_train.to(device)
    n_train = len(x_train)
    batch_size = min(config.batch_size, n_train)
    steps_per_epoch = n_train // batch_size  # drop the last partial batch: BN needs > 1 sample
    optimizer = build_optimizer(model.parameters(), config.optimizer)
    scheduler = build_schedule(optimizer, config.schedule, config.epochs * steps_per_epoch, steps_per_epoch)
    history = History(metric_name=task.metric_name)
    state = TrainState(config, task, model, optimizer, scheduler, device, history)

    start = time.perf_counter()
    val_loss, val_metric = evaluate(model, task, device, config.eval_batch_size)
    history.records.append(
        EpochRecord(0, None, val_loss, val_metric, optimizer.param_groups[0]["lr"], 0, time.perf_counter() - start)
    )
    for hook in hooks:
        hook.on_train_start(state)
    for epoch in range(1, config.epochs + 1):
        state.epoch = epoch
        model.train()
        order = torch.randperm(n_train, generator=generator)[: steps_per_epoch * batch_size]
        loss_sum = torch.zeros((), device=device)  # summed on device: no host sync per step
        lr = optimizer.param_groups[0]["lr"]
        for batch in order.view(steps_per_epoch, batch_size).to(device):
            x = augment(x_train[batch], generator)
            loss = task.loss(model(x), y_train[batch])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            lr = optimizer.param_groups[0]["lr"]
            scheduler.step()
            state.step += 1
            loss_sum += loss.detach()
            for hook in hooks:
                hook.on_step_end(state, loss.detach())
        train_loss = float(loss_sum) / steps_per_epoch
        val_loss, val_metric = evaluate(model, task, device, config.eval_batch_size)
        history.records.append(
            EpochRecord(epoch, train_loss, val_loss, val_metric, lr, state.step, time.perf_counter() - start)
        )
        if not (math.isfinite(train_loss) and math.isfinite(val_loss)):
            history.diverged = True
            break
        for hook in hooks:
            hook.on_epoch_end(state)
        history.records[-1].wall_time = time.perf_counter() - start  # hooks' time counts
        if state.stop:
            break
    for hook in hooks:
        hook.on_train_end(state)
    return TrainResult(history, model, task)


@torch.no_grad()
def evaluate(model: nn.Module, task: Task, device: torch.device, batch_size: int = 1024) -> tuple[float, float]:
    """(mean loss, metric) of `model` on the task's validation set."""
    was_training = model.training
    model.eval()
    n = len(task.x_val)
    loss_sum, metric_sum, outputs = 0.0, 0.0, []
    for begin in range(0, n, batch_size):
        x = task.x_val[begin : begin + batch_size].to(device)
        y = task.y_val[begin : begin + batch_size].to(device)
        out = model(x)
        loss_sum += float(task.loss(out, y)) * len(x)
        if task.spec.objective == "regression":
            outputs.append(out.cpu())  # R^2 does not decompose over batches
        else:
            metric_sum += task.metric(out, y) * len(x)  # accuracy does
    model.train(was_training)
    metric = task.metric(torch.cat(outputs), task.y_val) if outputs else metric_sum / n
    return loss_sum / n, metric
