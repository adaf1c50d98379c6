"""Zoos on the Hugging Face Hub: push a store as a dataset repo, pull it back verified.

A pushed repo holds the store under its own name (``NAME.zarr/...`` or ``NAME.h5``), a manifest
``weightzoo.json`` (format, store name, size and sha256 of every store file) and a dataset card
``README.md``. Pushes compare every file with what the repo already has (git blob id, or the LFS
sha256) and upload only what differs, in several commits, so an interrupted push re-run uploads
only what is missing and an unchanged zoo makes no commit. Pulls download the store and check
every file against the manifest before the store is moved to where the user asked for it.

Endpoint, token and offline mode come from huggingface_hub (``HF_ENDPOINT``, ``HF_TOKEN`` or
``hf auth login``, ``HF_HUB_OFFLINE``).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
import os
import shutil
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tqdm.auto import tqdm

from ..errors import HubError
from .store import ZooStore, staged_path

MANIFEST = "weightzoo.json"
CARD = "README.md"
MANIFEST_FORMAT = "weightzoo-hub"
MAX_FILES_PER_FOLDER = 10_000  # the Hub's limit on entries in one folder
COMMIT_MAX_FILES = 256  # files per commit: an interrupted push loses at most one commit's worth
COMMIT_MAX_BYTES = 512 << 20
HF_URL_PREFIX = "hf://"
STORE_SUFFIXES = (".zarr", ".h5", ".hdf5")
VERIFIED_MARKER = ".weightzoo-verified"  # in a cached snapshot: the sha256 of the manifest it was checked against


# --------------------------------------------------------------------------- errors


@contextlib.contextmanager
def hub_errors(action: str, repo_id: str, revision: str | None = None) -> Iterator[None]:
    """Turn huggingface_hub and transport errors raised while ``action`` into one-line HubErrors."""
    try:
        yield
    except Exception as exc:
        error = translate(exc, f"{action} {repo_id}@{revision}" if revision else f"{action} {repo_id}", revision)
        if error is None:
            raise
        raise error from None


def translate(exc: BaseException, what: str, revision: str | None = None) -> HubError | None:
    """The one-line HubError for an exception of huggingface_hub or of its HTTP transport raised
    while doing ``what``; None for anything else."""
    from huggingface_hub import constants
    from huggingface_hub.errors import (
        HfHubHTTPError,
        HFValidationError,
        LocalEntryNotFoundError,
        OfflineModeIsEnabled,
        RepositoryNotFoundError,
        RevisionNotFoundError,
    )

    retry = "run the same command again (a push uploads only what is missing)"
    if isinstance(exc, OfflineModeIsEnabled | LocalEntryNotFoundError):
        if constants.HF_HUB_OFFLINE:
            return HubError(f"{what}: HF_HUB_OFFLINE=1 and it is not in the Hugging Face cache; unset HF_HUB_OFFLINE")
        if exc.__cause__ is not None:  # snapshot_download reports a failed lookup as "not cached"
            return translate(exc.__cause__, what, revision)
        return HubError(f"{what}: cannot reach {constants.ENDPOINT} ({_first_line(exc)})")
    if isinstance(exc, HFValidationError):
        return HubError(f"{what}: {_first_line(exc)}")
    if isinstance(exc, RevisionNotFoundError):
        return HubError(f"{what}: revision {revision or 'main'!r} not found; check its name")
    if isinstance(exc, RepositoryNotFoundError):  # also the Hub's 401 to anonymous requests for it
        return HubError(
            f"{what}: repository not found on {constants.ENDPOINT} (or private and your token cannot see it); "
            "check the repo id, or set HF_TOKEN"
        )
    if isinstance(exc, HfHubHTTPError):
        status = _status(exc)
        if status in (401, 403):
            return _auth_error(what, status)
        if status is not None and status >= 500:
            return HubError(
                f"{what}: the Hub answered {status} ({_first_line(exc)}); try again later "
                "(a push uploads only what is missing)"
            )
        return HubError(f"{what}: the Hub answered {status} ({_first_line(exc)})")
    if type(exc).__module__.split(".")[0] in ("httpx2", "httpx", "httpcore") or isinstance(exc, ConnectionError):
        return HubError(f"{what}: connection to the Hub failed ({type(exc).__name__}: {_first_line(exc)}); {retry}")
    if isinstance(exc, OSError):  # an incomplete download, a full disk
        return HubError(f"{what}: {type(exc).__name__}: {_first_line(exc)}; {retry}")
    return None


def _auth_error(what: str, status: int) -> HubError:
    refused = "rejected the token" if status == 401 else "refused access with this token"
    return HubError(
        f"{what}: the Hub {refused} ({status}); set HF_TOKEN to a token with write access or run `hf auth login`"
    )


def _status(exc: Exception) -> int | None:
    response = getattr(exc, "response", None)
    return getattr(response, "status_code", None)


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def require_token(token: str | None, action: str, repo_id: str) -> str:
    """The token to write with: ``token``, ``HF_TOKEN`` or the huggingface_hub login."""
    from huggingface_hub import get_token

    token = token or get_token()
    if not token:
        raise HubError(f"{action} {repo_id}: no Hugging Face token; set HF_TOKEN or run `hf auth login`")
    return token


# --------------------------------------------------------------------------- files


@contextlib.contextmanager
def progress_bars(show: bool) -> Iterator[None]:
    """huggingface_hub's progress bars on or off for the duration of a transfer."""
    from huggingface_hub.utils import are_progress_bars_disabled, disable_progress_bars, enable_progress_bars

    was_disabled = are_progress_bars_disabled()
    (enable_progress_bars if show else disable_progress_bars)()
    try:
        yield
    finally:
        (disable_progress_bars if was_disabled else enable_progress_bars)()


@dataclass(frozen=True)
class FileDigest:
    """A file's size, git blob id (what the Hub lists for regular files) and sha256 (LFS files)."""

    size: int
    git_oid: str
    sha256: str


def digest(path: Path, block: int = 1 << 20) -> FileDigest:
    """Hash ``path`` once for both ids."""
    size = path.stat().st_size
    git, sha = hashlib.sha1(f"blob {size}\0".encode()), hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(block):
            git.update(chunk)
            sha.update(chunk)
    return FileDigest(size, git.hexdigest(), sha.hexdigest())


def store_files(store: Path) -> dict[str, Path]:
    """Repo path -> local file for every file of a store (a Zarr directory or one HDF5 file)."""
    if store.is_file():
        return {store.name: store}
    return {f"{store.name}/{p.relative_to(store).as_posix()}": p for p in sorted(store.rglob("*")) if p.is_file()}


def largest_folder(store: Path) -> int:
    """Entries in the fullest folder of a store directory (0 for a file)."""
    if store.is_file():
        return 0
    return max((len(os.listdir(d)) for d, _, _ in os.walk(store)), default=0)


def sharded_copy(store: Path, out: Path, limit: int) -> Path:
    """A copy of Zarr ``store`` at ``out`` whose arrays are sharded so that no folder holds more
    than ``limit`` entries. Each array keeps its chunks (the checksummed unit) and groups them into
    shards; shards are written whole."""
    import zarr
    from zarr.codecs import Crc32cCodec

    from .backends import ZARR_CONFIG

    src = zarr.open_group(str(store), mode="r")
    dst = zarr.open_group(str(out), mode="w-")
    dst.attrs.update(dict(src.attrs))
    for name, arr in _arrays(src):
        n, c = arr.shape[0], arr.chunks[0]
        chunks = max(1, math.ceil(n / c))
        per_shard = max(1, math.ceil(chunks / max(1, limit - 1)))
        shards = (c * per_shard, *arr.shape[1:]) if per_shard > 1 else None
        new = dst.create_array(
            name, shape=arr.shape, chunks=arr.chunks, shards=shards, dtype=arr.dtype, fill_value=arr.fill_value,
            compressors=[Crc32cCodec()], filters=None, config=ZARR_CONFIG,
        )  # fmt: skip
        step = c * per_shard
        for start in range(0, n, step):
            new[start : start + step] = arr[start : start + step]
    return out


def _arrays(group, prefix: str = "") -> Iterator[tuple[str, Any]]:
    for name, arr in group.arrays():
        yield prefix + name, arr
    for name, sub in group.groups():
        yield from _arrays(sub, f"{prefix}{name}/")


@contextlib.contextmanager
def upload_source(store: Path, limit: int | None = None) -> Iterator[Path]:
    """The store as it will be uploaded: itself, or a sharded copy (same name, in a temporary
    folder) when one of its folders holds more than ``limit`` files."""
    limit = MAX_FILES_PER_FOLDER if limit is None else limit
    if store.is_file() or largest_folder(store) <= limit:
        yield store
        return
    with tempfile.TemporaryDirectory(prefix="weightzoo-push-") as tmp:
        yield sharded_copy(store, Path(tmp) / store.name, limit)


# --------------------------------------------------------------------------- manifest and card


def manifest(store: Path, digests: dict[str, FileDigest]) -> dict[str, Any]:
    """What a pull checks: every store file's size and sha256."""
    return {
        "format": MANIFEST_FORMAT,
        "version": 1,
        "store": store.name,
        "files": {p: {"size": d.size, "sha256": d.sha256} for p, d in sorted(digests.items())},
    }


def read_manifest(path: Path, repo_id: str) -> dict[str, Any]:
    """Parse and check a downloaded manifest."""
    try:
        data = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        data = None
    if not isinstance(data, dict) or data.get("format") != MANIFEST_FORMAT or not isinstance(data.get("files"), dict):
        raise HubError(f"{repo_id}: {MANIFEST} is not a weightzoo manifest; push the zoo again (weightzoo zoo push)")
    store = str(data.get("store", ""))
    if not store or "/" in store or store.startswith(".") or Path(store).suffix not in STORE_SUFFIXES:
        raise HubError(f"{repo_id}: {MANIFEST} names no valid store ({store!r}); push the zoo again")
    return data


def _size_category(n: int) -> str:
    for bound, label in ((1_000, "n<1K"), (10_000, "1K<n<10K"), (100_000, "10K<n<100K"), (1_000_000, "100K<n<1M")):
        if n < bound:
            return label
    return "1M<n<10M"


def dataset_card(zoo: ZooStore, repo_id: str, store_name: str, license: str = "cc-by-4.0") -> str:
    """The dataset card: YAML metadata and a body with the spec, layout, members, metrics and a snippet."""
    from huggingface_hub import DatasetCardData

    summary = zoo.summary()
    spec = zoo.attrs.get("spec") or {}
    name = zoo.name
    data = DatasetCardData(
        license=license,
        pretty_name=f"weightzoo: {name}",
        tags=["weight-space-learning", "model-zoo", "weightzoo"],
        size_categories=[_size_category(len(zoo))],
    )
    lines = [
        "---",
        data.to_yaml(),
        "---",
        "",
        f"# {name}",
        "",
        f"A zoo of {len(zoo):,} trained networks ({summary['architecture']}, "
        f"{'up to ' if summary['mixed_layouts'] else ''}{zoo.layout.size:,} parameters each, "
        f"checkpoints at epochs {zoo.epochs}), stored as `{store_name}` and made with "
        "weightzoo.",
        "",
        "## Load it",
        "",
        "```python",
        "import weightzoo",
        "",
        f'zoo = weightzoo.open_zoo("hf://datasets/{repo_id}")',
        "params = zoo.params()          # float32 [members, parameters], last checkpoint",
        "table = zoo.table()            # hyperparameters and final metrics (pandas)",
        "model = zoo.model(0)           # member 0 as a torch module",
        "```",
        "",
        f"or `weightzoo zoo pull {repo_id} --out zoos/`.",
        "",
        "## Members",
        "",
        f"- members: {len(zoo):,} done of {summary['members_total']:,}",
        f"- hyperparameters: {', '.join(summary['hparams']) or '-'}",
        f"- size: {summary['size_on_disk_bytes']:,} bytes ({summary['backend']})",
        "",
    ]
    if summary["metric_quantiles"]:
        lines += ["## Metrics (last checkpoint)", "", "| metric | min | q25 | median | q75 | max |", "|---" * 6 + "|"]
        for metric, q in summary["metric_quantiles"].items():
            cells = " | ".join(f"{q[k]:.4g}" for k in ("min", "q25", "median", "q75", "max"))
            lines.append(f"| {metric} | {cells} |")
        lines.append("")
    lines += _architecture_lines(zoo)
    lines += ["## Parameter layout", "", "| tensor | shape | role | layer | offset |", "|---|---|---|---|---|"]
    lines += [f"| `{e.name}` | {list(e.shape)} | {e.role} | {e.layer} | {e.offset} |" for e in zoo.layout]
    lines += ["", "## Spec", ""]
    if spec:
        import yaml

        lines += ["```yaml", yaml.safe_dump(spec, sort_keys=False).rstrip(), "```"]
    else:
        lines.append(f"Imported ({(zoo.attrs.get('source') or {}).get('format', 'unknown source')}); no build spec.")
    return "\n".join(lines) + "\n"


def _architecture_lines(zoo: ZooStore) -> list[str]:
    """The card's architecture section: the family, its arguments and the layer table."""
    arch = zoo.architecture
    if not arch:
        return []
    lines = ["## Architecture", "", f"Family `{arch.get('family', 'custom')}`"]
    if arch.get("args"):
        lines[-1] += ", arguments " + ", ".join(f"`{k}={v}`" for k, v in arch["args"].items())
    overrides = zoo.attrs.get("arch_overrides") or []
    if overrides:
        lines[-1] += f"; per member: {', '.join(overrides)}"
    lines += ["", "| # | layer | settings |", "|---|---|---|"]
    for i, layer in enumerate(arch.get("layers", [])):
        settings = ", ".join(f"{k}={v}" for k, v in layer.items() if k != "type")
        lines.append(f"| {i} | {layer.get('type')} | {settings} |")
    return [*lines, ""]


# --------------------------------------------------------------------------- push


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


def ensure_repo(api, repo_id: str, repo_type: str, private: bool, revision: str | None) -> None:
    """Create the repo (and the branch ``revision``) unless they exist."""
    api.create_repo(repo_id, repo_type=repo_type, private=private, exist_ok=True)
    if revision:
        api.create_branch(repo_id, repo_type=repo_type, branch=revision, exist_ok=True)


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
    return suffix == ".zarr" if rest else suffix in STORE_SUFFIXES and suffix != ".zarr"


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
        name, members = zoo.name, len(zoo)
    token = require_token(token, "push", repo_id)
    message = message or f"weightzoo: push {name} ({members:,} members)"
    api = HfApi(token=token)
    result = PushResult(repo_id, revision or "main")
    with (
        upload_source(path) as source,
        tempfile.TemporaryDirectory(prefix="weightzoo-card-") as tmp,
        hub_errors("push", repo_id, revision),
        progress_bars(progress),
    ):
        files = store_files(source)
        digests = {p: digest(f) for p, f in files.items()}
        meta = _write_meta(Path(tmp), source, digests, card)
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


# --------------------------------------------------------------------------- pull


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

    patterns = [MANIFEST, CARD, *(f"*{s}/**" if s == ".zarr" else f"*{s}" for s in STORE_SUFFIXES)]
    with hub_errors("pull", repo_id, revision), progress_bars(progress):
        folder = snapshot_download(
            repo_id, repo_type="dataset", revision=revision, allow_patterns=patterns,
            local_dir=str(local_dir) if local_dir else None, token=token,
        )  # fmt: skip
    folder = Path(folder)
    if not (folder / MANIFEST).is_file():
        raise HubError(f"{repo_id}: not a weightzoo zoo (no {MANIFEST}); push one with `weightzoo zoo push`")
    return folder, read_manifest(folder / MANIFEST, repo_id)


def _sizes_match(folder: Path, data: dict) -> bool:
    """Every store file of the manifest is there with its size (the cheap check of a verified snapshot)."""
    files = data["files"].items()
    return all((folder / rel).is_file() and (folder / rel).stat().st_size == f["size"] for rel, f in files)


def check_files(folder: Path, data: dict, repo_id: str) -> Path:
    """Check every store file in ``folder`` against the manifest; return the store path."""
    store = folder / data["store"]
    expected = data["files"]
    have = set(store_files(store)) if store.exists() else set()
    missing = sorted(set(expected) - have)
    if missing:
        raise HubError(f"{repo_id}: {len(missing)} store files missing after download (first {missing[0]}); pull again")
    for rel, want in expected.items():
        got = digest(folder / rel)
        if got.size != want["size"] or got.sha256 != want["sha256"]:
            raise HubError(
                f"{repo_id}: {rel} fails its checksum (sha256 {got.sha256[:12]}.., expected {want['sha256'][:12]}..); "
                "the download or the repo is damaged: pull again, or push the zoo again"
            )
    return store


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
        if marker.is_file() and marker.read_text() == stamp and _sizes_match(folder, data):
            return folder / data["store"]  # this snapshot was checked before; chunks keep their own checksums
        store = check_files(folder, data, repo_id)
        marker.write_text(stamp)
        return store
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".weightzoo-pull-", dir=out))
    try:
        folder, data = _download(repo_id, revision, staging, token, progress)
        store = check_files(folder, data, repo_id)
        with staged_path(out / store.name, overwrite) as tmp:  # refuses an existing store unless overwrite
            os.replace(store, tmp)
        return out / store.name
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def open_hub_zoo(url: str, token: str | None = None) -> ZooStore:
    """Open ``hf://datasets/USER/REPO[@REVISION]`` read-only, pulling it into the Hugging Face cache."""
    repo_id, revision = parse_hf_url(url)
    return ZooStore(pull_zoo(repo_id, revision=revision, token=token), "r")
