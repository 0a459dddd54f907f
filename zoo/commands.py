"""`weightcast zoo`: list the registries, or train one zoo member and print its curve."""

import argparse
import json
from dataclasses import dataclass, field

from safetensors.torch import save_file

from weightcast.zoo.augment import AUGMENTATIONS
from weightcast.cli import Command, add_config_arguments
from weightcast.zoo.config import load_config
from weightcast.zoo.initializers import INITIALIZERS
from weightcast.zoo.models import ARCHITECTURES, count_parameters, create_model
from weightcast.zoo.optim import OPTIMIZERS, SCHEDULES
from weightcast.zoo.rundir import prepare_run_dir, write_jsonl
from weightcast.zoo.tasks import TASKS, get_task
from weightcast.zoo.train import EpochRecord, Hook, TrainConfig, TrainState, train

__all__ = ["TrainRunConfig", "COMMAND", "registry_listing"]


@dataclass
class TrainRunConfig:
    """Config of `weightcast zoo train`: one run of the training loop and the folder it writes."""

    train: TrainConfig = field(default_factory=TrainConfig)
    out_dir: str = "runs/zoo-train"


def registry_listing() -> dict:
    """Everything the zoo can build, as plain data (architectures with their parameter counts on
    their default task)."""
    architectures = []
    for name in ARCHITECTURES:
        meta = ARCHITECTURES.metadata(name)
        spec = get_task(meta["default_task"]).spec
        architectures.append(
            {
                "name": name,
                "inputs": list(meta["inputs"]),
                "default_task": meta["default_task"],
                "parameters": count_parameters(create_model(name, spec)),
            }
        )
    tasks = [{"name": n, **{k: v for k, v in TASKS.metadata(n).items()}} for n in TASKS]
    return {
        "architectures": architectures,
        "tasks": tasks,
        "optimizers": [{"name": n, **OPTIMIZERS.metadata(n)} for n in OPTIMIZERS],
        "schedules": [{"name": n, **SCHEDULES.metadata(n)} for n in SCHEDULES],
        "augmentations": [{"name": n, "inputs": list(AUGMENTATIONS.metadata(n)["inputs"])} for n in AUGMENTATIONS],
        "initializations": [{"name": n, **INITIALIZERS.metadata(n)} for n in INITIALIZERS],
    }


def _list(args: argparse.Namespace) -> int:
    listing = registry_listing()
    if args.json:
        print(json.dumps(listing, indent=2))
        return 0
    print("architectures (parameters on the default task):")
    for a in listing["architectures"]:
        print(f"  {a['name']:<20} {a['parameters']:>10,}  on {a['default_task']:<14} inputs: {', '.join(a['inputs'])}")
    print("tasks:")
    for t in listing["tasks"]:
        data = "  (reads data_dir)" if t.get("needs_data_dir") else ""
        print(f"  {t['name']:<20} {t['modality']:<10} split={t['split']:<8} inputs: {t['input_kind']}{data}")
    for kind in ("optimizers", "schedules", "augmentations", "initializations"):
        print(f"{kind}: {', '.join(e['name'] for e in listing[kind])}")
    return 0


class _PrintAndLog(Hook):
    """Prints each epoch as a table row and appends it to metrics.jsonl."""

    def __init__(self, path):
        self.path = path

    def on_train_start(self, state: TrainState) -> None:
        self.path.write_text("")
        print(f"{'epoch':>5} {'train_loss':>11} {'val_loss':>10} {'val_' + state.history.metric_name:>12} {'lr':>9} {'seconds':>8}")
        self._emit(state.history.records[0])

    def on_epoch_end(self, state: TrainState) -> None:
        self._emit(state.history.records[-1])

    def _emit(self, r: EpochRecord) -> None:
        train_loss = "-" if r.train_loss is None else f"{r.train_loss:.4f}"
        print(f"{r.epoch:>5} {train_loss:>11} {r.val_loss:>10.4f} {r.val_metric:>12.4f} {r.lr:>9.2e} {r.wall_time:>8.2f}", flush=True)
        with open(self.path, "a") as f:
            f.write(json.dumps(r.__dict__) + "\n")


def _train(args: argparse.Namespace) -> int:
    from weightcast.zoo.plots import plot_history, sparkline  # matplotlib only when plotting

    config = load_config(TrainRunConfig, args.config, args.overrides)
    out = prepare_run_dir(config.out_dir, config)
    t = config.train
    print(f"training {t.arch} on {t.task} with {t.optimizer.name} (lr {t.optimizer.lr}) for {t.epochs} epochs -> {out}")
    result = train(t, hooks=[_PrintAndLog(out / "metrics.jsonl")])
    history = result.history
    write_jsonl(out / "metrics.jsonl", history.to_dicts())  # the complete record, diverged epoch included
    save_file({k: v.detach().cpu().contiguous() for k, v in result.model.state_dict().items()}, out / "model.safetensors")
    plot_history(history, out / "curve.png", title=f"{t.arch} on {t.task}")
    metrics = history.column("val_metric")
    print(f"val {history.metric_name}: {sparkline(metrics)}  {metrics[0]:.4f} -> {metrics[-1]:.4f} (best {history.best_metric:.4f})")
    if history.diverged:
        print("the run diverged (non-finite loss); training stopped early")
    print(f"wrote {out}/config.yaml, metrics.jsonl, model.safetensors, curve.png")
    return 1 if history.diverged else 0


def _configure(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="zoo_command", metavar="SUBCOMMAND", required=True)
    p_list = sub.add_parser("list", help="print the registries (architectures, tasks, optimizers, schedules, ...)")
    p_list.add_argument("--json", action="store_true", help="print JSON instead of a table")
    p_list.set_defaults(func=_list)
    p_train = sub.add_parser("train", help="train one zoo member and print its curve")
    add_config_arguments(p_train, "zoo")
    p_train.set_defaults(func=_train)


COMMAND = Command("zoo", "the model zoo: list the registries, train one member", _configure)
