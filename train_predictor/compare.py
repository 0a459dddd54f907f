"""Compare predictor bundles on a train-predictor config's held-out runs (train_predictor stage):
any bundles (trained here, imported from peers, shipped), each beside no-jump and the line fit on
the same windows at the same horizon, per layer type.

    python -m weightcast.train_predictor.compare --config configs/train_predictor/steps.yaml \
        --bundle wnn-authors=runs/imported/wnn-authors --bundle nino-mlp-authors=runs/imported/nino-mlp \
        --bundle wnn=runs/train_predictor/steps/wnn --horizon 5 --json compare.json [key.sub=value ...]

`--bundle NAME=SOURCE` (repeatable; NAME defaults to SOURCE) takes anything `load_bundle` opens:
`shipped:<kind>`, a bundle folder, a Hub repository id. The config (with its `key.sub=value`
overrides) is read exactly as `weightcast train-predictor` reads it, and the validation set is
made by the same functions (`train.held_out_runs`, `train.layer_types_to_fit`,
`train.validation_set`, `fit.evaluate`):

- the same collection, run selection (split, statuses) and held-out runs (`val_by`,
  `val_fraction`, `val_holdout`, `seed`); the JSON records a hash of the validation run IDs, the
  one train-predictor's checkpoints are fingerprinted with;
- the same window cutting (`val_windows_per_history`, `max_val_windows`, `seed`) at the geometry
  (bundle's input_length, (h,)), where h is `--horizon` or else the bundle's own horizon. A
  window's (time, scalar) draws depend only on its span input_length + h, so bundles of one
  input_length are scored on identical windows at one horizon, and a bundle trained by this
  config, scored at its own horizon, gets exactly the validation MAE train-predictor reported;
- the error of the prediction at h: a multi-step predictor (LFD-2, nino-mlp with a K-row head)
  is scored on the row for h, which must be one of its horizons; no-jump and the line fit are
  built for (input_length, h) and scored on the same windows.

Per-tensor predictors (`per_tensor = True`, NiNo's nino-mlp) standardize a window by the mean and
std of its whole parameter tensor. Validation windows carry no tensor ids, so, exactly as
train-predictor's validation does (`fit.evaluate`), each batch of up to 65,536 windows of one
layer type (drawn from many tensors of the held-out runs) is standardized as ONE tensor. A peer's
checkpoint trained with true per-tensor statistics is thus scored slightly off its training
distribution. Note also that a NiNo head row counts context spacings, here recorded snapshots.

A layer type a bundle has no predictor of its own for is served by its fallback (the table says
which), as at run time. Output: a Markdown table (MAE in raw weight units, ratio to no-jump) on
stdout, and with `--json FILE` every number (MAE and MSE of each method).
"""

from __future__ import annotations

import argparse
import hashlib
import shlex
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

from weightcast.cli import Command, add_config_arguments, run_command
from weightcast.zoo.config import ConfigError
from weightcast.zoo.rundir import write_json_atomic
from weightcast.zoo.train import resolve_device

from weightcast.train_predictor.bundle import MissingPredictorError, PredictorBundle, load_bundle
from weightcast.train_predictor.config import TrainPredictorConfig, load_train_predictor_config
from weightcast.train_predictor.data import Windows, WindowSpec, open_collection
from weightcast.train_predictor.fit import evaluate
from weightcast.train_predictor.train import BASELINES, held_out_runs, layer_types_to_fit, validation_set

__all__ = ["Comparison", "compare_bundles", "comparison_table", "parse_bundle_args", "COMMAND"]


@dataclass
class Comparison:
    """The scores of some bundles on one config's held-out runs."""

    collection: str
    validation_runs: int
    validation_runs_hash: str  # sha1 of the sorted run IDs, first 16 hex digits (as train-predictor's)
    horizon: int | None  # the --horizon override (None: each bundle at its own horizon)
    # one per (layer type, bundle): bundle, source, kind, layer_type, served_by, input_length,
    # horizon, windows, methods {name: {"mae", "mse"}} (the bundle under its NAME, then BASELINES)
    rows: list[dict[str, Any]] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)  # "<bundle>/<layer type>: why"

    def to_json(self) -> dict[str, Any]:
        return {
            "collection": self.collection,
            "validation_runs": self.validation_runs,
            "validation_runs_hash": self.validation_runs_hash,
            "horizon": self.horizon,
            "rows": self.rows,
            "skipped": self.skipped,
        }


def compare_bundles(
    config: TrainPredictorConfig,
    bundles: Mapping[str, PredictorBundle],
    *,
    horizon: int | None = None,
    echo: Callable[[str], None] = lambda message: None,
) -> Comparison:
    """Score `bundles` (name -> bundle) on the held-out runs of `config`, each at `horizon` (default
    its own) beside `BASELINES` on the same windows, per layer type (see the module docstring)."""
    if not bundles:
        raise ConfigError(
            "no bundle to compare; pass --bundle NAME=SOURCE (shipped:<kind>, a bundle folder, a Hub id)"
        )
    for name, bundle in bundles.items():
        if name in BASELINES:
            raise ConfigError(f"bundle name {name!r} is a baseline's; name it otherwise, e.g. {name}-bundle=...")
        _check_horizon(name, bundle, horizon)
    source = open_collection(config.collection)
    _, _, val_ids = held_out_runs(config, source)
    layer_types = layer_types_to_fit(config, source)
    device = resolve_device(config.device)
    result = Comparison(
        collection=source.name,
        validation_runs=len(val_ids),
        validation_runs_hash=hashlib.sha1(",".join(sorted(val_ids)).encode()).hexdigest()[:16],
        horizon=horizon,
    )
    echo(
        f"collection {source.name!r}: {len(val_ids)} validation runs held out by {config.val_by} "
        f"(seed {config.seed}); layer types {', '.join(layer_types)}"
    )
    cache: dict[tuple[str, WindowSpec], tuple[Windows, dict[str, dict[str, float]]]] = {}
    for layer_type in layer_types:
        for name, bundle in bundles.items():
            h = bundle.horizon if horizon is None else horizon
            spec = WindowSpec(bundle.input_length, (h,))
            try:
                served_by = bundle.resolve(layer_type)
            except MissingPredictorError:
                result.skipped.append(f"{name}/{layer_type}: the bundle has no predictor or fallback for it")
                continue
            if (layer_type, spec) not in cache:  # one pass over the held-out shards per geometry
                echo(f"{layer_type}: cutting validation windows of {spec.input_length} inputs, horizon {h}")
                cache[layer_type, spec] = validation_set(config, source, layer_type, val_ids, spec)
            windows, baselines = cache[layer_type, spec]
            if not len(windows):
                result.skipped.append(f"{name}/{layer_type}: no held-out history has {spec.span} snapshots")
                continue
            predictor = bundle.predictors[served_by].to(device)
            own = evaluate(predictor, windows, horizons=spec.horizons, horizon=h)
            result.rows.append({
                "bundle": name,
                "source": bundle.source,
                "kind": bundle.kind,
                "layer_type": layer_type,
                "served_by": served_by,
                "input_length": bundle.input_length,
                "horizon": h,
                "windows": len(windows),
                "methods": {
                    name: _errors(own), **{m: _errors(baselines[m]) for m in BASELINES if m in baselines}
                },
            })
    return result


def comparison_table(comparison: Comparison) -> str:
    """A Markdown table: per layer type and bundle, its validation MAE, no-jump's and the line fit's
    on the same windows, and the ratios to no-jump (below 1: better than not jumping)."""
    lines = [
        f"Validation MAE (raw weight units) on the {comparison.validation_runs} held-out runs of "
        f"collection {comparison.collection!r}; each bundle beside no-jump and the line fit on the "
        f"same windows at the same horizon (lower is better).",
        "",
        "| layer type | bundle | kind | L | h | windows | MAE | no-jump | linear-fit | MAE / no-jump "
        "| linear-fit / no-jump |",
        "|---|---|---|--:|--:|--:|--:|--:|--:|--:|--:|",
    ]
    for row in comparison.rows:
        methods = row["methods"]
        own, nojump = methods[row["bundle"]]["mae"], methods["no-jump"]["mae"]
        line_fit = methods.get("linear-fit", {}).get("mae")
        layer = row["layer_type"]
        if row["served_by"] != layer:
            layer += f" (by {row['served_by']})"
        lines.append(
            f"| {layer} | {row['bundle']} | {row['kind']} | {row['input_length']} | {row['horizon']} "
            f"| {row['windows']} | {_fmt(own)} | {_fmt(nojump)} | {_fmt(line_fit)} "
            f"| {_ratio(own, nojump)} | {_ratio(line_fit, nojump)} |"
        )
    if any(row["served_by"] != row["layer_type"] for row in comparison.rows):
        lines += ["", "(by X): the bundle has no predictor of that type; its fallback, X's, serves it."]
    if comparison.skipped:
        lines += ["", "Not scored: " + "; ".join(comparison.skipped)]
    return "\n".join(lines)


def parse_bundle_args(values: Sequence[str]) -> dict[str, str]:
    """`NAME=SOURCE` (or a bare SOURCE, named by itself) -> {name: source}, in the order given."""
    bundles: dict[str, str] = {}
    for value in values:
        name, _, where = value.partition("=") if "=" in value else (value, "", value)
        if not name or not where:
            raise ConfigError(
                f"--bundle {value!r}: give NAME=SOURCE, e.g. --bundle wnn=runs/train_predictor/steps/wnn"
            )
        if name in bundles:
            raise ConfigError(f"--bundle names {name!r} twice; give each bundle its own NAME=")
        bundles[name] = where
    return bundles


def _compare(args: argparse.Namespace) -> int:
    config = load_train_predictor_config(args.config, args.overrides)
    sources = parse_bundle_args(args.bundle)
    bundles = {name: load_bundle(where) for name, where in sources.items()}
    comparison = compare_bundles(config, bundles, horizon=args.horizon, echo=print)
    print(comparison_table(comparison))
    if args.json:
        words = ["python", "-m", "weightcast.train_predictor.compare", *_argv(args)]
        write_json_atomic(Path(args.json), {"command": shlex.join(words), **comparison.to_json()})
        print(f"wrote {args.json}")
    return 0


def _argv(args: argparse.Namespace) -> list[str]:
    words = ["--config", args.config] if args.config else []
    for value in args.bundle:
        words += ["--bundle", value]
    if args.horizon is not None:
        words += ["--horizon", str(args.horizon)]
    return [*words, "--json", args.json, *args.overrides]


def _configure(parser: argparse.ArgumentParser) -> None:
    add_config_arguments(parser, "train_predictor")
    parser.add_argument(
        "--bundle", action="append", default=[], metavar="NAME=SOURCE",
        help="a bundle to score: shipped:<kind>, a bundle folder or a Hub id, named NAME (repeatable)",
    )
    parser.add_argument(
        "--horizon", type=int, default=None, metavar="H",
        help="score every bundle at H snapshots ahead (default: each bundle's own horizon)",
    )
    parser.add_argument("--json", default=None, metavar="FILE", help="also write every number to FILE")
    parser.set_defaults(func=_compare)


COMMAND = Command(
    "compare",
    "score predictor bundles beside no-jump and the line fit on a train-predictor config's held-out runs",
    _configure,
)


def _check_horizon(name: str, bundle: PredictorBundle, horizon: int | None) -> None:
    """Every predictor of `bundle` must cover the horizon it is scored at."""
    if horizon is None:
        return
    if horizon < 1:
        raise ConfigError(f"--horizon must be >= 1, got {horizon}")
    for layer_type, predictor in bundle.predictors.items():
        if not predictor.supports_horizon(horizon):
            raise ConfigError(
                f"bundle {name!r} ({bundle.kind}, {layer_type}) cannot predict horizon {horizon}: it covers "
                f"{predictor.horizons}; choose --horizon among them or leave it out"
            )


def _errors(metrics: Mapping[str, float]) -> dict[str, float]:
    return {"mae": metrics["mae"], "mse": metrics["mse"]}


def _fmt(value: float | None) -> str:
    return "-" if value is None else f"{value:.4g}"


def _ratio(value: float | None, reference: float) -> str:
    return "-" if value is None or not reference > 0 else f"{value / reference:.3f}"


if __name__ == "__main__":
    raise SystemExit(run_command(COMMAND))
