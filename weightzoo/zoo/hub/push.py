"""Pushing a zoo to a Hugging Face dataset repo.

The repo holds the store under its own name (``NAME.zarr/...`` or ``NAME.h5``), the manifest and
the dataset card. A push compares every file with what the repo already has (git blob id, or the
LFS sha256) and uploads only what differs, in several commits with the manifest and card last, so
an interrupted push re-run uploads only what is missing and an unchanged zoo makes no commit.
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from tqdm.auto import tqdm

from ..backends import DIRECTORY_SUFFIXES, STORE_SUFFIXES
from ..store import ZooStore
from .card import CARD, dataset_card
from .errors import hub_errors
from .manifest import MANIFEST, FileDigest, digest, manifest
from .session import ensure_repo, progress_bars, require_token

MAX_FILES_PER_FOLDER = 10_000  # the Hub's limit on entries in one folder
COMMIT_MAX_FILES = 256  # files per commit: an interrupted push loses at most one commit's worth
COMMIT_MAX_BYTES = 512 << 20


@dataclass
class PushResult:
    """What a push did: the commits it made (none if the repo was up to date) and the files it sent."""

    repo_id: str
    revision: str
    commits: list[str] = field(default_factory=list)
    uploaded: list[str] = field(default_factory=list)
    deleted: list[str] = field(default_factory=list)
    url: str = ""

    @property
    def changed(self) -> bool:
        return bool(self.commits)


def _remote_files(api, repo_id: str, revision: str) -> dict[str, tuple[str, str | None]]:
    """Repo path -> (git blob id, LFS sha256 or None) at ``revision``."""
    from huggingface_hub.hf_api import RepoFile

    out = {}
    for item in api.list_repo_tree(repo_id, recursive=True, revision=revision, repo_type="dataset"):
        if isinstance(item, RepoFile):
            out[item.path] = (item.blob_id, item.lfs.sha256 if item.lfs else None)
    return out


def _same(remote: tuple[str, str | None] | None, local: FileDigest) -> bool:
    if remote is None:
        return False
    blob_id, lfs_sha = remote
    return lfs_sha == local.sha256 if lfs_sha else blob_id == local.git_oid


def _is_store_path(repo_path: str) -> bool:
    """Whether a repo path belongs to a store (``*.zarr/...``, ``*.h5``, ``*.hdf5`` at the top level)."""
    top, _, rest = repo_path.partition("/")
    suffix = Path(top).suffix
    return suffix in DIRECTORY_SUFFIXES if rest else suffix in STORE_SUFFIXES and suffix not in DIRECTORY_SUFFIXES


def _batches(paths: list[str], sizes: dict[str, int]) -> Iterator[list[str]]:
    batch: list[str] = []
    total = 0
    for p in paths:
        if batch and (len(batch) >= COMMIT_MAX_FILES or total + sizes[p] > COMMIT_MAX_BYTES):
            yield batch
            batch, total = [], 0
        batch.append(p)
        total += sizes[p]
    if batch:
        yield batch


def push_zoo(
    path: str | os.PathLike,
    repo_id: str,
    *,
    private: bool = False,
    revision: str | None = None,
    message: str | None = None,
    license: str = "cc-by-4.0",
    token: str | None = None,
    progress: bool = False,
) -> PushResult:
    """Upload the zoo at ``path`` to the dataset repo ``repo_id`` (created if needed) with a
    manifest and a dataset card; only files that differ from the repo are sent."""
    from huggingface_hub import HfApi

    path = Path(path)
    with ZooStore(path, "r") as zoo:
        card = dataset_card(zoo, repo_id, path.name, license)
        message = message or f"weightzoo: push {zoo.name} ({len(zoo):,} members)"
        token = require_token(token, "push", repo_id)
        api = HfApi(token=token)
        result = PushResult(repo_id, revision or "main")
        with (
            upload_source(zoo) as source,
            tempfile.TemporaryDirectory(prefix="weightzoo-card-") as tmp,
            hub_errors("push", repo_id, revision),
            progress_bars(progress),
        ):
            files = repo_files(source)
            digests = {p: digest(f) for p, f in files.items()}
            meta = _write_meta(Path(tmp), source.path, digests, card)
            files.update(meta)
            digests.update({p: digest(f) for p, f in meta.items()})
            ensure_repo(api, repo_id, "dataset", private, revision)
            remote = _remote_files(api, repo_id, result.revision)
            changed = [p for p in files if p not in meta and not _same(remote.get(p), digests[p])]
            stale = [p for p in remote if _is_store_path(p) and p not in files]  # a repo holds one zoo
            if changed or stale or not all(_same(remote.get(p), digests[p]) for p in meta):
                batches = list(_batches(changed, {p: d.size for p, d in digests.items()})) or [[]]
                _commit_batches(api, result, batches, files, meta, stale, message, progress)
    return result


def repo_files(zoo: ZooStore) -> dict[str, Path]:
    """Repo path -> local file for every file of the store."""
    root = zoo.path
    return {root.name if f == root else f"{root.name}/{f.relative_to(root).as_posix()}": f for f in zoo.files()}


@contextlib.contextmanager
def upload_source(zoo: ZooStore, limit: int | None = None) -> Iterator[ZooStore]:
    """The store as it will be uploaded: itself, or a sharded copy (same name, in a temporary
    folder) when one of its folders holds more than ``limit`` files."""
    limit = MAX_FILES_PER_FOLDER if limit is None else limit
    if zoo.largest_folder() <= limit:
        yield zoo
        return
    with tempfile.TemporaryDirectory(prefix="weightzoo-push-") as tmp:
        with ZooStore(zoo.sharded_copy(Path(tmp) / zoo.path.name, limit), "r") as copy:
            yield copy


def _write_meta(folder: Path, source: Path, digests: dict[str, FileDigest], card: str) -> dict[str, Path]:
    """Write the manifest and the card into ``folder``; repo path -> local file."""
    meta = {MANIFEST: folder / MANIFEST, CARD: folder / CARD}
    meta[MANIFEST].write_text(json.dumps(manifest(source, digests), indent=1, sort_keys=True) + "\n")
    meta[CARD].write_text(card)
    return meta


def _commit_batches(api, result: PushResult, batches, files, meta, stale, message: str, progress: bool) -> None:
    """One commit per batch of store files; deletions, manifest and card go with the last, so a
    push that completes leaves the repo consistent and one cut short leaves the old manifest."""
    from huggingface_hub import CommitOperationAdd, CommitOperationDelete

    for i, batch in enumerate(tqdm(batches, desc="commits", unit="commit", disable=not progress)):
        last = i == len(batches) - 1
        ops: list = [CommitOperationAdd(p, str(files[p])) for p in batch]
        if last:
            ops += [CommitOperationDelete(p) for p in stale] + [CommitOperationAdd(p, str(f)) for p, f in meta.items()]
        part = f" ({i + 1}/{len(batches)})" if len(batches) > 1 else ""
        info = api.create_commit(
            result.repo_id, ops, commit_message=message + part, repo_type="dataset", revision=result.revision
        )
        result.commits.append(info.oid)
        result.url = info.commit_url
        result.uploaded += batch + (list(meta) if last else [])
    result.deleted = list(stale)
