"""Batched population training (zoo): K members of one architecture and task trained together as one
model with a leading member dimension, for the small networks a zoo is made of, whose matrices are too
small to keep a CPU (let alone a GPU) busy one member at a time.

    results = train_population([TrainConfig(arch="mlp", seed=s, ...) for s in range(16)])

The stacking is `torch.func`: `stack_module_state` + `functional_call` + `vmap` (its convolution rule
folds the member dimension into the channels, `groups=K`, so a hand-written grouped convolution would
run the same kernel). Every member keeps what makes it a run of `zoo.train.train`:
- its seed and initialization: each member is built by `zoo.train.build_model`, then stacked;
- its data order and augmentation draws: its own generator, drawn in the order `train` draws it;
- its optimizer: Adam, AdamW and SGD (momentum, Nesterov) are applied as `torch.optim` defines them,
  vectorized over members, with per-member lr, weight decay, momentum and betas (tensors broadcast
  over the member dimension) and per-member state;
- its lr schedule (a per-member multiplier table) and its number of epochs;
- its BatchNorm buffers: batched buffers are updated in place by `vmap`'s batch-norm rule, member by
  member, exactly as `nn.BatchNorm` does.
Dropout (random numbers inside the model) is not supported: no zoo architecture uses it, and `vmap`
would draw different numbers than a run alone. Architectures with other modules (recurrent,
attention) raise `NotBatchable`: they run alone.

Hooks see each member as a run: a per-member `TrainState` whose `model` is the member's own
`nn.Module`, its parameters and buffers aliasing the member's slice of the stacked tensors (a hook
that writes weights in place, as the recorder reads them and the nowcaster writes them, sees and
changes the member), and whose `optimizer` is a `torch.optim` instance of the member's settings whose
state tensors alias the stacked state. Hooks must write in place (`copy_`, `mul_`, `zero_`): a
rebound `param.data` or a replaced state dict would detach the view from the group. The view's lr
is brought up to date before each hook call; setting it has no effect (the schedule owns the lr). A member whose loss turns non-finite is recorded as diverged at
the end of that epoch and leaves the group, as does one whose epochs are done or whose hook set `stop`;
the others go on.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field, fields
from typing import Any, Callable, Optional, Sequence

import torch
from torch import nn
from torch.func import functional_call, stack_module_state, vmap

from weightcast.zoo.augment import AUGMENTATIONS, augmentation_inputs
from weightcast.zoo.config import ConfigError
from weightcast.zoo.models import create_model
from weightcast.zoo.optim import SCHEDULES, OptimizerConfig, build_optimizer, build_schedule
from weightcast.zoo.tasks import Task, get_task
from weightcast.zoo.train import (
    EpochRecord,
    History,
    Hook,
    TrainConfig,
    TrainResult,
    TrainState,
    build_model,
    resolve_device,
    steps_per_epoch,
    total_steps,
)

__all__ = [
    "NotBatchable",
    "BATCHABLE_OPTIMIZERS",
    "group_key",
    "check_batchable",
    "member_bytes",
    "fit_group_size",
    "train_population",
    "StackedOptimizer",
]

BATCHABLE_OPTIMIZERS = ("adam", "adamw", "sgd")
_ADAM_EPS = 1e-8  # torch.optim.Adam's default; the zoo does not change it

# Modules a batchable model may hold: those with parameters or buffers, and parameter-free ones
# (their forward draws no random numbers). Custom container modules are fine: only modules that own
# parameters/buffers directly, or have no children, are checked.
_PARAM_MODULES = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.BatchNorm1d, nn.BatchNorm2d)
_NORMS = (nn.BatchNorm1d, nn.BatchNorm2d)
_FREE_MODULES = (
    nn.ReLU, nn.ReLU6, nn.GELU, nn.Tanh, nn.Sigmoid, nn.SiLU, nn.LeakyReLU, nn.Identity, nn.Flatten,
    nn.MaxPool1d, nn.MaxPool2d, nn.AvgPool1d, nn.AvgPool2d, nn.AdaptiveAvgPool1d, nn.AdaptiveAvgPool2d,
    nn.Sequential, nn.ModuleList,
)  # fmt: skip
# TrainConfig fields this trainer honours; a field added later (with a non-default value) makes a
# config not batchable rather than silently ignored.
_KNOWN_FIELDS = {
    "arch", "arch_kwargs", "task", "data_dir", "optimizer", "schedule", "augmentation", "init",
    "batch_size", "epochs", "seed", "device", "eval_batch_size",
}  # fmt: skip


class NotBatchable(ConfigError):
    """A run (or a set of runs) that `train_population` cannot train together: run it alone with
    `zoo.train.train`. The message says why."""


def group_key(config: TrainConfig, task: Task | None = None) -> tuple[Any, ...]:
    """What members of one group must share; raises `NotBatchable` if `config` cannot be batched at
    all. Seeds, inits, augmentations, optimizer hyper-parameters, schedules and epochs may differ."""
    check_batchable(config, task)
    return (
        config.arch,
        repr(sorted(config.arch_kwargs.items())),
        config.task,
        config.data_dir,
        config.batch_size,
        config.optimizer.name,
        config.optimizer.nesterov if config.optimizer.name == "sgd" else False,
        str(resolve_device(config.device)),
        config.eval_batch_size,
    )


def check_batchable(config: TrainConfig, task: Task | None = None) -> None:
    """Raise `NotBatchable` (with the reason) unless `config` can train in a group."""
    defaults = TrainConfig()
    for f in fields(config):
        if f.name not in _KNOWN_FIELDS and getattr(config, f.name) != getattr(defaults, f.name):
            raise NotBatchable(f"TrainConfig.{f.name}={getattr(config, f.name)!r} is not supported by the "
                               "population trainer; the run trains alone")
    if config.optimizer.name not in BATCHABLE_OPTIMIZERS:
        raise NotBatchable(
            f"optimizer {config.optimizer.name!r} is not batchable "
            f"(batchable: {', '.join(BATCHABLE_OPTIMIZERS)}); the run trains alone"
        )
    task = task or get_task(config.task, config.data_dir)
    reason = _module_reason(config, task)
    if reason:
        raise NotBatchable(f"architecture {config.arch!r} is not batchable ({reason}); the run trains alone")


def member_bytes(config: TrainConfig, task: Task | None = None) -> int:
    """Estimated device memory of one member in a group (bytes): parameters, gradients and two
    optimizer slots, plus twice the activations of a training batch (forward outputs kept for the
    backward pass, and their gradients)."""
    task = task or get_task(config.task, config.data_dir)
    model = build_model(config, task)
    elements = [0]

    def count(module: nn.Module, inputs: Any, output: Any) -> None:
        if torch.is_tensor(output):
            elements[0] += output.numel()

    leaves = [m for m in model.modules() if not list(m.children())]
    handles = [m.register_forward_hook(count) for m in leaves]
    try:
        with torch.no_grad():
            model(task.x_train[:1])
    finally:
        for handle in handles:
            handle.remove()
    params = sum(p.numel() for p in model.parameters())
    batch = min(config.batch_size, len(task.x_train))
    return 4 * (4 * params + 2 * elements[0] * batch + batch * math.prod(task.spec.input_shape))


def fit_group_size(config: TrainConfig, requested: int, task: Task | None = None,
                   free_bytes: int | None = None) -> int:
    """How many members of `config`'s kind to train at once: `requested` on a CPU (0: 16); on a
    GPU, as many as half its free memory holds by `member_bytes` (at most `requested` if > 0)."""
    device = resolve_device(config.device)
    if device.type != "cuda" and free_bytes is None:
        return requested or 16
    if free_bytes is None:
        free_bytes = torch.cuda.mem_get_info(device)[0]
    fits = max(1, int(0.5 * free_bytes // member_bytes(config, task)))
    return min(fits, requested) if requested > 0 else fits


def train_population(
    configs: Sequence[TrainConfig],
    hooks: Optional[Sequence[Sequence[Hook]]] = None,
    task: Task | None = None,
) -> list[TrainResult]:
    """Train `configs` (members sharing a `group_key`) together; returns one `TrainResult` per member,
    in order, each as `zoo.train.train` would return it. `hooks[i]` are member i's hooks."""
    if not configs:
        return []
    hooks = [list(h) for h in hooks] if hooks is not None else [[] for _ in configs]
    if len(hooks) != len(configs):
        raise ConfigError(
            f"train_population: {len(configs)} configs but {len(hooks)} hook lists; give one per member"
        )
    task = task or get_task(configs[0].task, configs[0].data_dir)
    keys = {group_key(c, task) for c in configs}
    if len(keys) > 1:
        raise NotBatchable(f"members differ in what a group must share (architecture, task, batch size, "
                           f"optimizer, device); got {len(keys)} different groups: {sorted(map(str, keys))}")
    for c in configs:
        if task.spec.input_kind not in augmentation_inputs(c.augmentation):
            raise ConfigError(
                f"augmentation {c.augmentation!r} applies to {augmentation_inputs(c.augmentation)} "
                f"inputs, but task {task.name!r} has {task.spec.input_kind!r} inputs"
            )
    return _Population(list(configs), hooks, task).run()


@dataclass
class _Member:
    """One run of the group: its config, hooks, generator and the TrainState its hooks see."""

    index: int  # position in the caller's list
    config: TrainConfig
    hooks: list[Hook]
    model: nn.Module  # the member's own module; parameters/buffers alias its slice of the stacks
    state: TrainState
    generator: torch.Generator
    augment: Callable[[torch.Tensor, torch.Generator], torch.Tensor]
    multipliers: list[float]  # lr multiplier of every optimizer step
    step_hooks: list[Hook] = field(default_factory=list)
    done: bool = False


class _Population:
    def __init__(self, configs: list[TrainConfig], hooks: list[list[Hook]], task: Task):
        first = configs[0]
        self.task = task
        self.device = resolve_device(first.device)
        self.x_train, self.y_train = task.x_train.to(self.device), task.y_train.to(self.device)
        self.batch_size = min(first.batch_size, len(self.x_train))
        self.steps_per_epoch = steps_per_epoch(first, task)  # full batches only, as `train`
        self.eval_batch_size = first.eval_batch_size
        self.members: list[_Member] = []
        self._finished: list[_Member] = []  # members that left the group, in the order they left
        models = []
        for i, (config, member_hooks) in enumerate(zip(configs, hooks)):
            model = build_model(config, task).to(self.device)
            total = total_steps(config, task)  # epochs x steps_per_epoch: no step budget in a group
            multiplier = SCHEDULES.get(config.schedule.name)(config.schedule, total, self.steps_per_epoch)
            optimizer = build_optimizer(model.parameters(), config.optimizer)  # the member's view
            scheduler = build_schedule(optimizer, config.schedule, total, self.steps_per_epoch)
            history = History(metric_name=task.metric_name)
            state = TrainState(config, task, model, optimizer, scheduler, self.device, history)
            step_hooks = [h for h in member_hooks if type(h).on_step_end is not Hook.on_step_end]
            self.members.append(
                _Member(i, config, member_hooks, model, state, torch.Generator().manual_seed(config.seed),
                        AUGMENTATIONS.get(config.augmentation), [multiplier(s) for s in range(total)],
                        step_hooks)
            )
            models.append(model)
        # A stateless copy of the architecture on the meta device: `functional_call` runs it on the stacks.
        self.base = build_model(first, task).to("meta")
        params, buffers = stack_module_state(models)
        self.params = {name: p.detach().requires_grad_() for name, p in params.items()}  # (K, *shape)
        self.buffers = dict(buffers)  # (K, *shape), updated in place by batch norm
        self.optimizer = StackedOptimizer([m.config.optimizer for m in self.members], [*self.params.values()])
        self._alias()
        self._train_loss = vmap(self._member_loss)
        self._eval_out = vmap(self._member_forward, in_dims=(0, 0, None))
        self._eval_loss = vmap(task.loss, in_dims=(0, None))

    def _member_forward(self, params: dict, buffers: dict, x: torch.Tensor) -> torch.Tensor:
        return functional_call(self.base, (params, buffers), (x,))

    def _member_loss(self, params: dict, buffers: dict, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return self.task.loss(functional_call(self.base, (params, buffers), (x,)), y)

    def run(self) -> list[TrainResult]:
        start = time.perf_counter()
        losses, metrics = self._evaluate()
        for k, m in enumerate(self.members):
            m.state.history.records.append(
                EpochRecord(0, None, losses[k], metrics[k], self._lr(m, 0), 0, time.perf_counter() - start)
            )
            self._sync_view(m, 0)
            for hook in m.hooks:
                hook.on_train_start(m.state)
        epoch, step = 0, 0
        while self.members:
            epoch += 1
            self.base.train()
            used = self.steps_per_epoch * self.batch_size
            orders = []
            for m in self.members:
                m.state.epoch = epoch
                orders.append(torch.randperm(len(self.x_train), generator=m.generator)[:used])
            # (K, steps_per_epoch, batch_size) example ids of this epoch
            orders = torch.stack(orders).view(-1, self.steps_per_epoch, self.batch_size).to(self.device)
            loss_sum = torch.zeros(len(self.members), device=self.device)  # (K,), summed on device as `train`
            for s in range(self.steps_per_epoch):
                lrs = [m.multipliers[step] * m.config.optimizer.lr for m in self.members]
                losses_t = self._step(orders[:, s], lrs)
                step += 1
                loss_sum += losses_t
                for k, m in enumerate(self.members):
                    m.state.step = step
                    if m.step_hooks:
                        self._sync_view(m, step)
                        for hook in m.step_hooks:
                            hook.on_step_end(m.state, losses_t[k])
            last_lrs = lrs
            train_losses = loss_sum.tolist()  # float(loss_sum) of each member
            val_losses, val_metrics = self._evaluate()
            for k, m in enumerate(self.members):
                train_loss = train_losses[k] / self.steps_per_epoch
                seconds = time.perf_counter() - start
                m.state.history.records.append(
                    EpochRecord(epoch, train_loss, val_losses[k], val_metrics[k], last_lrs[k], step, seconds)
                )
                if not (math.isfinite(train_loss) and math.isfinite(val_losses[k])):
                    m.state.history.diverged = True
                    m.done = True
                    continue
                self._sync_view(m, step)
                for hook in m.hooks:
                    hook.on_epoch_end(m.state)
                m.state.history.records[-1].wall_time = time.perf_counter() - start  # hooks' time counts
                m.done = m.state.stop or epoch >= m.config.epochs
            leaving = [m for m in self.members if m.done]
            if leaving:
                self._release(leaving)
                for m in leaving:
                    for hook in m.hooks:
                        hook.on_train_end(m.state)
        self._finished.sort(key=lambda m: m.index)
        return [TrainResult(m.state.history, m.model, self.task) for m in self._finished]

    def _step(self, ids: torch.Tensor, lrs: list[float]) -> torch.Tensor:
        """One optimizer step of every member on its (K, B) batch `ids`; returns the (K,) detached losses."""
        x = self.x_train[ids]  # (K, B, *input_shape)
        if any(m.config.augmentation != "none" for m in self.members):
            x = torch.stack([m.augment(x[k], m.generator) for k, m in enumerate(self.members)])
        losses = self._train_loss(self.params, self.buffers, x, self.y_train[ids])  # (K,)
        for p in self.params.values():
            p.grad = None
        losses.sum().backward()  # members are independent: d(sum)/d(member k's weights) = its own gradient
        self.optimizer.step(list(self.params.values()), torch.tensor(lrs, dtype=torch.float64))
        return losses.detach()

    @torch.no_grad()
    def _evaluate(self) -> tuple[list[float], list[float]]:
        """Per-member (mean loss, metric) on the validation set, computed as `zoo.train.evaluate` does."""
        self.base.eval()
        task, k = self.task, len(self.members)
        n = len(task.x_val)
        loss_sums, metric_sums = [0.0] * k, [0.0] * k
        outputs: list[list[torch.Tensor]] = [[] for _ in range(k)]
        for begin in range(0, n, self.eval_batch_size):
            x = task.x_val[begin : begin + self.eval_batch_size].to(self.device)
            y = task.y_val[begin : begin + self.eval_batch_size].to(self.device)
            out = self._eval_out(self.params, self.buffers, x)  # (K, b, *output)
            for i, loss in enumerate(self._eval_loss(out, y).tolist()):
                loss_sums[i] += loss * len(x)
            for i in range(k):
                if task.spec.objective == "regression":
                    outputs[i].append(out[i].cpu())  # R^2 does not decompose over batches
                else:
                    metric_sums[i] += task.metric(out[i], y) * len(x)
        self.base.train()
        metrics = [
            task.metric(torch.cat(outputs[i]), task.y_val) if outputs[i] else metric_sums[i] / n
            for i in range(k)
        ]
        return [s / n for s in loss_sums], metrics

    def _lr(self, m: _Member, step: int) -> float:
        return m.config.optimizer.lr * m.multipliers[min(step, len(m.multipliers) - 1)]

    def _sync_view(self, m: _Member, step: int) -> None:
        """Bring the member's optimizer/scheduler view to `step` (its lr; its state aliases the stacks)."""
        lr = self._lr(m, step)
        m.state.optimizer.param_groups[0]["lr"] = lr
        m.state.scheduler.last_epoch = step
        m.state.scheduler._last_lr = [lr]

    def _alias(self) -> None:
        """Point every member's module (and optimizer view) at its slice of the stacks."""
        for k, m in enumerate(self.members):
            for name, p in m.model.named_parameters():
                p.data = self.params[name].detach()[k]
            for name, b in self.buffers.items():
                module_name, _, leaf = name.rpartition(".")
                m.model.get_submodule(module_name)._buffers[leaf] = b[k]
            view_params = list(m.model.parameters())
            m.state.optimizer.state.clear()
            for i, p in enumerate(view_params):
                m.state.optimizer.state[p] = self.optimizer.member_state(i, k)

    def _release(self, leaving: list[_Member]) -> None:
        """Give leaving members their own copy of their weights and drop them from the stacks."""
        for m in leaving:
            with torch.no_grad():
                for p in m.model.parameters():
                    p.data = p.data.clone()
                for module in m.model.modules():
                    for leaf, b in module._buffers.items():
                        if b is not None:
                            module._buffers[leaf] = b.clone()
            m.state.optimizer.state.clear()
            self._finished.append(m)
        keep_ids = [k for k, m in enumerate(self.members) if not m.done]
        self.members = [self.members[k] for k in keep_ids]
        if not self.members:
            return
        keep = torch.tensor(keep_ids, device=self.device)
        self.params = {n: p.detach()[keep].requires_grad_() for n, p in self.params.items()}
        self.buffers = {n: b[keep] for n, b in self.buffers.items()}
        self.optimizer.keep(keep_ids)
        self._alias()


class StackedOptimizer:
    """Adam, AdamW or SGD over stacked (K, *shape) parameters, as `torch.optim`'s single-tensor
    (CPU default) implementation computes it, with per-member hyper-parameters: scalars are computed
    per member in float64 as torch computes its Python-float scalars, then cast to float32 like the
    kernels cast them, and applied in the kernels' order of operations.

        opt = StackedOptimizer([c.optimizer for c in configs], stacked_params)
        opt.step(stacked_params, lr)  # lr: (K,) float64; gradients in each parameter's .grad"""

    def __init__(self, opts: list[OptimizerConfig], params: list[torch.Tensor]):
        kinds = {(o.name, o.nesterov if o.name == "sgd" else False) for o in opts}
        if len(kinds) != 1 or opts[0].name not in BATCHABLE_OPTIMIZERS:
            raise NotBatchable(f"a stacked optimizer needs one of {BATCHABLE_OPTIMIZERS} for every member, "
                               f"got {sorted({o.name for o in opts})}")
        self.kind = opts[0].name
        self.nesterov = opts[0].nesterov
        f64 = lambda values: torch.tensor(values, dtype=torch.float64)  # noqa: E731
        self.weight_decay = f64([o.weight_decay for o in opts])
        self.beta1, self.beta2 = f64([o.beta1 for o in opts]), f64([o.beta2 for o in opts])
        self.momentum = f64([o.momentum for o in opts])
        # Each parameter of each member counts its steps, as torch.optim does (a hook may reset one):
        # (P, K), float32 as torch keeps `step`.
        self.steps = torch.zeros(len(params), len(opts), dtype=torch.float32)
        self.count = 0  # steps taken by the group (SGD's first step initializes its momentum buffers)
        slot_names = ("momentum_buffer",) if self.kind == "sgd" else ("exp_avg", "exp_avg_sq")
        self.slots = {name: [torch.zeros_like(p).detach() for p in params] for name in slot_names}

    def member_state(self, i: int, k: int) -> dict[str, torch.Tensor]:
        """Member k's torch.optim state of parameter i, as views of the stacks."""
        state = {name: slots[i][k] for name, slots in self.slots.items()}
        if self.kind != "sgd":
            state["step"] = self.steps[i, k]
        return state

    def keep(self, keep_ids: list[int]) -> None:
        keep = torch.tensor(keep_ids)
        for name in ("weight_decay", "beta1", "beta2", "momentum"):
            setattr(self, name, getattr(self, name)[keep])
        self.steps = self.steps[:, keep]
        self.slots = {name: [s[keep.to(s.device)] for s in slots] for name, slots in self.slots.items()}

    @torch.no_grad()
    def step(self, params: list[torch.Tensor], lr: torch.Tensor) -> None:
        """One step; `lr` is the (K,) float64 lr of each member at this step."""
        device = params[0].device
        first = self.count == 0  # members run in lockstep: the first step is everyone's
        self.count += 1
        self.steps += 1

        def coef(values: torch.Tensor) -> torch.Tensor:  # (K,) float64 -> float32 on the device
            return values.to(device=device, dtype=torch.float32)

        any_wd = bool((self.weight_decay != 0).any())
        wd = coef(self.weight_decay)
        if self.kind == "sgd":
            neg_lr, momentum = coef(-lr), coef(self.momentum)
            for p, buf in zip(params, self.slots["momentum_buffer"]):
                shape = (-1,) + (1,) * (p.dim() - 1)
                grad = p.grad
                if any_wd:
                    grad = grad + wd.view(shape) * p  # grad.add(param, alpha=weight_decay)
                if first:
                    buf.copy_(grad)  # torch.clone(grad)
                else:
                    buf.mul_(momentum.view(shape)).add_(grad)
                grad = grad + momentum.view(shape) * buf if self.nesterov else buf
                p.add_(neg_lr.view(shape) * grad)  # param.add_(grad, alpha=-lr)
            return
        step = self.steps.double()  # (P, K)
        bias_correction1 = 1 - self.beta1**step
        bias_correction2 = 1 - self.beta2**step
        neg_step_sizes = coef(-(lr / bias_correction1))  # (P, K)
        bc2_sqrts = coef(bias_correction2**0.5)
        one_minus_beta1, beta2, one_minus_beta2 = coef(1 - self.beta1), coef(self.beta2), coef(1 - self.beta2)
        decay = coef(1 - lr * self.weight_decay)
        for i, p in enumerate(params):
            exp_avg, exp_avg_sq = self.slots["exp_avg"][i], self.slots["exp_avg_sq"][i]
            shape = (-1,) + (1,) * (p.dim() - 1)
            neg_step_size, bc2_sqrt = neg_step_sizes[i], bc2_sqrts[i]
            grad = p.grad
            if any_wd:
                if self.kind == "adamw":
                    p.mul_(decay.view(shape))  # param.mul_(1 - lr * weight_decay)
                else:
                    grad = grad + wd.view(shape) * p
            exp_avg.lerp_(grad, one_minus_beta1.view(shape))
            exp_avg_sq.mul_(beta2.view(shape)).add_(one_minus_beta2.view(shape) * grad * grad)  # addcmul_
            denom = (exp_avg_sq.sqrt() / bc2_sqrt.view(shape)).add_(_ADAM_EPS)
            p.add_(neg_step_size.view(shape) * exp_avg / denom)  # addcdiv_: self + (value * t1) / t2


_MODULE_REASONS: dict[tuple[str, str, str, Optional[str]], str] = {}


def _module_reason(config: TrainConfig, task: Task) -> str:
    """Why `config.arch` cannot be stacked ('' if it can): a module not known to be batchable."""
    key = (config.arch, repr(sorted(config.arch_kwargs.items())), task.name, config.data_dir)
    if key not in _MODULE_REASONS:
        model = create_model(config.arch, task.spec, **config.arch_kwargs)
        _MODULE_REASONS[key] = next(filter(None, (_reason(n, m) for n, m in model.named_modules())), "")
    return _MODULE_REASONS[key]


def _reason(name: str, module: nn.Module) -> str:
    owns = any(True for _ in (*module.parameters(recurse=False), *module.buffers(recurse=False)))
    if isinstance(module, nn.Dropout):
        return f"module {name} is a Dropout: its masks would differ from a run alone" if module.p > 0 else ""
    if owns and not isinstance(module, _PARAM_MODULES):
        return f"module {name or 'model'} is a {type(module).__name__}"
    if not owns and not any(True for _ in module.children()) and not isinstance(module, _FREE_MODULES):
        return f"module {name} is a {type(module).__name__}"
    if isinstance(module, _NORMS) and (module.momentum is None or not module.track_running_stats):
        return f"module {name} is a BatchNorm with a cumulative average or without running stats"
    return ""
