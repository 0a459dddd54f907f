"""The package as installed: one top-level name, `weightcast`; every module importable under that
name only (a module imported twice, as `zoo.x` and `weightcast.zoo.x`, would fill its registry
twice); `import weightcast` and `weightcast.Nowcaster` light; and (slow) a wheel built from this
tree that holds the configs and shipped bundles and runs the quick start from an empty folder."""

import importlib
import json
import os
import pkgutil
import shutil
import subprocess
import sys
import tomllib
import zipfile
from collections import defaultdict
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
STAGES = ("zoo", "collect", "train_predictor", "eval")  # repo-root folders, installed under weightcast.
# What `import weightcast; weightcast.Nowcaster` must not load: the harness, the optional heavy
# dependencies, the zoo's tasks and training loop.
HEAVY = ("weightcast.collect", "weightcast.zoo.tasks", "weightcast.zoo.train", "ray", "wandb", "matplotlib")


def _packages() -> list[str]:
    """The packages pyproject.toml installs."""
    return tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"]


def _all_modules() -> list[str]:
    """Every module of every installed package (walked from each package's own __path__, so an
    editable install's package-dir mapping is followed), except the `__main__` entry points."""
    names = set()
    for package in _packages():
        module = importlib.import_module(package)
        names.add(package)
        for info in pkgutil.iter_modules(module.__path__, package + "."):
            if not info.name.endswith(".__main__"):
                names.add(info.name)
    return sorted(names)


def test_every_module_imports_under_weightcast_only():
    modules = _all_modules()
    assert {m.split(".")[1] for m in modules if m.count(".")} >= {*STAGES, "configs", "cli", "errors"}
    for name in modules:
        importlib.import_module(name)  # a registry filled twice would raise DuplicateNameError here
    stray = sorted(m for m in sys.modules if m.split(".")[0] in STAGES)
    assert stray == [], f"modules imported under a bare stage name: {stray}"
    by_file = defaultdict(list)
    for name, module in list(sys.modules.items()):
        file = getattr(module, "__file__", None)
        if name.startswith("weightcast") and file:
            by_file[os.path.realpath(file)].append(name)
    twice = {file: names for file, names in by_file.items() if len(names) > 1}
    assert twice == {}, f"one file imported under two module names: {twice}"


@pytest.mark.parametrize("package", ["weightcast", "weightcast.zoo", "weightcast.train_predictor"])
def test_lazy_exports_resolve(package):
    module = importlib.import_module(package)
    for name in module.__all__:
        assert getattr(module, name) is not None, name
        assert name in dir(module)
    with pytest.raises(AttributeError, match="has no attribute 'nope'"):
        module.nope


def test_registries_hold_each_name_once():
    from weightcast.train_predictor.predictors import PREDICTORS
    from weightcast.zoo.models import ARCHITECTURES
    from weightcast.zoo.tasks import TASKS

    for registry in (ARCHITECTURES, TASKS, PREDICTORS):
        names = registry.names()
        assert names and len(names) == len(set(names)), registry


def test_import_weightcast_and_nowcaster_are_light():
    code = (
        "import json, sys\n"
        "import weightcast\n"
        "light = sorted(sys.modules)\n"
        "weightcast.Nowcaster\n"
        "print(json.dumps([light, sorted(sys.modules)]))\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO)
    assert result.returncode == 0, result.stderr
    after_import, after_nowcaster = json.loads(result.stdout)
    ours = [m for m in after_import if m.startswith("weightcast")]
    assert ours == ["weightcast", "weightcast._lazy", "weightcast.errors"]
    assert "torch" not in after_import
    loaded = [m for m in after_nowcaster if any(m == h or m.startswith(h + ".") for h in HEAVY)]
    assert loaded == [], f"weightcast.Nowcaster loads {loaded}"
    assert "weightcast.eval.runtime.nowcaster" in after_nowcaster


@pytest.mark.slow
def test_wheel_holds_one_package_and_runs_the_quickstart_from_an_empty_folder(tmp_path):
    source = tmp_path / "source"  # a copy: building writes build/ and *.egg-info next to pyproject.toml
    ignore = shutil.ignore_patterns(".git", ".venv", "build", "*.egg-info", "runs", "wandb", "__pycache__")
    shutil.copytree(REPO, source, ignore=ignore)
    wheels = tmp_path / "wheels"
    pip = [sys.executable, "-m", "pip", "-q", "--disable-pip-version-check"]
    build = [*pip, "wheel", str(source), "--no-deps", "--no-build-isolation", "-w", str(wheels)]
    subprocess.run(build, check=True)
    (wheel,) = wheels.glob("weightcast-*.whl")
    with zipfile.ZipFile(wheel) as archive:
        names = archive.namelist()
        (top_level,) = [n for n in names if n.endswith(".dist-info/top_level.txt")]
        assert archive.read(top_level).decode().split() == ["weightcast"]
    assert {n.split("/")[0] for n in names if ".dist-info/" not in n} == {"weightcast"}
    for stage in ("zoo", "collect", "train_predictor", "eval"):
        assert f"weightcast/configs/{stage}/debug.yaml" in names, stage
    for kind in ("wnn", "lfd2"):
        for file in ("config.json", "model.safetensors", "README.md"):
            assert f"weightcast/train_predictor/pretrained/{kind}/{file}" in names, (kind, file)

    target, empty = tmp_path / "site", tmp_path / "empty"
    subprocess.run([*pip, "install", "--no-deps", "--target", str(target), str(wheel)], check=True)
    empty.mkdir()
    env = {**os.environ, "PYTHONPATH": str(target), "WANDB_MODE": "disabled", "MPLBACKEND": "Agg"}
    where = subprocess.run(
        [sys.executable, "-c", "import weightcast.eval.quickstart as q; print(q.__file__)"],
        cwd=empty, env=env, capture_output=True, text=True, check=True,
    ).stdout
    assert Path(where.strip()).is_relative_to(target)  # the wheel's copy, not this checkout's
    # The debug pipeline, cut down (one seed, fewer steps): what matters here is that the configs
    # and the bundles come from the wheel; .ci/run runs the full quick start.
    overrides = [
        "train_predictor.steps=20", "train_predictor.eval_every=10", "train_predictor.checkpoint_every=20",
        "eval.speedup.seeds=[0]",
    ]
    command = [sys.executable, "-m", "weightcast", "quickstart", "--out", "qs", *overrides]
    result = subprocess.run(command, cwd=empty, env=env, capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "quickstart finished" in result.stdout and (empty / "qs" / "eval" / "report.md").is_file()


def test_an_unknown_shipped_config_is_a_user_error_naming_the_shipped_ones():
    from weightcast.configs import config_path
    from weightcast.errors import WeightcastError

    assert config_path("eval", "zero-shot").is_file()
    with pytest.raises(WeightcastError, match=r"no shipped config eval/nope\.yaml; shipped: .*eval/zero-shot"):
        config_path("eval", "nope")
    with pytest.raises(FileNotFoundError):  # still what code that caught the built-in one expects
        config_path("eval", "nope")
