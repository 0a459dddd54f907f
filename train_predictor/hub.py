"""All Hugging Face Hub I/O of weightcast (`train_predictor` stage, used by `eval` and users):
save a `PredictorBundle` to a folder, load one from a folder or a Hub repository, publish a folder
as a Hub model repository.

Loading downloads through the Hugging Face cache (`HF_HUB_CACHE`) and works offline from it
(`HF_HUB_OFFLINE=1`); it is always strict: every weight of model.safetensors must match the
predictors that config.json describes. huggingface_hub reads `HF_ENDPOINT`, `HF_HUB_OFFLINE`,
`HF_HUB_CACHE` and `HF_TOKEN` once, when it is imported: set them before importing weightcast.

Errors: `HubError` when the Hub cannot give what was asked (missing repository, unknown revision,
not cached while offline, refused upload); `BundleFormatError` when the files are not a bundle this
version reads (no config.json, another schema version, weights that do not match the config).
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import safetensors.torch
from huggingface_hub import HfApi, constants, snapshot_download
from huggingface_hub.errors import (
    HFValidationError,
    HfHubHTTPError,
    LocalEntryNotFoundError,
    OfflineModeIsEnabled,
    RepositoryNotFoundError,
    RevisionNotFoundError,
)
from safetensors import SafetensorError

from weightcast.train_predictor.bundle import (
    BUNDLE_FILES,
    CARD_FILE,
    CONFIG_FILE,
    WEIGHTS_FILE,
    BundleFormatError,
    PredictorBundle,
)

__all__ = ["HubError", "save_bundle", "load_bundle", "publish"]


class HubError(OSError):
    """The Hub (or the cache standing in for it offline) could not give or take a bundle."""


def save_bundle(bundle: PredictorBundle, folder: str | Path) -> Path:
    """Write `bundle` to `folder` (config.json, model.safetensors, README.md) with
    `save_pretrained`; each file is replaced whole, so a reader never sees half a bundle."""
    folder = Path(folder)
    folder.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=folder.parent, prefix=f".{folder.name}.") as tmp:
        bundle.save_pretrained(tmp)
        folder.mkdir(exist_ok=True)
        for name in BUNDLE_FILES:
            os.replace(Path(tmp) / name, folder / name)
    return folder


def load_bundle(
    source: str | Path,
    revision: str | None = None,
    *,
    token: str | None = None,
    cache_dir: str | Path | None = None,
    local_files_only: bool = False,
) -> PredictorBundle:
    """Load a bundle from a local folder or a Hub repository id ("org/name") at `revision`
    (branch, tag or commit; default main), strictly, in eval mode. A repository is downloaded
    through the Hugging Face cache (`cache_dir`, default `HF_HUB_CACHE`) and read from it
    offline."""
    if Path(source).is_dir():
        if revision is not None:
            raise ValueError(f"revision={revision!r} selects a Hub commit; {str(source)!r} is a local folder")
        return _load_folder(Path(source), f"folder {str(source)!r}")
    repo_id = str(source)
    with _hub_errors(repo_id, revision, cache_dir):
        try:
            folder = snapshot_download(
                repo_id,
                revision=revision,
                allow_patterns=list(BUNDLE_FILES),
                token=token,
                cache_dir=cache_dir,
                local_files_only=local_files_only,
            )
        except HFValidationError:
            raise HubError(
                f"{repo_id!r} is neither a local folder nor a valid Hub repository id (org/name)"
            ) from None
    at = f" at revision {revision!r}" if revision else ""
    return _load_folder(Path(folder), f"Hub repository {repo_id!r}{at}")


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
        raise FileNotFoundError(f"bundle folder {str(folder)!r} does not exist")
    bundle = load_bundle(folder)  # never publish what would not load back
    api = HfApi(token=token)
    with _hub_errors(repo_id, revision), tempfile.TemporaryDirectory() as tmp:
        api.create_repo(repo_id, private=private, exist_ok=True)
        if revision is not None:
            api.create_branch(repo_id, branch=revision, exist_ok=True)
        staged = Path(tmp) / "bundle"
        shutil.copytree(folder, staged)
        bundle.generate_model_card(repo_id=repo_id).save(staged / CARD_FILE)
        commit = api.upload_folder(
            repo_id=repo_id,
            folder_path=staged,
            revision=revision,
            commit_message=commit_message
            or f"Upload {bundle.kind} predictor bundle (weightcast {bundle.package_version})",
        )
    return commit.commit_url


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


@contextmanager
def _hub_errors(repo_id: str, revision: str | None, cache_dir: str | Path | None = None) -> Iterator[None]:
    """Translate huggingface_hub's exceptions into `HubError`s that say what to do."""
    at = f" at revision {revision!r}" if revision else ""
    try:
        yield
    except HFValidationError as err:
        raise HubError(f"{repo_id!r} is not a valid Hub repository id (org/name): {err}") from None
    except RevisionNotFoundError:
        raise HubError(
            f"revision {revision!r} not found in Hub repository {repo_id!r} on {constants.ENDPOINT}; "
            "give a branch, tag or commit id that exists (default: main)"
        ) from None
    except RepositoryNotFoundError:
        raise HubError(
            f"Hub repository {repo_id!r} not found on {constants.ENDPOINT}, or it is private and the token "
            "(HF_TOKEN or `hf auth login`) has no access to it; check the id (org/name)"
        ) from None
    except OfflineModeIsEnabled:
        raise HubError(f"cannot reach the Hub for {repo_id!r}{at}: HF_HUB_OFFLINE=1 is set") from None
    except LocalEntryNotFoundError:
        offline = " (HF_HUB_OFFLINE=1)" if constants.is_offline_mode() else ""
        raise HubError(
            f"Hub repository {repo_id!r}{at} is not in the Hugging Face cache "
            f"({cache_dir or constants.HF_HUB_CACHE}) "
            f"and the Hub at {constants.ENDPOINT} cannot be reached{offline}; load it once online to cache it"
        ) from None
    except HfHubHTTPError as err:
        status = err.response.status_code if err.response is not None else None
        hint = "; check the token (HF_TOKEN or `hf auth login`)" if status in (401, 403) else ""
        raise HubError(f"Hub request for {repo_id!r}{at} failed: {err}{hint}") from err
