"""SIREN INR datasets in the DWSNets / nfn layout: ``<root>/<class>/*.pth``, or the members listed
in a ``splits.json`` (``{split: {"path": [...], "label": [...]}}``); stored as ``archs.siren``."""

from __future__ import annotations

import functools
import itertools
import re
from collections.abc import Iterable, Mapping
from pathlib import Path

from ...errors import ImportFormatError
from .. import archs
from .plan import Candidate, ImportPlan, Skip, read_json
from .state_dicts import STATE_DICT_SUFFIXES, Reference, canonical, dense_chain, find_reference, load_checkpoints

SIREN_W0 = 30.0


def plan(src: Path) -> ImportPlan:
    """SIREN INRs: ``<root>/<class>/*.pth``, or the members listed in a DWSNets ``splits.json``."""
    skipped: list[str] = []
    if (src / "splits.json").is_file():
        entries = _inr_split_entries(src, skipped)
    else:
        entries = _inr_class_entries(src)
    if not entries:
        raise ImportFormatError(
            f"{src}: no INR files found; expected <root>/<class_name>/*.pth or a splits.json listing them"
        )
    ref, _ = find_reference([e["path"] for e in entries])
    arch = _siren_architecture(ref)
    layout, arch, names = canonical(ref, arch)
    label_ids = {label: i for i, label in enumerate(_sorted_labels({e["label"] for e in entries}))}
    candidates = []
    for e in entries:
        hparams = {"label": e["label"], "label_id": label_ids[e["label"]], "file": e["file"]}
        if "split" in e:
            hparams["split"] = e["split"]
        candidates.append(Candidate(e["file"], hparams, {}, functools.partial(load_checkpoints, [e["path"]], ref)))
    source = {"param_names": names, "w0": SIREN_W0, "label_ids": label_ids}
    return ImportPlan(layout, arch, [0], candidates, source, skipped)


def _inr_class_entries(src: Path) -> list[dict]:
    """Members from the folder tree: the first folder under the root names the class."""
    entries = []
    for path in sorted(p for p in src.rglob("*") if p.suffix in STATE_DICT_SUFFIXES and p.is_file()):
        rel = path.relative_to(src)
        if len(rel.parts) < 2:
            continue  # files directly under the root belong to no class
        entries.append({"path": path, "file": rel.as_posix(), "label": rel.parts[0]})
    return entries


def _inr_split_entries(src: Path, skipped: list[str]) -> list[dict]:
    """Members listed in ``splits.json`` ({split: {"path": [...], "label": [...]}}), paths resolved
    against the root when they point elsewhere (the files were generated on another machine)."""
    path = src / "splits.json"
    try:
        data = read_json(path)
    except Skip as exc:
        raise ImportFormatError(f"{path}: {exc}; expected {{split: {{'path': [...], 'label': [...]}}}}") from None
    entries = []
    for split, listing in data.items():
        if (
            not isinstance(listing, Mapping)
            or not isinstance(listing.get("path"), list)
            or not isinstance(listing.get("label"), list)
            or len(listing["path"]) != len(listing["label"])
        ):
            raise ImportFormatError(f"{path}: split {split!r} must hold equally long lists 'path' and 'label'")
        for listed, label in zip(listing["path"], listing["label"]):
            found = _resolve_listed(src, str(listed))
            if found is None:
                skipped.append(f"{listed}: listed in splits.json ({split}) but not found under {src}")
                continue
            entries.append(
                {
                    "path": found,
                    "file": found.relative_to(src).as_posix() if found.is_relative_to(src) else str(found),
                    "label": str(label),
                    "split": str(split),
                }
            )
    return entries


def _resolve_listed(root: Path, listed: str) -> Path | None:
    """A listed file: as written, else the longest tail of its path that exists under ``root``."""
    path = Path(listed)
    if path.is_file():
        return path
    parts = path.parts[1:] if path.is_absolute() else path.parts
    for i in range(len(parts)):
        candidate = root.joinpath(*parts[i:])
        if candidate.is_file():
            return candidate
    return None


def _sorted_labels(labels: Iterable[str]) -> list[str]:
    """Class labels in numeric order when they are all integers, else alphabetical."""
    labels = list(labels)
    if all(re.fullmatch(r"-?\d+", s) for s in labels):
        return sorted(labels, key=int)
    return sorted(labels)


def _siren_architecture(ref: Reference) -> dict:
    """``archs.siren`` for an INR state_dict of alternating 2-D weights and 1-D biases."""
    chain = dense_chain(ref.shapes)
    ok = (
        chain is not None
        and all(len(w) == 2 and bias for w, bias in chain)
        and all(a[0][0] == b[0][1] for a, b in itertools.pairwise(chain))
    )
    if not ok:
        raise ImportFormatError(
            f"{ref.path}: not a SIREN state_dict (expected 2-D weights each followed by its "
            f"1-D bias, chained); found shapes {ref.shapes[:6]}"
        )
    hidden = [w[0] for w, _ in chain[:-1]]
    return archs.siren(chain[0][0][1], hidden, chain[-1][0][0], w0=SIREN_W0)
