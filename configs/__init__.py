"""The shipped configs, installed as package data (`weightcast.configs`), so that a wheel install
finds them as a checkout does: `configs/<stage>/<name>.yaml`."""

from pathlib import Path

__all__ = ["CONFIGS_DIR", "config_path"]

CONFIGS_DIR = Path(__file__).resolve().parent


def config_path(stage: str, name: str) -> Path:
    """The shipped config `<stage>/<name>.yaml`; FileNotFoundError naming the ones there are."""
    path = CONFIGS_DIR / stage / f"{name}.yaml"
    if not path.is_file():
        known = sorted(f"{p.parent.name}/{p.stem}" for p in CONFIGS_DIR.glob("*/*.yaml"))
        raise FileNotFoundError(f"no shipped config {stage}/{name}.yaml; shipped: {', '.join(known)}")
    return path
