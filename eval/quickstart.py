"""`weightcast quickstart` (eval stage's second command): the whole pipeline, zoo <- collect <-
train_predictor <- eval, at debug size, on a CPU, offline, in a few minutes. It runs each stage's
debug config through the stage's public Python function, with every output under one folder:

    <out>/collect/zoo        a small zoo on MNIST-1D             configs/collect/debug.yaml
    <out>/collect/heldout    runs of two held-out tasks           configs/collect/debug-heldout.yaml
    <out>/train_predictor    WNN and LFD-2 bundles fitted on the zoo  configs/train_predictor/debug.yaml
    <out>/eval               their forecast error on the held-out runs and their speed-up on two
                             held-out tasks against plain training and the linear fit
                                                                  configs/eval/debug.yaml

then prints the speed-up table and the path of the report. Each stage resumes: a second call
reuses what is finished. Overrides go to one stage by prefix:

    weightcast quickstart --out runs/quickstart collect.population.0.seed=[0] \
        train_predictor.steps=30 eval.speedup.seeds=[0]

`--tracking wandb` tracks every stage on wandb (`tracking.name=wandb` for each; `WANDB_MODE=offline`
works without an account), all in one wandb group, `quickstart` (`<stage>.tracking.group=...`
changes a stage's): the lineage graph then runs collection -> bundles -> evaluation.

The eval config's bundles that live in the train-predictor debug config's out_dir, and its forecast
collection, are moved to this run's own folders.
"""

from __future__ import annotations

import argparse
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

from weightcast.collect import load_collect_config, run_collection
from weightcast.eval.cli import EvalResult, run_eval
from weightcast.eval.config import EvalConfig, load_eval_config
from weightcast.eval.report import speedup_table
from weightcast.train_predictor.config import load_train_predictor_config
from weightcast.train_predictor.train import train_predictors
from weightcast.cli import Command, run_command
from weightcast.configs import CONFIGS_DIR
from weightcast.zoo.config import ConfigError

__all__ = ["STAGES", "QuickstartResult", "quickstart", "COMMAND"]

STAGES = ("collect", "heldout", "train_predictor", "eval")  # override prefixes, in pipeline order


@dataclass
class QuickstartResult:
    out_dir: Path
    eval: EvalResult
    seconds: dict[str, float] = field(default_factory=dict)  # stage -> wall-clock seconds


def quickstart(
    out_dir: str | Path = "runs/quickstart",
    *,
    configs_dir: str | Path = CONFIGS_DIR,
    overrides: Sequence[str] = (),
    echo: Callable[[str], None] = print,
    tracking: str = "none",
) -> QuickstartResult:
    """Run the debug pipeline into `out_dir` (see the module docstring). `overrides` are
    `<stage>.key=value` with a stage of `STAGES`; `tracking` is every stage's `tracking.name`."""
    out = Path(out_dir)
    # One wandb group for the whole pipeline; the stage's own overrides come after, so they win.
    keys = (f"tracking.name={tracking}", "tracking.group=quickstart")
    shared = [f"{stage}.{key}" for stage in STAGES for key in keys]
    # Every config is loaded before anything runs, so that a bad override fails first.
    configs = _load_configs(_debug_config_paths(Path(configs_dir)), out, _route([*shared, *overrides]))
    runs: dict[str, Callable[[], object]] = {
        "collect": lambda: run_collection(configs["collect"], progress=False, echo=echo),
        "heldout": lambda: run_collection(configs["heldout"], progress=False, echo=echo),
        "train_predictor": lambda: train_predictors(configs["train_predictor"], echo=echo),
        "eval": lambda: run_eval(configs["eval"], echo=echo),
    }
    results, seconds = {}, {}
    for name, run in runs.items():
        echo(f"== quickstart: {name}")
        start = time.perf_counter()
        results[name] = run()
        seconds[name] = time.perf_counter() - start
    return QuickstartResult(out, results["eval"], seconds)


def _debug_config_paths(configs: Path) -> dict[str, Path]:
    """Stage -> its debug config under `configs` (the heldout stage: collect/debug-heldout.yaml)."""
    paths = {name: configs / name / "debug.yaml" for name in ("collect", "train_predictor", "eval")}
    paths["heldout"] = configs / "collect" / "debug-heldout.yaml"
    missing = [str(p) for p in paths.values() if not p.is_file()]
    if missing:
        raise ConfigError(
            f"the quick start reads the stages' debug configs, not found: {', '.join(missing)}; give "
            "--configs DIR (a folder with collect/, train_predictor/ and eval/), or reinstall weightcast "
            "(its configs are package data)"
        )
    return paths


def _load_configs(paths: dict[str, Path], out: Path, by_stage: dict[str, list[str]]) -> dict[str, Any]:
    """Each stage's debug config with its outputs under `out` and its `<stage>.` overrides."""
    zoo, heldout, fitted = out / "collect" / "zoo", out / "collect" / "heldout", out / "train_predictor"
    train_overrides = [f"collection={zoo}", f"out_dir={fitted}", "progress=false"]
    return {
        "collect": load_collect_config(
            paths["collect"], ["name=quickstart-zoo", f"out_dir={zoo}", *by_stage["collect"]]
        ),
        "heldout": load_collect_config(
            paths["heldout"], ["name=quickstart-heldout", f"out_dir={heldout}", *by_stage["heldout"]]
        ),
        "train_predictor": load_train_predictor_config(
            paths["train_predictor"], ["name=quickstart", *train_overrides, *by_stage["train_predictor"]]
        ),
        "eval": _eval_config(paths, out, heldout, fitted, by_stage["eval"]),
    }


def _eval_config(
    paths: dict[str, Path], out: Path, heldout: Path, fitted: Path, overrides: Sequence[str]
) -> EvalConfig:
    """The eval debug config reading this run's held-out collection and, for its bundles that live
    in the train-predictor debug config's out_dir, this run's bundles."""
    debug_bundles = Path(load_train_predictor_config(paths["train_predictor"]).out_dir)
    methods = load_eval_config(paths["eval"], overrides).methods
    moved = [
        f"methods.{name}.bundle={fitted / Path(m.bundle).name}"
        for name, m in methods.items()
        if m.bundle is not None and Path(m.bundle).parent == debug_bundles
    ]
    own = ["name=quickstart", f"out_dir={out / 'eval'}", f"forecast.collection={heldout}", *moved]
    return load_eval_config(paths["eval"], [*own, *overrides])


def _route(overrides: Sequence[str]) -> dict[str, list[str]]:
    """`stage.key=value` -> {stage: ["key=value"]}."""
    routed: dict[str, list[str]] = {stage: [] for stage in STAGES}
    for override in overrides:
        stage, dot, rest = override.partition(".")
        if not dot or stage not in routed or "=" not in rest:
            raise ConfigError(
                f"quickstart overrides look like <stage>.key=value with a stage of {', '.join(STAGES)}; "
                f"got {override!r}"
            )
        routed[stage].append(rest)
    return routed


def _quickstart(args: argparse.Namespace) -> int:
    start = time.perf_counter()
    result = quickstart(args.out, configs_dir=args.configs, overrides=args.overrides, tracking=args.tracking)
    stages = ", ".join(f"{name} {s:.0f} s" for name, s in result.seconds.items())
    if result.eval.summary is not None:
        print(speedup_table(result.eval.summary))
    print(f"quickstart finished in {time.perf_counter() - start:.0f} s ({stages})")
    print(f"report: {result.eval.report}")
    return 0


def _configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--out", default="runs/quickstart", help="folder for everything (default: runs/quickstart)"
    )
    parser.add_argument("--configs", default=str(CONFIGS_DIR), help="folder of the stages' debug configs")
    parser.add_argument(
        "--tracking", default="none", choices=["none", "wandb"],
        help="track every stage (tracking.name) in one wandb group, quickstart (default: none)",
    )
    parser.add_argument(
        "overrides", nargs="*", metavar="stage.key=value",
        help=f"config overrides of one stage ({', '.join(STAGES)})",
    )
    parser.set_defaults(func=_quickstart)


COMMAND = Command(
    "quickstart",
    "run the whole pipeline at debug size on a CPU (collect, train WNN and LFD-2, evaluate zero-shot)",
    _configure,
)

if __name__ == "__main__":
    sys.exit(run_command(COMMAND))
