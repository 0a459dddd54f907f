"""The Registry class and the config loader: lookups, duplicate names, and errors that say what
would be valid."""

from dataclasses import dataclass, field

import pytest

from weightcast.zoo.config import ConfigError, config_to_dict, load_config
from weightcast.zoo.optim import OPTIMIZERS
from weightcast.zoo.registry import DuplicateNameError, Registry, UnknownNameError
from weightcast.zoo.train import TrainConfig


def test_registry_lookup_metadata_and_errors():
    reg: Registry = Registry("widget")

    @reg.register(color="red")
    def small_widget():
        return "small"

    @reg.register("big")
    def make_big():
        return "big"

    assert reg.names() == ["big", "small-widget"]
    assert reg.get("small-widget")() == "small"
    assert reg.metadata("small-widget") == {"color": "red"}
    assert "big" in reg and len(reg) == 2
    with pytest.raises(UnknownNameError, match="unknown widget 'huge'; valid: big, small-widget"):
        reg.get("huge")
    with pytest.raises(DuplicateNameError, match="'big' is already registered"):
        reg.register("big")(make_big)


@dataclass
class _Inner:
    rate: float = 0.5
    names: list[str] = field(default_factory=lambda: ["a"])


@dataclass
class _Outer:
    inner: _Inner = field(default_factory=_Inner)
    steps: int = 3
    groups: list[_Inner] = field(default_factory=lambda: [_Inner(), _Inner(0.75)])


def test_config_layers_defaults_file_overrides(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("steps: 7\ninner:\n  rate: 0.25\n")
    assert load_config(_Outer) == _Outer()
    assert load_config(_Outer, path) == _Outer(_Inner(0.25), 7)
    cfg = load_config(_Outer, path, ["inner.rate=0.1", "inner.names=[x,y]"])
    assert cfg == _Outer(_Inner(0.1, ["x", "y"]), 7)
    # overrides index into lists of dataclasses; 1e-3 parses as a float
    cfg = load_config(_Outer, overrides=["groups.1.rate=1e-3", "groups.0.names=[]"])
    assert cfg.groups == [_Inner(0.5, []), _Inner(0.001)]


def test_config_errors_say_what_is_valid(tmp_path):
    with pytest.raises(ConfigError, match=r"unknown config key 'inner.rte'.*valid keys: rate, names"):
        load_config(_Outer, overrides=["inner.rte=1"])
    with pytest.raises(ConfigError, match=r"unknown config key 'groups\[1\].rte'.*valid keys: rate, names"):
        load_config(_Outer, overrides=["groups.1.rte=1"])
    with pytest.raises(ConfigError, match=r"override 'groups.2.rate=1': index out of range"):
        load_config(_Outer, overrides=["groups.2.rate=1"])
    with pytest.raises(ConfigError, match=r"unknown config key 'stepz'.*valid keys: inner, steps, groups"):
        load_config(_Outer, overrides=["stepz=1"])
    with pytest.raises(ConfigError, match="steps"):
        load_config(_Outer, overrides=["steps=many"])
    with pytest.raises(ConfigError, match="key.sub=value"):
        load_config(_Outer, overrides=["steps"])
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(_Outer, tmp_path / "missing.yaml")


def test_train_config_rejects_unknown_registry_names():
    with pytest.raises(UnknownNameError, match="unknown architecture 'resnet9000'; valid: .*resnet20"):
        load_config(TrainConfig, overrides=["arch=resnet9000"])
    with pytest.raises(UnknownNameError, match="unknown optimizer 'adamx'; valid: adam, adamw, rmsprop, sgd"):
        load_config(TrainConfig, overrides=["optimizer.name=adamx"])
    with pytest.raises(ConfigError, match="epochs must be >= 1"):
        load_config(TrainConfig, overrides=["epochs=0"])


def test_train_config_round_trips_through_dict():
    cfg = load_config(TrainConfig, overrides=["arch=mlp", "arch_kwargs.width=16", "optimizer.lr=0.01"])
    assert cfg.arch_kwargs == {"width": 16}
    assert load_config(TrainConfig, overrides=[f"{k}={v}" for k, v in _flatten(config_to_dict(cfg))]) == cfg
    assert set(OPTIMIZERS.names()) >= {"sgd", "adam", "adamw", "rmsprop"}


def _flatten(d, prefix=""):
    for k, v in d.items():
        if isinstance(v, dict) and v:
            yield from _flatten(v, f"{prefix}{k}.")
        elif not isinstance(v, dict):
            yield f"{prefix}{k}", "null" if v is None else v
