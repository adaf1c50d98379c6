"""The manifest of a pushed zoo (``weightzoo.json``: size and sha256 of every store file) and
the checks a pull makes against it."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ...errors import HubError
from ..backends import STORE_SUFFIXES

MANIFEST = "weightzoo.json"
MANIFEST_FORMAT = "weightzoo-hub"


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


def sizes_match(folder: Path, data: dict) -> bool:
    """Every store file of the manifest is there with its size (the cheap check of a verified snapshot)."""
    files = data["files"].items()
    return all((folder / rel).is_file() and (folder / rel).stat().st_size == f["size"] for rel, f in files)


def check_files(folder: Path, data: dict, repo_id: str) -> Path:
    """Check every store file in ``folder`` against the manifest; return the store path."""
    expected = data["files"]
    missing = sorted(rel for rel in expected if not (folder / rel).is_file())
    if missing:
        raise HubError(f"{repo_id}: {len(missing)} store files missing after download (first {missing[0]}); pull again")
    for rel, want in expected.items():
        got = digest(folder / rel)
        if got.size != want["size"] or got.sha256 != want["sha256"]:
            raise HubError(
                f"{repo_id}: {rel} fails its checksum (sha256 {got.sha256[:12]}.., expected {want['sha256'][:12]}..); "
                "the download or the repo is damaged: pull again, or push the zoo again"
            )
    return folder / data["store"]
