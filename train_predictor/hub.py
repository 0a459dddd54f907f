"""All Hugging Face Hub I/O of weightcast (`train_predictor` stage): it moves folders and knows
nothing of what they hold. `download` brings a repository at a revision into the Hugging Face cache
and returns the folder with the commit it resolved to; `upload` commits a folder. What a bundle is,
and the checks before a push, live in `train_predictor.bundle` (`load_bundle`, `publish`), which
imports this module; this module imports nothing of weightcast's but the error base.

Downloads go through the Hugging Face cache (`HF_HUB_CACHE`) and work offline from it
(`HF_HUB_OFFLINE=1`). huggingface_hub reads `HF_ENDPOINT`, `HF_HUB_OFFLINE`, `HF_HUB_CACHE` and
`HF_TOKEN` once, when it is imported: set them before importing weightcast's Hub functions.

Errors: `HubError` when the Hub cannot give or take what was asked (missing repository, unknown
revision, not cached while offline, refused upload).
"""

from __future__ import annotations

from contextlib import contextmanager
from pathlib import Path
from typing import Iterator, Sequence

from huggingface_hub import HfApi, constants, snapshot_download
from huggingface_hub.errors import (
    HFValidationError,
    HfHubHTTPError,
    LocalEntryNotFoundError,
    OfflineModeIsEnabled,
    RepositoryNotFoundError,
    RevisionNotFoundError,
)

from weightcast.errors import WeightcastError

__all__ = ["HubError", "download", "upload"]


class HubError(WeightcastError, OSError):
    """The Hub (or the cache standing in for it offline) could not give or take a folder."""


def download(
    repo_id: str,
    revision: str | None = None,
    *,
    allow_patterns: Sequence[str] | None = None,
    token: str | None = None,
    cache_dir: str | Path | None = None,
    local_files_only: bool = False,
) -> tuple[Path, str]:
    """The files of Hub model repository `repo_id` ("org/name") at `revision` (branch, tag or
    commit; default main) that match `allow_patterns`, in the Hugging Face cache (`cache_dir`,
    default `HF_HUB_CACHE`); return (their folder, the 40-hex commit `revision` resolved to)."""
    with _hub_errors(repo_id, revision, cache_dir):
        try:
            folder = snapshot_download(
                repo_id,
                revision=revision,
                allow_patterns=list(allow_patterns) if allow_patterns is not None else None,
                token=token,
                cache_dir=cache_dir,
                local_files_only=local_files_only,
            )
        except HFValidationError:
            raise HubError(
                f"{repo_id!r} is neither a local folder nor a valid Hub repository id (org/name)"
            ) from None
    folder = Path(folder)
    return folder, folder.name  # the cache keeps each commit in snapshots/<commit sha>/


def upload(
    folder: str | Path,
    repo_id: str,
    *,
    commit_message: str,
    token: str | None = None,
    private: bool = False,
    revision: str | None = None,
) -> str:
    """Commit the files of `folder` to Hub model repository `repo_id`, creating the repository (and
    the branch `revision`, default main) if needed; return the commit's URL. The token comes from
    `token`, else HF_TOKEN or `hf auth login`."""
    api = HfApi(token=token)
    with _hub_errors(repo_id, revision):
        api.create_repo(repo_id, private=private, exist_ok=True)
        if revision is not None:
            api.create_branch(repo_id, branch=revision, exist_ok=True)
        commit = api.upload_folder(
            repo_id=repo_id, folder_path=folder, revision=revision, commit_message=commit_message
        )
    return commit.commit_url


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
