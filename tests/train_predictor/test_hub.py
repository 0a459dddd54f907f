"""Predictor bundles and all Hub I/O (train_predictor.bundle, train_predictor.hub, `weightcast
publish`): every registered predictor kind saved and loaded bit-identically; publish -> load ->
offline load through huggingface_hub against the Hub-compatible server of tests/train_predictor/hub_server.py;
the errors for a missing repository, a wrong revision, another schema version and a folder or
repository that is not a bundle.

huggingface_hub reads HF_ENDPOINT / HF_HUB_OFFLINE / HF_HUB_CACHE at import, so everything that
talks to the server runs in a subprocess whose environment points at it.
"""

import hashlib
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
from .hub_server import HubServer
from safetensors.torch import load_file

from weightcast.errors import USER_ERROR_EXIT_CODE
from weightcast.train_predictor.bundle import (
    SCHEMA_VERSION,
    BundleFormatError,
    MissingPredictorError,
    PredictorBundle,
    load_bundle,
    save_bundle,
)
from weightcast.train_predictor.predictors import PREDICTORS, build_predictor
from weightcast.train_predictor.publish_cli import COMMAND
from weightcast.cli import run_command
from weightcast.zoo.config import ConfigError
from weightcast.zoo.layer_types import LAYER_TYPES
from weightcast.zoo.registry import UnknownNameError

REPO_ROOT = Path(__file__).resolve().parents[2]
BUNDLE_FILES = {"config.json", "model.safetensors", "README.md"}


def random_bundle(kind: str, seed: int, layer_types=LAYER_TYPES, **kwargs) -> PredictorBundle:
    """A bundle of default-config predictors with N(0, 0.1^2) weights, so a load that skipped a
    tensor would show (small enough that WNN's exp stays finite)."""
    bundle = PredictorBundle(kind, {t: {} for t in layer_types}, **kwargs)
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for param in bundle.parameters():
            param.copy_(0.1 * torch.randn(param.shape, generator=generator))
    return bundle


def assert_same_weights(state: dict, module: torch.nn.Module) -> None:
    expected = module.state_dict()
    assert state.keys() == expected.keys()
    for name, tensor in expected.items():
        assert state[name].dtype == tensor.dtype and torch.equal(state[name], tensor), name


def test_model_card_metadata_and_embedded_configs():
    configs = {"collect": {"name": "zoo-a", "epochs": 3}, "train_predictor": {"collection": "runs/zoo-a"}}
    trained_on = {"collection": "zoo-a", "tasks": ["mnist1d"], "configs": configs}
    validation = {"linear": {"wnn": 0.125, "no-jump": 0.5}, "bias": {"wnn": 0.25, "no-jump": 0.5}}
    bundle = random_bundle("wnn", 0, trained_on=trained_on, validation=validation,
                           commands=["weightcast train-predictor --config /home/me/runs/x/config.yaml"])
    card = bundle.generate_model_card("org/wnn")
    meta = card.data.to_dict()
    assert meta["pipeline_tag"] == "time-series-forecasting" and meta["license"] == "apache-2.0"
    assert {"weightcast", "weight-prediction", "wnn"} <= set(meta["tags"]) and meta["datasets"] == ["zoo-a"]
    (index,) = meta["model-index"]
    metrics = {m["name"]: m["value"] for r in index["results"] for m in r["metrics"]}
    assert index["name"] == "org/wnn" and metrics == {
        f"MAE (linear, horizon {bundle.horizon})": 0.125, f"MAE (bias, horizon {bundle.horizon})": 0.25
    }  # the bundle's own column of the validation table
    text = str(card)
    assert "/home/me/runs" not in text  # the configs are embedded, no local path to follow
    assert "weightcast collect --config collect.yaml" in text and "epochs: 3" in text
    assert "collection: runs/zoo-a" in text
    assert "configs" not in text.split("## Training data")[1].split("##")[0]  # not listed as data
    for horizon, said in ((1, "1 step after"), (2, "2 steps after")):  # not "1 steps"
        predictor = build_predictor("wnn", input_length=3, horizon=horizon)
        one = PredictorBundle.from_predictors({"linear": predictor})
        assert said in str(one.generate_model_card()).replace("\n", " ")


@pytest.mark.parametrize(
    "stated, source, license, base_model",
    [
        ("MIT (Samsung Electronics Co., Ltd.)", "https://github.com/SamsungSAILMontreal/nino", "mit", None),
        ("the source repository states none; ask", "https://github.com/jjh6297/WNN", "unknown", None),
        ("Apache-2.0", "https://huggingface.co/org/peer", "apache-2.0", "org/peer"),
    ],
)
def test_imported_peer_cards_take_license_and_base_model_from_trained_on(stated, source, license, base_model):
    trained_on = {"collection": "a peer's released weights", "source": source, "license": stated}
    card = random_bundle("wnn", 0, trained_on=trained_on).generate_model_card()
    meta = card.data.to_dict()
    assert meta["license"] == license and meta.get("base_model") == base_model
    assert "datasets" not in meta  # an imported peer's collection is a description, not a dataset
    assert stated in str(card).split("## License")[1]


@pytest.mark.parametrize("kind", PREDICTORS.names())
def test_save_and_load_every_kind_bit_identical(kind, tmp_path):
    errors = {"no-jump": 0.05, "linear-fit": 0.03, kind: 0.0125}  # a baseline kind overrides its entry
    trained_on = {"collection": "debug", "architectures": ("mlp", "cnn"), "tasks": ["digits"],
                  "optimizers": ["sgd", "adam"], "trajectories": 12}  # fmt: skip
    commands = ["weightcast collect --config configs/collect/debug.yaml"]
    bundle = random_bundle(kind, 0, trained_on=trained_on, validation={"conv": errors}, commands=commands)
    folder = save_bundle(bundle, tmp_path / kind)

    assert {p.name for p in folder.iterdir()} == BUNDLE_FILES
    umask = os.umask(0o022)
    os.umask(umask)
    for path in folder.iterdir():  # as open() would create them, not the private temporary files
        assert path.stat().st_mode & 0o777 == 0o666 & ~umask, path.name
    config = json.loads((folder / "config.json").read_text())
    assert config == bundle.config
    probe = build_predictor(kind)
    assert config["kind"] == kind and config["layer_types"] == list(LAYER_TYPES)
    assert (config["input_length"], config["horizon"]) == (probe.input_length, probe.horizon)
    assert config["schema_version"] == SCHEMA_VERSION and config["package_version"] == bundle.package_version
    assert config["trained_on"]["architectures"] == ["mlp", "cnn"]  # stored as JSON reads it back
    card = (folder / "README.md").read_text()
    assert "license: apache-2.0" in card and "library_name: weightcast" in card and commands[0] in card
    assert "`mlp`, `cnn`" in card and "trajectories: `12`" in card
    columns = dict.fromkeys([kind, "no-jump", "linear-fit"])  # the bundle's kind first, then the baselines
    assert "| layer type | " + " | ".join(f"`{m}`" for m in columns) + " |" in card
    assert "| conv | " + " | ".join(f"{errors[m]:.4g}" for m in columns) + " |" in card

    for loaded in (load_bundle(folder), PredictorBundle.from_pretrained(folder)):
        assert isinstance(loaded, PredictorBundle) and not loaded.training
        assert (loaded.source, loaded.revision) == (str(folder), None)
        assert loaded.config == bundle.config
        assert_same_weights(loaded.state_dict(), bundle)
        window = torch.randn(7, bundle.input_length, dtype=torch.float64).cumsum(dim=1)
        assert torch.equal(loaded.predict(window, "linear"), bundle.predict(window, "linear"))


def test_fallback_and_bundle_checks():
    fitted = {"conv": build_predictor("wnn"), "bias": build_predictor("wnn")}
    bundle = PredictorBundle.from_predictors(fitted)
    assert bundle.layer_types == ("conv", "bias")
    assert bundle.fallback == {"linear": "conv", "norm": "bias", "embedding": "conv"}  # default order
    assert bundle.predictor_for("norm") is bundle.predictors["bias"]
    assert bundle.predictor_for("conv") is bundle.predictors["conv"]
    assert_same_weights(bundle.predictors["conv"].state_dict(), fitted["conv"])

    explicit = PredictorBundle("wnn", {"conv": {}, "bias": {}}, fallback={"norm": "bias"})
    assert explicit.predictor_for("norm") is explicit.predictors["bias"]
    missing = "no predictor for layer type 'linear'.*fitted: conv, bias"
    with pytest.raises(MissingPredictorError, match=missing):
        explicit.predictor_for("linear")
    with pytest.raises(UnknownNameError, match="unknown layer type 'attention'"):
        explicit.predictor_for("attention")
    with pytest.raises(ConfigError, match="invalid entries: {'norm': 'linear'}"):
        PredictorBundle("wnn", {"conv": {}}, fallback={"norm": "linear"})
    with pytest.raises(ConfigError, match="unknown layer types \\['attention'\\]"):
        PredictorBundle("wnn", {"attention": {}})
    with pytest.raises(ConfigError, match="share input_length and horizon"):
        PredictorBundle("wnn", {"conv": {"input_length": 5}, "bias": {"input_length": 6}})
    with pytest.raises(ConfigError, match="one kind"):
        PredictorBundle.from_predictors({"conv": build_predictor("wnn"), "bias": build_predictor("lfd2")})
    with pytest.raises(UnknownNameError, match="unknown predictor 'wnn2'"):
        PredictorBundle("wnn2", {"conv": {}})


def _edit_config(**changes):
    def edit(folder: Path) -> None:
        config = json.loads((folder / "config.json").read_text())
        (folder / "config.json").write_text(json.dumps({**config, **changes}))

    return edit


def _empty(folder: Path) -> None:
    for path in folder.iterdir():
        path.unlink()


def _other_weights(folder: Path) -> None:
    save_bundle(random_bundle("lfd2", 1), folder / "other")
    os.replace(folder / "other" / "model.safetensors", folder / "model.safetensors")


NOT_A_BUNDLE = {
    "empty": (_empty, "is not a predictor bundle: it has no config.json \\(found: nothing\\)"),
    "other-config": (lambda f: (f / "config.json").write_text('{"hidden_size": 8}'), "has no schema_version"),
    "not-json": (lambda f: (f / "config.json").write_bytes(b"\x00\xff junk"), "config.json is not JSON"),
    "schema": (
        _edit_config(schema_version=SCHEMA_VERSION + 1),
        f"schema version {SCHEMA_VERSION + 1} .* reads schema version {SCHEMA_VERSION}",
    ),
    "unknown-key": (_edit_config(extra_key=1), "unknown keys \\['extra_key'\\]"),
    "unknown-kind": (_edit_config(kind="mystery"), "unknown predictor 'mystery'"),
    "derived": (_edit_config(horizon=99), "states .*'horizon': 99.* but its predictors give"),
    "no-weights": (lambda f: (f / "model.safetensors").unlink(), "has no model.safetensors"),
    "other-weights": (_other_weights, "model.safetensors does not match its config.json"),
}


@pytest.mark.parametrize("case", NOT_A_BUNDLE)
def test_folder_that_is_not_a_bundle(case, tmp_path):
    corrupt, message = NOT_A_BUNDLE[case]
    folder = save_bundle(random_bundle("wnn", 0, layer_types=("conv",)), tmp_path / "bundle")
    corrupt(folder)
    with pytest.raises(BundleFormatError, match=message):
        load_bundle(folder)


def test_publish_command_refuses_a_folder_that_is_not_a_bundle(tmp_path, capsys):
    (tmp_path / "notes.txt").write_text("not a bundle")
    assert run_command(COMMAND, [str(tmp_path), "--repo-id", "weightcast-test/x"]) == USER_ERROR_EXIT_CODE
    assert "is not a predictor bundle: it has no config.json (found: notes.txt)" in capsys.readouterr().err
    missing = [str(tmp_path / "missing"), "--repo-id", "weightcast-test/x"]
    assert run_command(COMMAND, missing) == USER_ERROR_EXIT_CODE
    assert "does not exist" in capsys.readouterr().err
    with pytest.raises(ConfigError, match="selects a Hub commit"):
        load_bundle(tmp_path, revision="main")


@pytest.fixture(scope="module")
def hub():
    with HubServer() as server:
        yield server


def run_client(code: str, hub: HubServer, cache: Path, offline: bool = False) -> dict:
    """Run `code` in a fresh interpreter whose huggingface_hub talks to `hub` and caches under
    `cache`; `code` prints one JSON object, returned here."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("HF_")}
    env.update(
        HF_ENDPOINT=hub.url,
        HF_HUB_CACHE=str(cache),
        HF_HOME=str(cache.parent / "hf-home"),
        HF_TOKEN="dummy",
        HF_HUB_OFFLINE="1" if offline else "0",
        HF_HUB_DISABLE_PROGRESS_BARS="1",
        HF_HUB_DISABLE_TELEMETRY="1",
        # huggingface_hub 2.4 sends LFS files over Xet whenever hf_xet (its dependency) is installed,
        # whatever the server offers; without it, over the LFS batch API, which the test server serves
        HF_HUB_DISABLE_XET="1",
        PYTHONPATH=str(REPO_ROOT),
    )
    command = [sys.executable, "-c", textwrap.dedent(code)]
    result = subprocess.run(command, env=env, cwd=cache.parent, capture_output=True, text=True)
    assert result.returncode == 0, f"client failed:\n{result.stdout}\n{result.stderr}"
    return json.loads(result.stdout.strip().splitlines()[-1])


def test_publish_load_and_offline_round_trip(hub, tmp_path):
    main, v2 = random_bundle("wnn", 0), random_bundle("wnn", 1, commands=["weightcast train-predictor"])
    main_dir, v2_dir = save_bundle(main, tmp_path / "main"), save_bundle(v2, tmp_path / "v2")
    repo, cache, out = "weightcast-test/wnn", tmp_path / "cache", tmp_path / "out"
    out.mkdir()

    online = run_client(
        f"""
        import json
        from safetensors.torch import save_file
        from weightcast.train_predictor.bundle import PredictorBundle, load_bundle, publish
        from weightcast.train_predictor.publish_cli import COMMAND
        from weightcast.cli import run_command

        assert run_command(COMMAND, [{str(main_dir)!r}, "--repo-id", {repo!r}]) == 0
        commit = publish({str(v2_dir)!r}, {repo!r}, revision="v2").rsplit("/", 1)[1]
        save_file(PredictorBundle.from_pretrained({repo!r}).state_dict(), {str(out / "main.safetensors")!r})
        v2 = load_bundle({repo!r}, revision="v2")
        assert (v2.source, v2.revision) == ({repo!r}, commit)  # the branch, resolved to its commit
        save_file(v2.state_dict(), {str(out / "v2.safetensors")!r})
        save_file(load_bundle({repo!r}, revision=commit).state_dict(), {str(out / "commit.safetensors")!r})
        # push_to_hub is publish: the same load-back check, the same card
        pushed = v2.push_to_hub({repo!r}, branch="pushed").rsplit("/", 1)[1]
        assert load_bundle({repo!r}, revision="pushed").revision == pushed
        # revision wherever a Hub id is taken: an eval method, the Nowcaster; reports keep the commit
        import torch
        from weightcast.eval.config import MethodConfig, load_eval_config, open_method_bundle
        from weightcast.eval.report import describe_methods
        from weightcast.eval.runtime import NowcastConfig, Nowcaster
        method = MethodConfig(bundle={repo!r}, revision="v2")
        assert open_method_bundle(method).revision == commit
        config = load_eval_config(None, ["methods.wnn.bundle={repo}", "methods.wnn.revision=v2",
                                         "speedup.enabled=false", "forecast.collection=x", "allow_seen=true"])
        (row,) = describe_methods(config, {{"wnn": open_method_bundle(config.methods["wnn"])}}, {{}})
        assert (row["revision"], row["commit"]) == ("v2", commit)
        model, config = torch.nn.Linear(2, 2), NowcastConfig(guard=False)
        nowcaster = Nowcaster(model, None, {repo!r}, config, revision=commit)
        assert nowcaster.bundle.revision == commit
        print(json.dumps({{"commit": commit, "pushed": pushed, "config": load_bundle({repo!r}).config}}))
        """,
        hub,
        cache,
    )
    assert_same_weights(load_file(out / "main.safetensors"), main)
    assert_same_weights(load_file(out / "v2.safetensors"), v2)
    assert_same_weights(load_file(out / "commit.safetensors"), v2)
    assert online["config"] == main.config
    # model.safetensors took the LFS path (batch API, basic PUT, verify), config.json the regular one
    assert f"POST /{repo}.git/info/lfs/objects/batch" in hub.requests
    lfs = {hashlib.sha256((d / "model.safetensors").read_bytes()).hexdigest() for d in (main_dir, v2_dir)}
    assert set(hub.lfs) == lfs
    assert {f"PUT /lfs/{oid}" for oid in lfs} <= set(hub.requests)
    assert {f"POST /lfs/{oid}/verify" for oid in lfs} <= set(hub.requests)
    # The server holds what was published: main and the v2 branch, the card naming the repository.
    _, files = hub.resolve(repo, "main")
    assert files["config.json"] == (main_dir / "config.json").read_bytes()
    assert files["model.safetensors"] == (main_dir / "model.safetensors").read_bytes()
    assert f'PredictorBundle.from_pretrained("{repo}")' in files["README.md"].decode()
    assert hub.resolve(repo, "v2")[0] == online["commit"]
    pushed_commit, pushed = hub.resolve(repo, "pushed")
    assert pushed_commit == online["pushed"]
    assert pushed["model.safetensors"] == (v2_dir / "model.safetensors").read_bytes()
    assert f'PredictorBundle.from_pretrained("{repo}")' in pushed["README.md"].decode()

    requests_before = len(hub.requests)
    offline = run_client(
        f"""
        import json
        from safetensors.torch import save_file
        from weightcast.train_predictor.bundle import load_bundle
        from weightcast.train_predictor.hub import HubError

        save_file(load_bundle({repo!r}).state_dict(), {str(out / "offline-main.safetensors")!r})
        save_file(load_bundle({repo!r}, revision="v2").state_dict(), {str(out / "offline-v2.safetensors")!r})
        try:
            load_bundle("weightcast-test/never-downloaded")
        except HubError as err:
            print(json.dumps({{"error": str(err)}}))
        """,
        hub,
        cache,
        offline=True,
    )
    assert len(hub.requests) == requests_before  # served from the cache alone
    assert_same_weights(load_file(out / "offline-main.safetensors"), main)
    assert_same_weights(load_file(out / "offline-v2.safetensors"), v2)
    assert "'weightcast-test/never-downloaded' is not in the Hugging Face cache" in offline["error"]
    assert "HF_HUB_OFFLINE=1" in offline["error"]


def test_hub_errors(hub, tmp_path):
    folder = save_bundle(random_bundle("lfd2", 0, layer_types=("linear",)), tmp_path / "bundle")
    files = {p.name: p.read_bytes() for p in folder.iterdir()}
    newer_config = {**json.loads(files["config.json"]), "schema_version": 99}
    seeded = {
        "ok": files,
        "newer": {**files, "config.json": json.dumps(newer_config).encode()},
        "junk": {"notes.txt": b"not a bundle"},
    }
    for name, content in seeded.items():
        hub.create_repo(f"weightcast-test/errors-{name}")
        hub.commit(f"weightcast-test/errors-{name}", "main", content)

    errors = run_client(
        """
        import json
        from weightcast.train_predictor.bundle import BundleFormatError, load_bundle
        from weightcast.train_predictor.hub import HubError

        errors = {}
        for case, repo, revision in [
            ("missing", "weightcast-test/no-such-repo", None),
            ("revision", "weightcast-test/errors-ok", "v9"),
            ("schema", "weightcast-test/errors-newer", None),
            ("junk", "weightcast-test/errors-junk", None),
            ("bad-id", "not/a/repo id", None),
        ]:
            try:
                load_bundle(repo, revision=revision)
                errors[case] = None
            except (HubError, BundleFormatError) as err:
                errors[case] = [type(err).__name__, str(err)]
        assert load_bundle("weightcast-test/errors-ok").kind == "lfd2"
        print(json.dumps(errors))
        """,
        hub,
        tmp_path / "cache",
    )
    kind, message = errors["missing"]
    assert kind == "HubError" and f"'weightcast-test/no-such-repo' not found on {hub.url}" in message
    kind, message = errors["revision"]
    assert kind == "HubError"
    assert "revision 'v9' not found in Hub repository 'weightcast-test/errors-ok'" in message
    kind, message = errors["schema"]
    assert kind == "BundleFormatError" and "is a predictor bundle of schema version 99 (written by" in message
    assert f"reads schema version {SCHEMA_VERSION}" in message
    assert errors["junk"] == [
        "BundleFormatError",
        "Hub repository 'weightcast-test/errors-junk' is not a predictor bundle: it has no config.json "
        "(found: nothing); a bundle holds config.json, model.safetensors, README.md, as written by "
        "save_bundle",
    ]
    kind, message = errors["bad-id"]
    assert kind == "HubError" and "neither a local folder nor a valid Hub repository id" in message
