"""Config loading shared by every stage: dataclass defaults <- a YAML file <- `key.sub=value`
overrides from the command line (OmegaConf structured configs, as in lingua).

Unknown keys and wrong types raise `ConfigError` with what would be valid; registry names are
checked by each config's own `__post_init__`.
"""

from __future__ import annotations

import dataclasses
import re
import typing
from pathlib import Path
from typing import Any, Sequence, TypeVar

from omegaconf import OmegaConf
from omegaconf.errors import ConfigAttributeError, ConfigKeyError, OmegaConfBaseException, ValidationError

from weightcast.errors import WeightcastError

__all__ = ["ConfigError", "load_config", "config_to_yaml", "config_to_dict", "save_config"]

C = TypeVar("C")


class ConfigError(WeightcastError, ValueError):
    """A config file or override is invalid; the message says what would be valid."""


def load_config(
    cls: type[C], path: str | Path | None = None, overrides: Sequence[str] = ()
) -> C:
    """Build a `cls` instance from its defaults, then the YAML file at `path`, then `overrides`
    (each `key.sub=value`, values parsed as YAML)."""
    layers = [OmegaConf.structured(cls)]
    if path is not None:
        path = Path(path)
        if not path.is_file():
            raise ConfigError(f"config file {str(path)!r} does not exist")
        layers.append(OmegaConf.load(path))
    bad = [o for o in overrides if "=" not in o]
    if bad:
        raise ConfigError(f"overrides must look like key.sub=value, got {bad}")
    try:
        merged = OmegaConf.merge(*layers)
        for override in overrides:
            key, _, value = override.partition("=")
            if not any(part.isdigit() for part in key.split(".")):
                # A merged dotlist can add typed entries to dicts (`methods.new.predictor=...`).
                merged = OmegaConf.merge(merged, OmegaConf.from_dotlist([override]))
                continue
            # `population.0.lr=...` indexes into a list, which only an update can do.
            if _is_list_index_out_of_range(merged, key):
                raise ConfigError(f"override {override!r}: index out of range")
            OmegaConf.update(merged, key, _parse_value(value), merge=True)
        return OmegaConf.to_object(merged)  # type: ignore[return-value]
    except (ConfigKeyError, ConfigAttributeError) as err:
        key = getattr(err, "full_key", None) or getattr(err, "key", "?")
        raise ConfigError(
            f"unknown config key {key!r} for {cls.__name__}; {_valid_keys_hint(cls, str(key))}"
        ) from None
    except ValidationError as err:
        raise ConfigError(f"invalid value for {getattr(err, 'full_key', '?')!r}: {err.msg.splitlines()[0]}") from None
    except OmegaConfBaseException as err:
        raise ConfigError(f"invalid config: {getattr(err, 'msg', err)}") from None


def config_to_dict(config: Any) -> dict[str, Any]:
    """Plain (JSON/YAML-ready) dict of a config dataclass."""
    return OmegaConf.to_container(OmegaConf.structured(config), resolve=True)  # type: ignore[return-value]


def config_to_yaml(config: Any) -> str:
    return OmegaConf.to_yaml(OmegaConf.structured(config))


def save_config(config: Any, path: str | Path) -> Path:
    """Write the resolved config as YAML (every run does this next to its outputs)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(config_to_yaml(config))
    return path


def _parse_value(text: str) -> Any:
    """An override's value, parsed as OmegaConf parses a dotlist (YAML: 1e-3 is a float, [a,b] a list)."""
    return OmegaConf.to_container(OmegaConf.from_dotlist([f"value={text}"]))["value"]  # type: ignore[index]


def _is_list_index_out_of_range(config: Any, key: str) -> bool:
    node = config
    for part in key.split(".")[:-1]:
        if OmegaConf.is_list(node):
            if not part.isdigit() or int(part) >= len(node):
                return True
            node = node[int(part)]
        elif OmegaConf.is_dict(node) and part in node:
            node = node[part]
        else:
            return False
    return False


def _valid_keys_hint(cls: type, full_key: str) -> str:
    """List the valid keys at the level where `full_key` went wrong."""
    node: Any = cls
    for part in re.split(r"[.\[\]]+", full_key.strip("]"))[:-1]:
        if typing.get_origin(node) is list:  # population.0.key: the list's element type
            node = typing.get_args(node)[0]
            continue
        hints = typing.get_type_hints(node) if dataclasses.is_dataclass(node) else {}
        if part not in hints:
            break
        node = hints[part]
    if dataclasses.is_dataclass(node):
        return "valid keys: " + ", ".join(f.name for f in dataclasses.fields(node))
    return "see the config dataclass for valid keys"
