"""The base weights of a fine-tuned zoo: the rows ``[K, P]`` its members started from, stored once
as the array ``base``, with their source in the attribute ``base`` (the base zoo's member of each
row, checksums, or the pretraining run)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from ...errors import StoreError
from ..train.config import BASE_MEMBER
from .columns import as_float32
from .integrity import BASE


def store_base(zoo: Any, params: Any, source: Mapping[str, Any]) -> None:
    """Write the base rows of ``zoo`` (open for appending) and their source; once."""
    rows = as_float32(params, f"{zoo.path}: base params")
    rows = rows.reshape(1, -1) if rows.ndim == 1 else rows
    if rows.ndim != 2 or rows.shape[1] != zoo.layout.size or zoo.fine_tuned:
        raise StoreError(f"{zoo.path}: base params must be [K, {zoo.layout.size}] and are stored once")
    backend = zoo.backend
    backend.create_column(BASE, np.float32, (zoo.layout.size,), len(rows), chunk=len(rows))
    backend.write(BASE, slice(0, len(rows)), rows)
    zoo.update_attrs(base={**dict(source), "rows": len(rows)})


def base_rows(zoo: Any) -> np.ndarray:
    """All base rows ``[K, P]``; a StoreError for a zoo whose members started from inits."""
    if not zoo.fine_tuned:
        raise StoreError(f"{zoo.path}: not a fine-tuned zoo (no base); its members start from random inits")
    return zoo.backend.read(BASE, slice(0, int(zoo.attrs["base"]["rows"])))


def member_base(zoo: Any, indices: np.ndarray) -> np.ndarray:
    """The base row of each member: the only one, or the row of its ``base.member``."""
    members = zoo.attrs["base"]["members"]
    return row_index(members, zoo.column(BASE_MEMBER, indices) if len(members) > 1 else [None] * len(indices))


def row_index(members: Sequence[int | None], base_members: Sequence[Any]) -> np.ndarray:
    """Which base row each member starts from, given each member's ``base.member`` (ignored when
    there is one base): the build, which has no store on a worker, and the store agree through it."""
    if len(members) == 1:
        return np.zeros(len(base_members), dtype=np.int64)
    row_of = {m: i for i, m in enumerate(members)}
    return np.array([row_of[int(m)] for m in base_members], dtype=np.int64)
