"""The pretrained bundles shipped with weightcast (`shipped:<kind>`, train_predictor/pretrained/): they load
from the installed package, describe the collection they were trained on, beat no-jump on their
held-out validation, and drive a Nowcaster by default; the eval configs that use them pass
their checks (zero-shot, preflight) before any training."""

import json
from pathlib import Path

import pytest
import torch
from torch import nn

import weightcast
from weightcast.errors import WeightcastError
from weightcast.eval.config import check_zero_shot, load_eval_config, open_method_bundle
from weightcast.eval.runtime import (
    DEFAULT_BUNDLE,
    SHIPPED_BUNDLES_DIR,
    Nowcaster,
    open_bundle,
    shipped_bundle_folder,
)
from weightcast.eval.speedup import preflight
from weightcast.train_predictor.bundle import PredictorBundle, load_bundle
from weightcast.zoo.config import ConfigError
from weightcast.zoo.layer_types import LAYER_TYPES
from weightcast.zoo.tasks import TASKS

CONFIGS = Path(__file__).resolve().parents[2] / "configs" / "eval"
# kind: (window, horizon, the collection it was trained on, the configs that made it)
SHIPPED = {
    "wnn": (5, 5, "zoo-steps", "configs/train_predictor/steps.yaml"),
    "lfd2": (5, 5, "zoo-cpu-10x", "configs/train_predictor/zoo-cpu-10x.yaml"),
    "nino-mlp": (5, 20, "zoo-steps", "configs/train_predictor/steps.yaml"),
    "introspection": (6, 5, "zoo-cpu", "configs/train_predictor/default.yaml"),
}


@pytest.mark.parametrize("kind", SHIPPED)
def test_shipped_bundle_loads_and_covers_every_layer_type(kind):
    bundle = open_bundle(f"shipped:{kind}")
    assert isinstance(bundle, PredictorBundle) and bundle.kind == kind
    window, horizon, collection, train_config = SHIPPED[kind]
    assert (bundle.input_length, bundle.horizon) == (window, horizon)
    assert sorted(bundle.layer_types) == sorted(LAYER_TYPES) and not bundle.fallback
    assert all(torch.isfinite(t).all() for t in bundle.state_dict().values())
    trained_on = bundle.trained_on
    assert trained_on["collection"] == collection and trained_on["runs"] > 250
    assert "digits" not in trained_on["tasks"]  # the zero-shot suite's tasks are unseen
    assert f"weightcast train-predictor --config {train_config}" in bundle.commands
    card = (shipped_bundle_folder(kind) / "README.md").read_text()
    assert f"name: {collection}" in card or f"configs/collect/{collection}.yaml" in card  # how it was made
    assert "| layer type |" in card  # the validation table


@pytest.mark.parametrize("kind", ["wnn", "lfd2", "nino-mlp"])
def test_shipped_bundle_beats_no_jump_on_held_out_runs(kind):
    config = json.loads((SHIPPED_BUNDLES_DIR / kind / "config.json").read_text())
    # every layer type the held-out runs have (zoo-cpu-10x's are MLPs and CNNs: no norm, no embedding)
    assert {"conv", "linear", "bias"} <= set(config["validation"]) <= set(LAYER_TYPES)
    for layer_type, mae in config["validation"].items():  # held-out runs' MAE per method
        assert mae[kind] < mae["no-jump"], layer_type


def test_nowcaster_defaults_to_the_shipped_lfd2_bundle():
    """LFD-2 trained on zoo-cpu-10x won the zero-shot speed-up measurement (README, Results)."""
    assert DEFAULT_BUNDLE == "shipped:lfd2"
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 2))
    nowcaster = Nowcaster(model, None, config=None, probe=lambda m: 0.0)
    assert nowcaster.bundle.kind == "lfd2"
    assert set(nowcaster.predicted.values()) == {"linear", "bias"}
    before = [p.detach().clone() for p in model.parameters()]
    for step in range(5):  # a steady drift; the fifth call jumps
        with torch.no_grad():
            for p in model.parameters():
                p.add_(0.01)
        jump = nowcaster()
    assert jump is not None and jump.outcome == "accepted"
    moved = torch.cat([(p - b).flatten() for p, b in zip(model.parameters(), before)])
    assert torch.isfinite(moved).all() and moved.mean() > 0.05  # the drift went on past 5 x 0.01


def test_unknown_shipped_kind_names_the_shipped_ones():
    with pytest.raises(FileNotFoundError, match=r"no pretrained 'plp' bundle .*introspection, lfd2, nino-mlp, wnn"):
        open_bundle("shipped:plp")
    with pytest.raises(WeightcastError, match="no pretrained 'plp' bundle"):  # a user error for the CLI
        load_bundle("shipped:plp")


def test_every_way_to_open_a_shipped_bundle_is_load_bundle():
    """`load_bundle`, `PredictorBundle.from_pretrained`, the runtime's `open_bundle` and the public
    `weightcast.load_bundle` all take `shipped:<kind>` and record where the bundle came from."""
    for opened in (
        load_bundle("shipped:lfd2"),
        PredictorBundle.from_pretrained("shipped:lfd2"),
        open_bundle("shipped:lfd2"),
        weightcast.load_bundle("shipped:lfd2"),
    ):
        assert opened.kind == "lfd2" and (opened.source, opened.revision) == ("shipped:lfd2", None)
    assert weightcast.load_bundle is load_bundle
    with pytest.raises(ConfigError, match="selects a Hub commit"):
        load_bundle("shipped:lfd2", revision="main")


def _method_bundles(config):
    return {name: open_method_bundle(method) for name, method in config.methods.items()}


def test_zero_shot_suite_passes_its_checks_with_the_shipped_bundles():
    config = load_eval_config(CONFIGS / "zero-shot.yaml")
    tasks = {label: entry.task for label, entry in config.speedup.tasks.items()}
    bundles = _method_bundles(config)
    assert check_zero_shot(tasks, bundles, config.allow_seen, "zero-shot") == []  # nothing seen
    modalities = {TASKS.metadata(task)["modality"] for task in tasks.values()}
    assert len(tasks) >= 5 and len(modalities) >= 2
    assert len(config.speedup.seeds) >= 3
    preflight(config, bundles)  # every task builds, every bundle fits its model and jumps in budget


def test_sgd_momentum_failure_config_needs_allow_seen():
    config = load_eval_config(CONFIGS / "sgd-momentum-failure.yaml")
    tasks = {label: entry.task for label, entry in config.speedup.tasks.items()}
    bundles = _method_bundles(config)
    with pytest.raises(ConfigError, match="training-split task"):
        check_zero_shot(tasks, bundles, False, "sgd-momentum-failure")
    assert config.allow_seen and check_zero_shot(tasks, bundles, True, "sgd-momentum-failure")
    assert {m.nowcast.guard for m in config.methods.values()} == {True, False}
    preflight(config, bundles)
