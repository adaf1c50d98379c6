"""Values written into a zoo's per-member arrays: parameters and metrics as float32, hyperparameter
columns as bool, int64, float64 or text. Bad values are StoreErrors naming what they were for."""

from __future__ import annotations

import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ...errors import StoreError


def as_numpy(values: Any) -> np.ndarray:
    """Values as numpy; a torch tensor is detached and moved to the CPU first (torch is not
    imported for this: a tensor can exist only once it is)."""
    torch = sys.modules.get("torch")
    if torch is not None and isinstance(values, torch.Tensor):
        return values.detach().cpu().numpy()
    return np.asarray(values)


def as_float32(values: Any, label: str) -> np.ndarray:
    """Numbers as a float32 array; anything else is a StoreError naming ``label``."""
    try:
        return as_numpy(values).astype(np.float32, copy=False)
    except (TypeError, ValueError) as exc:
        raise StoreError(f"{label}: expected numbers ({exc})") from None


def check_column_name(path: Path, name: Any) -> None:
    """Column names become array names: a non-empty string without '/'."""
    if not isinstance(name, str) or not name or "/" in name:
        raise StoreError(f"{path}: column name {name!r} must be a non-empty string without '/'")


def column_kind(dtype: np.dtype) -> str:
    """The kind of a stored column: ``"str"``, ``"b"``, ``"i"`` or ``"f"``."""
    return "str" if np.dtype(dtype).kind == "O" else np.dtype(dtype).kind


def column_values(name: str, values: Sequence, n: int, existing_kind: str | None) -> np.ndarray:
    """A hyperparameter column as numpy: bool, int64, float64 or object (str); ``name`` labels errors."""
    arr = as_numpy(values)
    if arr.shape != (n,):
        raise StoreError(f"{name}: expected {n} values, got shape {arr.shape}")
    if arr.dtype.kind in "USO":
        arr = np.array([str(v) for v in arr], dtype=object)
        kind = "str"
    elif arr.dtype.kind == "b":
        kind = "b"
    elif arr.dtype.kind in "iu":
        arr, kind = arr.astype(np.int64), "i"
    elif arr.dtype.kind == "f":
        arr, kind = arr.astype(np.float64), "f"
    else:
        raise StoreError(f"{name}: unsupported type {arr.dtype}; use numbers or strings")
    if existing_kind is not None and existing_kind != kind:
        if {kind, existing_kind} <= {"i", "f"}:
            return arr.astype(np.float64 if existing_kind == "f" else np.int64)
        raise StoreError(f"{name}: stored column holds {existing_kind!r} values, got {kind!r}")
    return arr
