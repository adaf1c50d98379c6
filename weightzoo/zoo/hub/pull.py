"""Pulling a pushed zoo: download it into a folder or the Hugging Face cache and check every
file against the manifest before anyone opens it.

Endpoint, token and offline mode come from huggingface_hub (``HF_ENDPOINT``, ``HF_TOKEN`` or
``hf auth login``, ``HF_HUB_OFFLINE``).
"""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
from pathlib import Path

from ..._fs import ensure_writable
from ...errors import HubError
from ..backends import DIRECTORY_SUFFIXES, STORE_SUFFIXES
from ..store import ZooStore, staged_store
from .card import CARD
from .errors import hub_errors
from .manifest import MANIFEST, check_files, read_manifest, sizes_match
from .session import progress_bars

HF_URL_PREFIX = "hf://"
VERIFIED_MARKER = ".weightzoo-verified"  # in a cached snapshot: the sha256 of the manifest it was checked against


def parse_hf_url(url: str) -> tuple[str, str | None]:
    """``hf://datasets/USER/REPO[@REVISION]`` -> (repo id, revision)."""
    rest = url[len(HF_URL_PREFIX) :] if url.startswith(HF_URL_PREFIX) else url
    if rest.startswith("datasets/"):
        rest = rest[len("datasets/") :]
    elif url.startswith(HF_URL_PREFIX):
        raise HubError(f"{url}: zoos are dataset repos; use hf://datasets/USER/REPO[@REVISION]")
    repo_id, _, revision = rest.partition("@")
    if repo_id.count("/") != 1 or not all(repo_id.split("/")):
        raise HubError(f"{url}: expected USER/REPO (hf://datasets/USER/REPO[@REVISION])")
    return repo_id, revision or None


def _download(
    repo_id: str, revision: str | None, local_dir: Path | None, token: str | None, progress: bool
) -> tuple[Path, dict]:
    """Download manifest, card and store of ``repo_id`` (into ``local_dir`` or the HF cache);
    returns the snapshot folder and the manifest."""
    from huggingface_hub import snapshot_download

    patterns = [MANIFEST, CARD, *(f"*{s}/**" if s in DIRECTORY_SUFFIXES else f"*{s}" for s in STORE_SUFFIXES)]
    with hub_errors("pull", repo_id, revision), progress_bars(progress):
        folder = snapshot_download(
            repo_id, repo_type="dataset", revision=revision, allow_patterns=patterns,
            local_dir=str(local_dir) if local_dir else None, token=token,
        )  # fmt: skip
    folder = Path(folder)
    if not (folder / MANIFEST).is_file():
        raise HubError(f"{repo_id}: not a weightzoo zoo (no {MANIFEST}); push one with `weightzoo zoo push`")
    return folder, read_manifest(folder / MANIFEST, repo_id)


def pull_zoo(
    repo_id: str,
    *,
    revision: str | None = None,
    out: str | os.PathLike | None = None,
    token: str | None = None,
    overwrite: bool = False,
    progress: bool = False,
) -> Path:
    """Download a pushed zoo and check it against its manifest; returns the store's path.

    With ``out`` the store lands in that folder (``out/NAME.zarr``); it is assembled in a hidden
    folder there and moved into place only once every file checks out. Without ``out`` it stays
    in the Hugging Face cache (read-only use); a snapshot checked once is not hashed again (a
    marker in it records the manifest it matched; Zarr and HDF5 chunks carry their own checksums).
    """
    if out is None:
        folder, data = _download(repo_id, revision, None, token, progress)
        marker = folder / VERIFIED_MARKER
        stamp = hashlib.sha256((folder / MANIFEST).read_bytes()).hexdigest()
        if marker.is_file() and marker.read_text() == stamp and sizes_match(folder, data):
            return folder / data["store"]  # this snapshot was checked before; chunks keep their own checksums
        store = check_files(folder, data, repo_id)
        marker.write_text(stamp)
        return store
    out = Path(out)
    ensure_writable(out / ".weightzoo-pull")
    staging = Path(tempfile.mkdtemp(prefix=".weightzoo-pull-", dir=out))
    try:
        folder, data = _download(repo_id, revision, staging, token, progress)
        store = check_files(folder, data, repo_id)
        with staged_store(out / store.name, overwrite) as tmp:  # refuses an existing store unless overwrite
            os.replace(store, tmp)
        return out / store.name
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def open_hub_zoo(url: str, token: str | None = None) -> ZooStore:
    """Open ``hf://datasets/USER/REPO[@REVISION]`` read-only, pulling it into the Hugging Face cache."""
    repo_id, revision = parse_hf_url(url)
    return ZooStore(pull_zoo(repo_id, revision=revision, token=token), "r")
