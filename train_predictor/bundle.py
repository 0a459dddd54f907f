"""The predictor bundle of the `train_predictor` stage: one fitted predictor per layer type, the
unit that is saved, published to the Hugging Face Hub and loaded by `eval` and by users.

A `PredictorBundle` holds predictors of one `kind` (a `PREDICTORS` name) in an `nn.ModuleDict`
keyed by layer type (`zoo.layer_types.LAYER_TYPES`). All of them read windows of the same
`input_length` and predict the same `horizon`. It is a `PyTorchModelHubMixin` model: its
constructor arguments are JSON values, so `save_pretrained` writes a folder with
`model.safetensors`, `config.json` (these arguments plus the derived `layer_types`,
`input_length`, `horizon`) and a `README.md` model card generated from the config.

This module owns the format and is the only way a bundle is opened or pushed:
- `load_bundle(source, revision=None)` (also `PredictorBundle.from_pretrained`) opens
  `shipped:<kind>` (a pretrained bundle installed with the package, `SHIPPED_BUNDLES_DIR/<kind>`),
  a local folder, or a Hub repository id ("org/name") at `revision`, always strictly, and records
  where it came from on the bundle (`bundle.source`, and `bundle.revision`: the resolved commit);
- `save_bundle(bundle, folder)` writes one; `publish(folder, repo_id)` (also
  `bundle.push_to_hub(repo_id)`) pushes a folder after checking that it loads back.
The Hub transfers themselves are `train_predictor.hub`'s (`download`, `upload`), which imports
nothing of this module.

Fallback when a layer type had no training data: `predictor_for(layer_type)` serves it with the
predictor of the type in `fallback[layer_type]`. With `fallback=None` the bundle fills the table by
`DEFAULT_FALLBACK_ORDER`: the first fitted type in the missing type's preference list, weight
matrices (conv, linear, embedding) before vectors (bias, norm) and vice versa, so a bundle with
at least one fitted type serves every type. An explicit `fallback` dict is used as given: a
missing type that it does not name raises `MissingPredictorError`.
"""

from __future__ import annotations

import inspect
import json
import math
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any, Mapping

import safetensors.torch
from huggingface_hub import EvalResult, ModelCard, ModelCardData, PyTorchModelHubMixin
from safetensors import SafetensorError
from torch import Tensor, nn

from weightcast.errors import WeightcastError
from weightcast.train_predictor.hub import download, upload
from weightcast.train_predictor.predictors import PREDICTORS, Predictor, build_predictor
from weightcast.zoo.config import ConfigError
from weightcast.zoo.layer_types import LAYER_TYPES
from weightcast.zoo.registry import UnknownNameError
from weightcast.zoo.rundir import package_version as current_package_version

__all__ = [
    "PredictorBundle",
    "load_bundle",
    "save_bundle",
    "bundle_artifact",
    "publish",
    "shipped_bundle_folder",
    "BundleFormatError",
    "BundleNotFoundError",
    "MissingPredictorError",
    "SHIPPED_PREFIX",
    "SHIPPED_BUNDLES_DIR",
    "SCHEMA_VERSION",
    "CONFIG_FILE",
    "WEIGHTS_FILE",
    "CARD_FILE",
    "BUNDLE_FILES",
    "DEFAULT_FALLBACK_ORDER",
]

# Version of the folder layout and config.json keys; bump it when either changes incompatibly.
SCHEMA_VERSION = 1

CONFIG_FILE = "config.json"
WEIGHTS_FILE = "model.safetensors"
CARD_FILE = "README.md"
BUNDLE_FILES = (CONFIG_FILE, WEIGHTS_FILE, CARD_FILE)

SHIPPED_PREFIX = "shipped:"
# Where `shipped:<kind>` bundles live: pretrained bundles installed with the package (package data).
SHIPPED_BUNDLES_DIR = Path(__file__).resolve().parent / "pretrained"

DEFAULT_FALLBACK_ORDER: dict[str, tuple[str, ...]] = {
    "conv": ("linear", "embedding", "bias", "norm"),
    "linear": ("conv", "embedding", "bias", "norm"),
    "embedding": ("linear", "conv", "bias", "norm"),
    "bias": ("norm", "linear", "conv", "embedding"),
    "norm": ("bias", "linear", "conv", "embedding"),
}

# config.json keys computed from the predictors, written for readers of the file (and checked on load).
_DERIVED_KEYS = ("layer_types", "input_length", "horizon")
_BASELINES = ("no-jump", "linear-fit")  # the validation columns every card shows after the bundle's own
_TRAINED_ON_KEYS = ("collection", "trajectories", "architectures", "tasks", "optimizers")  # card order


class BundleFormatError(WeightcastError, ValueError):
    """Files that should hold a predictor bundle do not: missing files, another schema version,
    a config.json that is not a bundle's, or weights that do not match the config."""


class BundleNotFoundError(WeightcastError, FileNotFoundError):
    """No bundle where one was asked for: a missing folder, or a kind that is not shipped."""


class MissingPredictorError(WeightcastError, LookupError):
    """A bundle has no predictor, and no fallback, for a layer type."""


class PredictorBundle(nn.Module, PyTorchModelHubMixin):
    """One fitted predictor of `kind` per layer type (see the module docstring).

    Args:
        kind: the `PREDICTORS` name of every predictor in the bundle.
        predictors: layer type -> that predictor's `config` (its constructor keyword arguments).
        fallback: missing layer type -> fitted layer type whose predictor serves it; None applies
            `DEFAULT_FALLBACK_ORDER`.
        trained_on: summary of the collection it was fitted on; the model card shows the keys
            `collection`, `architectures`, `tasks`, `optimizers`, `trajectories` and any others.
        validation: layer type -> {method: validation error}, the bundle's kind and the
            baselines (`no-jump`, `linear-fit`, ...) side by side.
        commands: the exact commands that produced the bundle, for the model card.
        schema_version: must be `SCHEMA_VERSION`; config.json records it.
        package_version: weightcast version that made the bundle (default: the running one).
    """

    def __init__(
        self,
        kind: str,
        predictors: dict[str, dict[str, Any]],
        fallback: dict[str, str] | None = None,
        trained_on: dict[str, Any] | None = None,
        validation: dict[str, dict[str, float]] | None = None,
        commands: list[str] | None = None,
        schema_version: int = SCHEMA_VERSION,
        package_version: str | None = None,
    ):
        super().__init__()
        if schema_version != SCHEMA_VERSION:
            raise BundleFormatError(
                f"bundle schema version {schema_version} cannot be built by weightcast "
                f"{current_package_version()}, which reads schema version {SCHEMA_VERSION}"
            )
        PREDICTORS.check(kind)
        if not isinstance(predictors, Mapping) or not predictors:
            raise ConfigError(
                f"a bundle needs at least one predictor, given as {{layer type: config}}; got {predictors!r}"
            )
        _check_layer_types(predictors, "predictors")
        self.kind = kind
        # Keys in LAYER_TYPES order, so state dicts and configs do not depend on insertion order.
        self.predictors = nn.ModuleDict(
            {t: build_predictor(kind, **predictors[t]) for t in LAYER_TYPES if t in predictors}
        )
        shapes = {t: (p.input_length, p.horizon) for t, p in self.predictors.items()}
        if len(set(shapes.values())) > 1:
            raise ConfigError(
                f"all predictors of a bundle must share input_length and horizon; got "
                f"(input_length, horizon) per layer type {shapes}"
            )
        self.input_length, self.horizon = next(iter(shapes.values()))
        self.fallback = self._resolve_fallback(fallback)
        self.trained_on = _json_value(trained_on or {}, "trained_on")
        self.validation = _check_validation(_json_value(validation or {}, "validation"))
        self.commands = [str(c) for c in commands or []]
        self.schema_version = schema_version
        self.package_version = package_version or current_package_version()
        # Where `load_bundle` opened it (shipped:<kind>, a folder, "org/name") and, from the Hub,
        # the commit its revision resolved to; None for a bundle built in this process.
        self.source: str | None = None
        self.revision: str | None = None

    @classmethod
    def from_predictors(cls, predictors: Mapping[str, Predictor], **kwargs: Any) -> PredictorBundle:
        """A bundle holding copies of fitted predictors (layer type -> predictor, one kind);
        `kwargs` are the other constructor arguments (fallback, trained_on, validation, ...)."""
        kinds = {p.kind for p in predictors.values()}
        if len(kinds) != 1:
            raise ConfigError(f"a bundle holds predictors of one kind; got kinds {sorted(kinds)}")
        configs = {t: p.config for t, p in predictors.items()}
        bundle = cls(kinds.pop(), configs, **kwargs)
        for layer_type, predictor in predictors.items():
            bundle.predictors[layer_type].load_state_dict(predictor.state_dict())
        return bundle

    @classmethod
    def from_config(cls, config: Mapping[str, Any], source: str = "config") -> PredictorBundle:
        """Build a bundle (untrained weights) from the contents of a config.json; `source` names
        where the config came from in error messages."""
        if not isinstance(config, Mapping) or "schema_version" not in config:
            raise BundleFormatError(
                f"{source} is not a predictor bundle: its {CONFIG_FILE} has no schema_version"
            )
        if config["schema_version"] != SCHEMA_VERSION:
            raise BundleFormatError(
                f"{source} is a predictor bundle of schema version {config['schema_version']} (written by "
                f"weightcast {config.get('package_version', '?')}); weightcast {current_package_version()} "
                f"reads schema version {SCHEMA_VERSION}: install a matching weightcast or re-save the bundle"
            )
        arguments = list(inspect.signature(cls.__init__).parameters)[1:]  # after self
        unknown = sorted(set(config) - set(arguments) - set(_DERIVED_KEYS))
        missing = [name for name in ("kind", "predictors") if name not in config]
        if unknown or missing:
            raise BundleFormatError(
                f"{source} is not a predictor bundle config: missing keys {missing}, unknown keys {unknown}; "
                f"a bundle's {CONFIG_FILE} has the keys {arguments + list(_DERIVED_KEYS)}"
            )
        try:
            bundle = cls(**{name: config[name] for name in arguments if name in config})
        except (ConfigError, UnknownNameError, TypeError) as err:
            raise BundleFormatError(f"{source} holds an invalid predictor bundle config: {err}") from None
        stated = {key: config[key] for key in _DERIVED_KEYS if key in config}
        actual = {key: bundle.config[key] for key in stated}
        if stated != actual:
            raise BundleFormatError(
                f"{source}: {CONFIG_FILE} states {stated} but its predictors give {actual}"
            )
        return bundle

    @classmethod
    def from_pretrained(
        cls,
        source: str | Path,
        *,
        revision: str | None = None,
        token: str | None = None,
        cache_dir: str | Path | None = None,
        local_files_only: bool = False,
    ) -> PredictorBundle:
        """`load_bundle`: `shipped:<kind>`, a local folder or a Hub repository ("org/name", through
        the Hugging Face cache), strictly. Replaces the mixin's `from_pretrained`, which loads
        non-strictly and hides a missing repository or revision."""
        return load_bundle(
            source, revision=revision, token=token, cache_dir=cache_dir, local_files_only=local_files_only
        )

    @property
    def layer_types(self) -> tuple[str, ...]:
        """The layer types with a fitted predictor, in `LAYER_TYPES` order."""
        return tuple(self.predictors.keys())

    @property
    def config(self) -> dict[str, Any]:
        """The JSON config written to config.json: constructor arguments plus derived keys."""
        return {
            "kind": self.kind,
            "layer_types": list(self.layer_types),
            "input_length": self.input_length,
            "horizon": self.horizon,
            "predictors": {t: p.config for t, p in self.predictors.items()},
            "fallback": dict(self.fallback),
            "trained_on": self.trained_on,
            "validation": self.validation,
            "commands": list(self.commands),
            "schema_version": self.schema_version,
            "package_version": self.package_version,
        }

    def resolve(self, layer_type: str) -> str:
        """The fitted layer type whose predictor serves `layer_type` (itself when fitted)."""
        if layer_type not in LAYER_TYPES:
            raise UnknownNameError(f"unknown layer type {layer_type!r}; valid: {', '.join(LAYER_TYPES)}")
        if layer_type in self.predictors:
            return layer_type
        if layer_type in self.fallback:
            return self.fallback[layer_type]
        raise MissingPredictorError(
            f"this {self.kind!r} bundle has no predictor for layer type {layer_type!r} (no training data) "
            f"and no fallback for it; fitted: {', '.join(self.layer_types)}; "
            f"fallbacks: {self.fallback or 'none'}"
        )

    def predictor_for(self, layer_type: str) -> Predictor:
        """The predictor for `layer_type`, applying the fallback when it was not fitted."""
        return self.predictors[self.resolve(layer_type)]

    def predict(self, window: Tensor, layer_type: str, horizon: int | None = None) -> Tensor:
        """(N, input_length) windows of weights of `layer_type` -> (N,) predicted values."""
        return self.predictor_for(layer_type).predict(window, horizon)

    def push_to_hub(  # type: ignore[override]
        self,
        repo_id: str,
        *,
        commit_message: str | None = None,
        private: bool | None = None,
        token: str | None = None,
        branch: str | None = None,
        **unsupported: Any,
    ) -> str:
        """Save the bundle and `publish` it (with its load-back check) to `repo_id` on `branch`;
        return the commit's URL. Replaces the mixin's `push_to_hub`, so every push goes one way."""
        if unsupported:
            raise TypeError(
                f"PredictorBundle.push_to_hub takes commit_message, private, token and branch; "
                f"got also {sorted(unsupported)}"
            )
        with tempfile.TemporaryDirectory() as tmp:
            folder = save_bundle(self, Path(tmp) / "bundle")
            return publish(
                folder, repo_id, token=token, private=bool(private), revision=branch,
                commit_message=commit_message,
            )

    def _save_pretrained(self, save_directory: Path) -> None:
        """Weights (the mixin's safetensors writer) and our config.json, which the mixin keeps."""
        super()._save_pretrained(save_directory)
        (save_directory / CONFIG_FILE).write_text(json.dumps(self.config, indent=2) + "\n")

    def generate_model_card(self, repo_id: str | None = None) -> ModelCard:
        """The README.md model card, generated from the config; `repo_id` goes into the usage snippet.

        Its metadata lets a Hub search find weight predictors: `pipeline_tag`
        time-series-forecasting (a weight's history is a time series) and the tags `weightcast`,
        `weight-prediction`, `weight-nowcasting` and the kind; `datasets`: the collection it was
        trained on; `model-index`: the validation table (MAE per layer type, the bundle's own
        kind); the license: Apache-2.0 for weightcast's own bundles, an imported peer's from its
        `trained_on.license`, with `base_model` when its source is a Hub model."""
        collection = self.trained_on.get("collection")
        imported = "source" in self.trained_on  # an imported peer: its collection is a description
        results = self._eval_results()
        data = ModelCardData(
            license=_license_id(self.trained_on),
            library_name="weightcast",
            pipeline_tag="time-series-forecasting",
            tags=[*_CARD_TAGS, self.kind],
            datasets=None if imported or not collection else [str(collection)],
            base_model=_hub_model_id(self.trained_on.get("source")),
            model_name=(repo_id or f"weightcast-{self.kind}") if results else None,
            eval_results=results or None,
        )
        return ModelCard(f"---\n{data.to_yaml()}\n---\n\n{self._card_body(repo_id)}")

    def _eval_results(self) -> list[EvalResult]:
        """The validation table as model-index results: the bundle's own MAE per layer type."""
        collection = str(self.trained_on.get("collection") or "not recorded")
        return [
            EvalResult(
                task_type="time-series-forecasting", task_name="weight prediction",
                dataset_type=collection, dataset_name=f"{collection} (held-out runs)",
                metric_type="mae", metric_name=f"MAE ({layer_type}, horizon {self.horizon})",
                metric_value=row[self.kind],
            )
            for layer_type, row in self.validation.items()
            if self.kind in row and math.isfinite(row[self.kind])
        ]

    def _resolve_fallback(self, fallback: Mapping[str, str] | None) -> dict[str, str]:
        missing = [t for t in LAYER_TYPES if t not in self.predictors]
        if fallback is None:
            return {t: next(f for f in DEFAULT_FALLBACK_ORDER[t] if f in self.predictors) for t in missing}
        _check_layer_types(fallback, "fallback")
        bad = {k: v for k, v in fallback.items() if k in self.predictors or v not in self.predictors}
        if bad:
            raise ConfigError(
                f"fallback maps layer types without a predictor ({', '.join(missing) or 'none'}) to fitted "
                f"ones ({', '.join(self.predictors)}); invalid entries: {bad}"
            )
        return {t: fallback[t] for t in LAYER_TYPES if t in fallback}

    def _card_body(self, repo_id: str | None) -> str:
        fallbacks = ", ".join(f"{k} -> {v}" for k, v in self.fallback.items()) or "none (every type fitted)"
        source = repo_id or "<org>/<name> or a local folder"
        return f"""# weightcast predictor bundle: `{self.kind}`

Element-wise weight predictors of the `weightcast` package, one fitted per layer type. Each reads
the last {self.input_length} values of every scalar weight (oldest first) and predicts its value
{_plural(self.horizon, "step")} after the last one. A layer type without training data is served by another
type's predictor (fallbacks below).

| | |
|---|---|
| predictor kind | `{self.kind}` |
| window (input length) | {self.input_length} |
| horizon | {self.horizon} |
| layer types fitted | {", ".join(self.layer_types)} |
| fallbacks | {fallbacks} |
| schema version | {self.schema_version} |
| weightcast version | {self.package_version} |

## Training data

{_trained_on_markdown(self.trained_on)}

## Validation

{_validation_markdown(self.kind, self.validation)}

## How it was made

{_how_made_markdown(self.trained_on, self.commands)}

## Usage

```python
from weightcast.train_predictor import PredictorBundle

bundle = PredictorBundle.from_pretrained("{source}")
predictor = bundle.predictor_for("conv")  # conv, linear, bias, norm or embedding
future = predictor.predict(window)  # window: (N, {self.input_length}) past values -> (N,)
```

## License

{_license_markdown(self.trained_on)}
"""


def load_bundle(
    source: str | os.PathLike,
    revision: str | None = None,
    *,
    token: str | None = None,
    cache_dir: str | Path | None = None,
    local_files_only: bool = False,
) -> PredictorBundle:
    """Open a bundle, strictly, in eval mode, from `shipped:<kind>` (installed with weightcast), a
    local folder, or a Hub repository id ("org/name") at `revision` (branch, tag or commit; default
    main), downloaded through the Hugging Face cache (`cache_dir`, default `HF_HUB_CACHE`) and read
    from it offline. `bundle.source` and `bundle.revision` (the resolved commit) record where it
    came from."""
    where, commit = str(source), None
    local = where.startswith(SHIPPED_PREFIX) or Path(source).is_dir()
    if local and revision is not None:
        raise ConfigError(f"revision={revision!r} selects a Hub commit; {where!r} is not a Hub repository")
    if where.startswith(SHIPPED_PREFIX):
        folder, what = shipped_bundle_folder(where[len(SHIPPED_PREFIX):]), f"shipped bundle {where!r}"
    elif local:
        folder, what = Path(source), f"folder {where!r}"
    else:
        folder, commit = download(
            where, revision, allow_patterns=BUNDLE_FILES, token=token, cache_dir=cache_dir,
            local_files_only=local_files_only,
        )
        what = f"Hub repository {where!r}" + (f" at revision {revision!r}" if revision else "")
    bundle = _load_folder(folder, what)
    bundle.source, bundle.revision = where, commit
    return bundle


def bundle_artifact(source: str | os.PathLike) -> str:
    """The wandb artifact name of a bundle, the same in train-predictor (which logs it) and eval
    (which uses it): `bundle-<parent>-<folder>` for a folder (`<out_dir>/<kind>`), `bundle-<org>-<name>`
    for a Hub id, `bundle-shipped-<kind>` for a shipped bundle."""
    from weightcast.zoo.tracking import artifact_name

    where = str(source)
    if where.startswith(SHIPPED_PREFIX):
        parts = ("shipped", where[len(SHIPPED_PREFIX):])
    elif Path(where).is_dir():
        parts = Path(where).resolve().parts[-2:]
    else:
        parts = tuple(where.split("/")[-2:])
    return artifact_name("bundle-" + "-".join(parts))


def save_bundle(bundle: PredictorBundle, folder: str | Path) -> Path:
    """Write `bundle` to `folder` (config.json, model.safetensors, README.md) with
    `save_pretrained`; each file is replaced whole, so a reader never sees half a bundle. The files
    get the modes the umask gives new files (the temporary files are private until moved)."""
    folder = Path(folder)
    folder.parent.mkdir(parents=True, exist_ok=True)
    mode = _new_file_mode()
    with tempfile.TemporaryDirectory(dir=folder.parent, prefix=f".{folder.name}.") as tmp:
        bundle.save_pretrained(tmp)
        folder.mkdir(exist_ok=True)
        for name in BUNDLE_FILES:
            os.chmod(Path(tmp) / name, mode)
            os.replace(Path(tmp) / name, folder / name)
    return folder


def publish(
    folder: str | Path,
    repo_id: str,
    *,
    token: str | None = None,
    private: bool = False,
    revision: str | None = None,
    commit_message: str | None = None,
) -> str:
    """Upload the bundle folder to the Hub model repository `repo_id` ("org/name"), creating the
    repository (and the branch `revision`, default main) if needed, in one commit; return the
    commit's URL. The folder must load as a bundle; its README.md is regenerated with `repo_id` in
    the usage snippet. The token comes from `token`, else HF_TOKEN or `hf auth login`."""
    folder = Path(folder)
    if not folder.is_dir():
        raise BundleNotFoundError(f"bundle folder {str(folder)!r} does not exist")
    bundle = load_bundle(folder)  # never publish what would not load back
    with tempfile.TemporaryDirectory() as tmp:
        staged = Path(tmp) / "bundle"
        shutil.copytree(folder, staged)
        bundle.generate_model_card(repo_id=repo_id).save(staged / CARD_FILE)
        return upload(
            staged, repo_id, token=token, private=private, revision=revision,
            commit_message=commit_message
            or f"Upload {bundle.kind} predictor bundle (weightcast {bundle.package_version})",
        )


def shipped_bundle_folder(kind: str) -> Path:
    """The folder of the pretrained `kind` bundle installed with weightcast (`shipped:<kind>`);
    `BundleNotFoundError` naming the shipped kinds when there is none."""
    folder = SHIPPED_BUNDLES_DIR / kind
    if not (folder / CONFIG_FILE).is_file():
        shipped = [config.parent.name for config in sorted(SHIPPED_BUNDLES_DIR.glob(f"*/{CONFIG_FILE}"))]
        raise BundleNotFoundError(
            f"this weightcast ships no pretrained {kind!r} bundle (looked in {folder}; shipped: "
            f"{', '.join(shipped) or 'none'}); train one with `weightcast train-predictor` and give "
            "its folder"
        )
    return folder


def _load_folder(folder: Path, where: str) -> PredictorBundle:
    """Build the bundle that folder/config.json describes and load folder/model.safetensors into it."""
    config_path = folder / CONFIG_FILE
    if not config_path.is_file():
        found = sorted(p.name for p in folder.iterdir()) if folder.is_dir() else []
        raise BundleFormatError(
            f"{where} is not a predictor bundle: it has no {CONFIG_FILE} "
            f"(found: {', '.join(found) or 'nothing'}); "
            f"a bundle holds {', '.join(BUNDLE_FILES)}, as written by save_bundle"
        )
    try:
        config = json.loads(config_path.read_text())
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise BundleFormatError(
            f"{where} is not a predictor bundle: its {CONFIG_FILE} is not JSON ({err})"
        ) from None
    bundle = PredictorBundle.from_config(config, where)
    weights = folder / WEIGHTS_FILE
    if not weights.is_file():
        raise BundleFormatError(f"{where} is not a complete predictor bundle: it has no {WEIGHTS_FILE}")
    try:
        safetensors.torch.load_model(bundle, weights, strict=True)
    except (RuntimeError, SafetensorError) as err:
        raise BundleFormatError(f"{where}: {WEIGHTS_FILE} does not match its {CONFIG_FILE}: {err}") from None
    return bundle.eval()


def _new_file_mode() -> int:
    """The mode `open(path, "w")` would give a new file under the process's umask."""
    umask = os.umask(0o022)  # reading the umask means setting it; restored at once
    os.umask(umask)
    return 0o666 & ~umask


def _check_layer_types(mapping: Mapping[str, Any], what: str) -> None:
    unknown = sorted(set(mapping) - set(LAYER_TYPES))
    if unknown:
        raise ConfigError(f"{what}: unknown layer types {unknown}; valid: {', '.join(LAYER_TYPES)}")


def _json_value(value: Any, what: str) -> Any:
    """`value` as it reads back from JSON (tuples become lists), so a saved config equals the original."""
    try:
        return json.loads(json.dumps(value))
    except (TypeError, ValueError) as err:
        raise ConfigError(
            f"{what} must be JSON data (dicts with string keys, lists, numbers, strings): {err}"
        ) from None


def _check_validation(validation: Any) -> dict[str, dict[str, float]]:
    def is_row(row: Any) -> bool:
        return isinstance(row, dict) and all(type(v) in (int, float) for v in row.values())

    if not isinstance(validation, dict) or not all(is_row(row) for row in validation.values()):
        raise ConfigError(f"validation must map layer type -> {{method: error}}; got {validation!r}")
    _check_layer_types(validation, "validation")
    return validation


_CARD_TAGS = ("weightcast", "weight-prediction", "weight-nowcasting", "pytorch_model_hub_mixin")


def _plural(count: int, noun: str) -> str:
    return f"{count} {noun}" if count == 1 else f"{count} {noun}s"


_LICENSES = (("apache", "apache-2.0"), ("mit", "mit"), ("bsd-3", "bsd-3-clause"), ("bsd", "bsd-2-clause"),
             ("cc-by-4.0", "cc-by-4.0"), ("gpl-3", "gpl-3.0"))  # fmt: skip


def _license_id(trained_on: Mapping[str, Any]) -> str:
    """The card's license: Apache-2.0 (weightcast's) unless `trained_on.license` states another (an
    imported peer's): its Hub license id, or "unknown" when it names none."""
    stated = trained_on.get("license")
    if not stated:
        return "apache-2.0"
    text = str(stated).lower()
    return next((hub for key, hub in _LICENSES if text.startswith(key)), "unknown")


def _license_markdown(trained_on: Mapping[str, Any]) -> str:
    stated = trained_on.get("license")
    if not stated:
        return "Apache-2.0."
    source = trained_on.get("source")
    return f"{stated}" + (f" (weights from {source})." if source else ".")


def _hub_model_id(source: Any) -> str | None:
    """`source` as a Hub model id (base_model) when it is one: "org/name" or a huggingface.co URL."""
    if not isinstance(source, str):
        return None
    for prefix in ("https://huggingface.co/", "hf://"):
        if source.startswith(prefix):
            source = source[len(prefix):]
            break
    else:
        if "://" in source:  # a GitHub URL or another site: not a Hub model
            return None
    parts = source.strip("/").split("/")
    return "/".join(parts[:2]) if len(parts) >= 2 and all(parts[:2]) else None


def _how_made_markdown(trained_on: Mapping[str, Any], commands: list[str]) -> str:
    """The resolved configs embedded (collect, then train-predictor) with the commands that replay
    them; the recorded commands alone when no config was embedded (imported peers, old bundles)."""
    configs = {k: v for k, v in (trained_on.get("configs") or {}).items() if v}
    if not configs:
        return "```bash\n" + ("\n".join(commands) or "# not recorded") + "\n```"
    import yaml

    parts = ["Save each config below under its file name and run:", "", "```bash"]
    parts += [f"weightcast {stage.replace('_', '-')} --config {stage}.yaml" for stage in configs]
    parts.append("```")
    for stage, config in configs.items():
        text = yaml.safe_dump(config, sort_keys=False).rstrip()
        parts += ["", f"`{stage}.yaml`:", "", "```yaml", text, "```"]
    return "\n".join(parts)


def _trained_on_markdown(trained_on: Mapping[str, Any]) -> str:
    if not trained_on:
        return "Not recorded."
    known = [k for k in _TRAINED_ON_KEYS if k in trained_on]
    ordered = [k for k in known + sorted(set(trained_on) - set(known)) if k != "configs"]  # configs: below
    lines = []
    for key in ordered:
        value = trained_on[key]
        shown = ", ".join(f"`{v}`" for v in value) if isinstance(value, list) else f"`{value}`"
        lines.append(f"- {key}: {shown}")
    return "\n".join(lines)


def _validation_markdown(kind: str, validation: Mapping[str, Mapping[str, float]]) -> str:
    if not validation:
        return "No validation results recorded."
    methods = {m for row in validation.values() for m in row}
    first = dict.fromkeys((kind, *_BASELINES))  # a baseline bundle (kind "no-jump") gets one column
    columns = [m for m in first if m in methods] + sorted(methods - set(first))
    lines = [
        "Error of the predicted weights on held-out trajectories, per layer type (lower is better).",
        "",
        "| layer type | " + " | ".join(f"`{m}`" for m in columns) + " |",
        "|---|" + "---:|" * len(columns),
    ]
    for layer_type in LAYER_TYPES:
        if layer_type in validation:
            row = validation[layer_type]
            cells = [_number(row[m]) if m in row else "-" for m in columns]
            lines.append(f"| {layer_type} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _number(value: float) -> str:
    return f"{value:.4g}" if math.isfinite(value) else str(value)
