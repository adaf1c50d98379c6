"""Zarr v3 directories: every chunk checksummed by the crc32c codec, attributes in the group's
metadata. Chunk presence is asked through zarr's store API, so it holds for any zarr store and
key encoding."""

from __future__ import annotations

import math
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from ...errors import StoreError
from .base import ATTRS_KEY, COLUMN_CHUNK, Backend

# Store every written chunk, even one equal to the fill value, so that verify() can tell a
# lost chunk from one that was never written (Zarr skips such chunks by default).
ZARR_CONFIG = {"write_empty_chunks": True}


def _is_fancy(sel: Any) -> bool:
    parts = sel if isinstance(sel, tuple) else (sel,)
    return any(isinstance(p, np.ndarray) for p in parts)


def _new_array(group, name: str, shape, chunks, dtype, fill, shards=None):
    """A checksummed array in ``group`` (crc32c over every chunk, no compression)."""
    from zarr.codecs import Crc32cCodec

    return group.create_array(
        name, shape=shape, chunks=chunks, shards=shards, dtype=dtype, fill_value=fill,
        compressors=[Crc32cCodec()], filters=None, config=ZARR_CONFIG,
    )  # fmt: skip


class ZarrBackend(Backend):
    name = "zarr"
    directory = True

    def __init__(self, path: Path, mode: str) -> None:
        import zarr

        super().__init__(path, mode)
        try:
            self.group = zarr.open_group(str(path), mode="r" if mode == "r" else "r+")
        except Exception as exc:
            raise StoreError(
                f"{path}: not a Zarr zoo ({exc.__class__.__name__}); create one or check the path"
            ) from None
        self._arrays: dict[str, Any] = {}

    @classmethod
    def create(cls, path: Path, attrs: dict, params_shape: tuple[int, int, int], chunk: int) -> ZarrBackend:
        import zarr

        group = zarr.open_group(str(path), mode="w-")
        group.attrs[ATTRS_KEY] = attrs
        self = cls(path, "a")
        chunks = (chunk, *params_shape[1:])
        self._arrays["params"] = _new_array(self.group, "params", params_shape, chunks, "float32", 0.0)
        self._arrays["done"] = _new_array(self.group, "done", params_shape[:1], (COLUMN_CHUNK,), "bool", False)
        return self

    def _array(self, name: str):
        if name not in self._arrays:
            self._arrays[name] = self.group[name].with_config(ZARR_CONFIG)
        return self._arrays[name]

    def attrs(self) -> dict:
        return dict(self.group.attrs.get(ATTRS_KEY) or {})

    def set_attrs(self, attrs: dict) -> None:
        self.group.attrs[ATTRS_KEY] = attrs

    def names(self, group: str) -> list[str]:
        if group not in self.group:
            return []
        return sorted(self.group[group].array_keys())

    def shape(self, name: str) -> tuple[int, ...]:
        return tuple(self._array(name).shape)

    def dtype(self, name: str) -> np.dtype:
        dtype = self._array(name).dtype
        return np.dtype(object) if dtype.kind == "T" else np.dtype(dtype)

    def chunk_rows(self, name: str) -> int:
        return self._array(name).chunks[0]

    def create_column(
        self, name: str, dtype: Any, tail: tuple[int, ...], rows: int, chunk: int = COLUMN_CHUNK
    ) -> None:
        fill = "" if dtype is str else (np.nan if np.dtype(dtype).kind == "f" else 0)
        self._arrays[name] = _new_array(self.group, name, (rows, *tail), (chunk, *tail), dtype, fill)
        self.fill(name, 0, rows)

    def resize(self, name: str, rows: int) -> None:
        arr = self._array(name)
        arr.resize((rows, *arr.shape[1:]))

    def refresh(self) -> None:
        """Forget cached array metadata so shapes written by another process are seen."""
        self._arrays.clear()

    def _read(self, name: str, sel: Any) -> np.ndarray:
        arr = self._array(name)
        out = arr.oindex[sel] if _is_fancy(sel) else arr[sel]
        return out.astype(object) if out.dtype.kind == "T" else out

    def write(self, name: str, sel: Any, values: np.ndarray) -> None:
        arr = self._array(name)
        if values.dtype == object:
            values = values.astype(np.dtypes.StringDType())
        if _is_fancy(sel):
            arr.oindex[sel] = values
        else:
            arr[sel] = values

    def chunk_present(self, name: str, chunk_index: int) -> bool:
        from zarr.core.sync import sync

        arr = self._array(name)
        if arr.shards is not None:  # a sharded copy (as pushed to the Hub): the chunk lives in its shard
            chunk_index //= arr.shards[0] // arr.chunks[0]
        key = arr.metadata.encode_chunk_key((chunk_index,) + (0,) * (arr.ndim - 1))
        prefix = arr.store_path.path
        return bool(sync(arr.store_path.store.exists(f"{prefix}/{key}" if prefix else key)))

    def fill(self, name: str, start: int, stop: int) -> None:
        arr = self._array(name)
        if stop > start:
            arr[start:stop] = arr.fill_value

    def close(self) -> None:
        self._arrays.clear()

    def sharded_copy(self, out: Path, max_entries: int) -> Path:
        """Each array keeps its chunks (the checksummed unit) and groups them into shards written
        whole, so that no folder of the copy holds more than ``max_entries`` entries."""
        import zarr

        dst = zarr.open_group(str(out), mode="w-")
        dst.attrs.update(dict(self.group.attrs))
        for name, arr in _arrays(self.group):
            n, c = arr.shape[0], arr.chunks[0]
            per_shard = max(1, math.ceil(max(1, math.ceil(n / c)) / max(1, max_entries - 1)))
            shards = (c * per_shard, *arr.shape[1:]) if per_shard > 1 else None
            new = _new_array(dst, name, arr.shape, arr.chunks, arr.dtype, arr.fill_value, shards)
            step = c * per_shard
            for start in range(0, n, step):
                new[start : start + step] = arr[start : start + step]
        return out


def _arrays(group, prefix: str = "") -> Iterator[tuple[str, Any]]:
    """Every array below ``group`` with its path."""
    for name, arr in group.arrays():
        yield prefix + name, arr
    for name, sub in group.groups():
        yield from _arrays(sub, f"{prefix}{name}/")
