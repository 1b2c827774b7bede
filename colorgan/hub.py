"""The Hugging Face Hub: `hf://owner/name[@revision]` names, downloading a model's files into
huggingface_hub's own cache (with HF_HUB_OFFLINE=1 it reads that cache alone) at a commit it
names, and publishing a folder.

Only the files asked for are downloaded (a model folder's config.json, model.safetensors and
README.md), so nothing else a repository holds (code, pickles) ever reaches the disk. What they
mean is modeldir's business; this module only moves files.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from colorgan.errors import HubError, MissingDependency

PREFIX = "hf://"
INSTALL_HINT = "pip install huggingface_hub"
LOGIN_HINT = "run `hf auth login` (or `huggingface-cli login`) or set HF_TOKEN"
# owner/name as the Hub spells repo ids: letters, digits, '-', '_', '.' (not first or last, no
# '--' or '..'), at most 96 characters each
_PART = r"\w(?:[\w.-]{0,94}\w)?"
_REPO_ID = re.compile(f"{_PART}/{_PART}", re.ASCII)
_REVISION = re.compile(r"[A-Za-z0-9._/-]{1,128}")  # a git ref name or a commit hash
_COMMIT = re.compile(r"[0-9a-f]{40}")
_SHOWN = 200  # characters of a library's error message kept in the one line


@dataclass(frozen=True)
class HubName:
    """A model on the Hub: its repo id and the revision asked for (None: the default branch)."""

    repo_id: str
    revision: str | None = None

    def __str__(self) -> str:
        return PREFIX + self.repo_id + (f"@{self.revision}" if self.revision else "")


@dataclass(frozen=True)
class Snapshot:
    """Files of one commit of a Hub repo, in huggingface_hub's cache."""

    folder: Path  # <cache>/models--owner--name/snapshots/<commit>
    repo_id: str
    commit: str  # the 40-hex commit the files are from: what was asked for, pinned

    def __str__(self) -> str:
        return f"{PREFIX}{self.repo_id}@{self.commit}"


def is_hub_name(model: object) -> bool:
    """Whether MODEL names a Hub model (`hf://owner/name[@revision]`)."""
    return isinstance(model, str) and model.startswith(PREFIX)


def check_repo_id(repo_id: str, what: str) -> str:
    """`repo_id` if it is owner/name as the Hub spells it, else a HubError."""
    if not _REPO_ID.fullmatch(repo_id) or "--" in repo_id or ".." in repo_id:
        raise HubError(
            f"{what}: {repo_id[:_SHOWN]!r} is not a Hub model name; give owner/name "
            f"(letters, digits, '-', '_', '.'), e.g. hf://someone/anime-colorizer"
        )
    return repo_id


def parse_hub_name(text: str) -> HubName:
    """'hf://owner/name' or 'hf://owner/name@revision' (a branch, tag or commit)."""
    rest = text.removeprefix(PREFIX)
    repo_id, at, revision = rest.partition("@")
    check_repo_id(repo_id, text)
    if at and not revision.strip():
        raise HubError(f"{text}: nothing after '@'; give a branch, tag or commit, or drop the '@'")
    bad_ref = ".." in revision or revision.startswith(("/", "-", ".")) or revision.endswith("/")
    if at and (not _REVISION.fullmatch(revision) or bad_ref):
        raise HubError(
            f"{text[:_SHOWN]}: {revision[:_SHOWN]!r} is no branch, tag or commit name (letters, "
            "digits, '.', '_', '-', '/'; at most 128)"
        )
    return HubName(repo_id, revision or None)


def _import_hub() -> Any:
    try:
        import huggingface_hub
    except ImportError:
        raise MissingDependency(
            f"Hugging Face Hub models need huggingface_hub: {INSTALL_HINT}"
        ) from None
    return huggingface_hub


def _network_errors() -> tuple[type[Exception], ...]:
    """What the Hub client raises when the Hub cannot be reached or answers: OSError and
    ValueError (requests' errors, the Hub's HTTP errors, bad names) and httpx's errors (newer
    huggingface_hub talks through httpx, whose ConnectError is no OSError)."""
    try:
        import httpx
    except ImportError:
        return (OSError, ValueError)
    return (OSError, ValueError, httpx.HTTPError)


def _first_line(err: BaseException) -> str:
    text = str(err).strip()
    return text.splitlines()[0][:_SHOWN] if text else type(err).__name__


def _download_problem(name: HubName, err: Exception) -> str:
    """One line on why `name` could not be had."""
    from huggingface_hub import constants, errors

    incomplete = getattr(errors, "IncompleteSnapshotError", ())  # newer huggingface_hub only
    if isinstance(err, errors.RevisionNotFoundError):
        return f"{name}: the repo has no revision {name.revision!r}"
    if isinstance(err, errors.GatedRepoError):
        return f"{name}: the model is gated: accept its terms on the Hub, then {LOGIN_HINT}"
    if isinstance(err, errors.RepositoryNotFoundError):
        return (
            f"{name}: no such model on the Hugging Face Hub "
            f"(a private one needs a token: {LOGIN_HINT})"
        )
    if isinstance(err, incomplete):
        return f"{name}: the cached copy is incomplete and the Hub cannot be reached"
    if isinstance(err, errors.LocalEntryNotFoundError):
        if constants.HF_HUB_OFFLINE:
            return (
                f"{name}: not in the Hugging Face cache, and HF_HUB_OFFLINE is set: download it "
                f"once online (or unset HF_HUB_OFFLINE)"
            )
        return f"{name}: cannot reach the Hugging Face Hub, and the model is not in its cache"
    response = getattr(err, "response", None)
    if isinstance(err, errors.HfHubHTTPError) and response is not None:
        return f"{name}: the Hub answered {response.status_code} ({_first_line(err)})"
    return f"{name}: cannot download the model ({type(err).__name__}: {_first_line(err)})"


def download(name: HubName, files: list[str]) -> Snapshot:
    """The `files` of `name` at its revision, downloaded into huggingface_hub's cache (or, when
    offline or the Hub cannot be reached, found there). The commit they come from is pinned in
    the Snapshot. A file the repo lacks is simply absent from the folder."""
    hub = _import_hub()
    try:
        folder = Path(
            hub.snapshot_download(
                name.repo_id,
                revision=name.revision,
                allow_patterns=files,
                library_name="colorgan",
            )
        )
    except _network_errors() as err:  # the Hub's errors: HTTP, not cached, bad names
        raise HubError(_download_problem(name, err)) from None
    commit = folder.name if _COMMIT.fullmatch(folder.name) else ""
    if not commit:  # huggingface_hub names a snapshot by its commit; anything else is not one
        raise HubError(f"{name}: huggingface_hub gave {folder}, which is not a cached snapshot")
    return Snapshot(folder, name.repo_id, commit)


def token() -> str:
    """The Hugging Face token configured here (HF_TOKEN, or `hf auth login`'s file); a
    HubError saying how to log in when there is none."""
    found = _import_hub().get_token()
    if not found:
        raise HubError(f"no Hugging Face token: {LOGIN_HINT}")
    return str(found)


def push(folder: Path, repo_id: str, files: list[str], access: str, message: str) -> str:
    """Upload `files` of `folder` to the model repo `repo_id` (created if missing) as one
    commit; returns the commit's URL."""
    hub = _import_hub()
    api = hub.HfApi(token=access, library_name="colorgan")
    try:
        api.create_repo(repo_id, repo_type="model", exist_ok=True)
        commit = api.upload_folder(
            repo_id=repo_id,
            folder_path=str(folder),
            repo_type="model",
            allow_patterns=files,
            commit_message=message,
        )
    except _network_errors() as err:
        status = getattr(getattr(err, "response", None), "status_code", None)
        why = (
            f"the Hub answered {status}"
            if status
            else f"cannot reach the Hub: {type(err).__name__}"
        )
        hint = f"; check the token's write access ({LOGIN_HINT})" if status in (401, 403) else ""
        raise HubError(f"cannot push to {repo_id}: {why} ({_first_line(err)}){hint}") from None
    return str(getattr(commit, "commit_url", "") or f"https://huggingface.co/{repo_id}")
