"""The shipped configs, installed as package data (`weightcast.configs`), so that a wheel install
finds them as a checkout does: `configs/<stage>/<name>.yaml`."""

from pathlib import Path

from weightcast.errors import WeightcastError

__all__ = ["CONFIGS_DIR", "ConfigNotShippedError", "config_path"]

CONFIGS_DIR = Path(__file__).resolve().parent


class ConfigNotShippedError(WeightcastError, FileNotFoundError):
    """No shipped config of that stage and name; the message lists the shipped ones."""


def config_path(stage: str, name: str) -> Path:
    """The shipped config `<stage>/<name>.yaml`; `ConfigNotShippedError` naming the ones there are."""
    path = CONFIGS_DIR / stage / f"{name}.yaml"
    if not path.is_file():
        known = sorted(f"{p.parent.name}/{p.stem}" for p in CONFIGS_DIR.glob("*/*.yaml"))
        raise ConfigNotShippedError(
            f"no shipped config {stage}/{name}.yaml; shipped: {', '.join(known)}; or give a YAML file's path"
        )
    return path
