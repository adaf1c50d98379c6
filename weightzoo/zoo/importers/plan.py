"""The plan every format's planner returns, and the one writer that turns any plan into a store.

A plan holds the canonical ParamLayout, the architecture if known, the checkpoint epochs and one
:class:`Candidate` per source member with a loader for its parameters. :func:`write_zoo` streams
the members into a store inside :func:`~weightzoo.zoo.store.staged_store`, so a failed import
leaves ``out`` as it was; a member whose loader raises :class:`Skip` is listed, not written.
"""

from __future__ import annotations

import json
import math
import numbers
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ...errors import ImportFormatError
from ...layout import ParamLayout
from ..store import ZooStore, staged_store

BATCH_MEMBERS = 256  # members written per append

__all__ = [
    "BATCH_MEMBERS",
    "Candidate",
    "ImportPlan",
    "Skip",
    "oneline",
    "ordered_union",
    "read_json",
    "write_zoo",
]


class Skip(Exception):
    """A source member cannot be imported; the message says why (it goes into the report)."""


@dataclass
class Candidate:
    """One source member before its parameters are read: name, hparams, metrics ``[E]`` and a
    loader returning its parameters ``[E, P]`` in canonical order (or raising :class:`Skip`)."""

    name: str
    hparams: dict[str, Any]
    metrics: dict[str, np.ndarray]
    load: Callable[[], np.ndarray]


@dataclass
class ImportPlan:
    """Everything the writer needs: layout, architecture, epochs, members and provenance."""

    layout: ParamLayout
    architecture: dict | None
    epochs: list[int]
    candidates: list[Candidate]
    source: dict[str, Any]
    skipped: list[str] = field(default_factory=list)
    arch_overrides: tuple[str, ...] = ()


def oneline(exc: BaseException) -> str:
    """An exception as one short line (library messages can span many)."""
    text = " ".join(str(exc).split()) or type(exc).__name__
    return text if len(text) <= 160 else text[:157] + "..."


def read_json(path: Path) -> dict:
    """A JSON object from ``path``; raises :class:`Skip` if missing or malformed."""
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        raise Skip("is missing") from None
    except (OSError, ValueError) as exc:
        raise Skip(f"is not valid JSON ({oneline(exc)})") from None
    if not isinstance(data, dict):
        raise Skip(f"holds a {type(data).__name__}, not an object")
    return data


def ordered_union(dicts: Iterable[Mapping[str, Any]]) -> list[str]:
    """Keys of all mappings, in order of first appearance."""
    seen: dict[str, None] = {}
    for d in dicts:
        seen.update(dict.fromkeys(d))
    return list(seen)


# ------------------------------------------------------------------------------------- writer


def write_zoo(plan: ImportPlan, out: Path, *, overwrite: bool, progress: bool, desc: str) -> tuple[int, list[str]]:
    """Stream the plan's members into a new store at ``out``; return (imported, skipped)."""
    from tqdm import tqdm

    kinds = _column_kinds([c.hparams for c in plan.candidates])
    metric_names = ordered_union(c.metrics for c in plan.candidates)
    skipped, imported = list(plan.skipped), 0
    with staged_store(out, overwrite) as tmp:
        store = ZooStore.create(
            tmp,
            plan.layout,
            lock=False,
            architecture=plan.architecture,
            epochs=plan.epochs,
            arch_overrides=plan.arch_overrides,
            source=plan.source,
            expected_members=len(plan.candidates),
        )
        try:
            batch: list[tuple[Candidate, np.ndarray]] = []
            for cand in tqdm(plan.candidates, desc=desc, unit="member", disable=not progress):
                try:
                    batch.append((cand, cand.load()))
                except Skip as exc:
                    skipped.append(f"{cand.name}: {exc}")
                if len(batch) >= BATCH_MEMBERS:
                    imported += _flush(store, batch, kinds, metric_names)
                    batch = []
            imported += _flush(store, batch, kinds, metric_names)
            if imported == 0:
                first = f"; first reason: {skipped[0]}" if skipped else ""
                raise ImportFormatError(f"{plan.source['path']}: no member could be imported{first}")
            store.update_attrs(source={**plan.source, "imported": imported, "skipped": skipped})
        finally:
            store.close()
    return imported, skipped


def _flush(
    store: ZooStore, batch: list[tuple[Candidate, np.ndarray]], kinds: Mapping[str, str], metric_names: Sequence[str]
) -> int:
    """Append a batch of loaded members with their hparams and metrics; return how many."""
    if not batch:
        return 0
    n_epochs = len(store.epochs)
    params = np.stack([p for _, p in batch])
    hparams = {k: [_encode(c.hparams.get(k), kind) for c, _ in batch] for k, kind in kinds.items()}
    missing = np.full(n_epochs, np.nan, dtype=np.float32)
    metrics = {m: np.stack([c.metrics.get(m, missing) for c, _ in batch]) for m in metric_names}
    store.append(params, hparams=hparams, metrics=metrics)
    return len(batch)


# ------------------------------------------------------------------------ hparam columns


def _is_missing(v: Any) -> bool:
    return v is None or (isinstance(v, float | np.floating) and math.isnan(v))


def _column_kinds(records: Sequence[Mapping[str, Any]]) -> dict[str, str]:
    """One storage kind per hyperparameter (``b``ool, ``i``nt, ``f``loat, ``s``tr) such that
    every member fits: missing numbers become NaN floats, anything mixed becomes strings."""
    kinds: dict[str, str] = {}
    for key in ordered_union(records):
        values = [r.get(key) for r in records]
        present = [v for v in values if not _is_missing(v)]
        complete = len(present) == len(values)
        if not present:
            continue  # nothing to store
        if all(isinstance(v, bool | np.bool_) for v in present):
            kinds[key] = "b" if complete else "s"
        elif all(isinstance(v, numbers.Integral) and not isinstance(v, bool) for v in present) and complete:
            kinds[key] = "i"
        elif all(isinstance(v, numbers.Real) and not isinstance(v, bool | np.bool_) for v in present):
            kinds[key] = "f"
        else:
            kinds[key] = "s"
    return kinds


def _encode(value: Any, kind: str) -> Any:
    """A hyperparameter value as its column's kind (missing -> NaN or empty string)."""
    if kind == "s":
        return "" if _is_missing(value) else str(value)
    if kind == "f":
        return math.nan if _is_missing(value) else float(value)
    return bool(value) if kind == "b" else int(value)
