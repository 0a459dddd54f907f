"""The one training loop of weightcast. `collect` records weights through its hooks, `eval` applies
predictors through them; no stage writes a loop of its own.

    history = train(TrainConfig(arch="mlp", task="mnist1d", epochs=5)).history
    history = train(TrainConfig(arch="causal-transformer", task="stdlib-chars-small",
                                max_steps=300, eval_every_steps=50)).history  # a step budget

Budget: `epochs` full epochs, or with `max_steps > 0` exactly that many optimizer steps (the last
epoch may be partial; `epochs` is then ignored), the lr schedule spanning the budget either way.
Validation: after every epoch, or with `eval_every_steps > 0` every that many optimizer steps; the
last step of the budget is always validated. The History holds one record per validation, each
with its epoch (the one in progress) and its optimizer step, record 0 being the initial model.
`on_epoch_end` hooks run after each full epoch only.
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
    "steps_per_epoch",
    "total_steps",
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
    max_steps: int = 0  # > 0: a budget of this many optimizer steps instead of `epochs` epochs
    eval_every_steps: int = 0  # > 0: validate every this many optimizer steps; 0: after each epoch
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
        for name in ("max_steps", "eval_every_steps"):
            if getattr(self, name) < 0:
                raise ConfigError(f"{name} must be >= 0 (0: epoch-based), got {getattr(self, name)}")
        if not (self.device in ("auto", "cpu", "cuda") or self.device.startswith("cuda:")):
            raise ConfigError(f"device must be auto, cpu, cuda or cuda:N, got {self.device!r}")


@dataclass
class EpochRecord:
    """One validation of the run: after an epoch, or every `eval_every_steps` optimizer steps."""

    epoch: int  # 0 = before training; else the epoch in progress (the one just ended, epoch-based)
    train_loss: Optional[float]  # mean over the batches since the previous record; None at record 0
    val_loss: float
    val_metric: float
    lr: float  # the lr of the last step before the record
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
    stop: bool = False  # a hook sets this to end training after the current epoch (or validation)


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


def steps_per_epoch(config: TrainConfig, task: Task) -> int:
    """Optimizer steps of one epoch: full batches only (the last partial one is dropped: BN needs
    more than one sample)."""
    return len(task.x_train) // min(config.batch_size, len(task.x_train))


def total_steps(config: TrainConfig, task: Task) -> int:
    """Optimizer steps of the whole run: `max_steps`, or `epochs` full epochs when it is 0."""
    return config.max_steps or config.epochs * steps_per_epoch(config, task)


def train(config: TrainConfig, hooks: Sequence[Hook] = (), task: Task | None = None) -> TrainResult:
    """Train `config` and return its history of validations (record 0 = the initial model; see the
    module docstring for the budget and when it validates).

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
    per_epoch = steps_per_epoch(config, task)
    budget = total_steps(config, task)
    optimizer = build_optimizer(model.parameters(), config.optimizer)
    scheduler = build_schedule(optimizer, config.schedule, budget, per_epoch)
    history = History(metric_name=task.metric_name)
    state = TrainState(config, task, model, optimizer, scheduler, device, history)

    start = time.perf_counter()
    val_loss, val_metric = evaluate(model, task, device, config.eval_batch_size)
    history.records.append(
        EpochRecord(0, None, val_loss, val_metric, optimizer.param_groups[0]["lr"], 0, time.perf_counter() - start)
    )
    for hook in hooks:
        hook.on_train_start(state)
    loss_sum = torch.zeros((), device=device)  # summed on device since the last record: no sync per step
    lr = optimizer.param_groups[0]["lr"]

    def validate() -> bool:
        """Append a record for the steps since the last one; False if the run diverged."""
        nonlocal loss_sum
        steps = state.step - history.records[-1].step
        train_loss = float(loss_sum) / steps
        loss_sum = torch.zeros((), device=device)
        val_loss, val_metric = evaluate(model, task, device, config.eval_batch_size)
        seconds = time.perf_counter() - start
        record = EpochRecord(state.epoch, train_loss, val_loss, val_metric, lr, state.step, seconds)
        history.records.append(record)
        history.diverged = not (math.isfinite(train_loss) and math.isfinite(val_loss))
        return not history.diverged

    for epoch in range(1, math.ceil(budget / per_epoch) + 1):
        state.epoch = epoch
        model.train()
        order = torch.randperm(n_train, generator=generator)[: per_epoch * batch_size]
        steps = min(per_epoch, budget - state.step)  # a step budget's last epoch may be partial
        for batch in order.view(per_epoch, batch_size)[:steps].to(device):
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
            every = config.eval_every_steps
            due = every and (state.step % every == 0 or state.step == budget)
            if due and (not validate() or state.stop):
                break
        if history.diverged or (config.eval_every_steps and state.stop):
            break
        if not config.eval_every_steps and not validate():
            break
        if steps == per_epoch:
            for hook in hooks:
                hook.on_epoch_end(state)
            if history.records[-1].step == state.step:
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
