"""HDF5 files: every chunk checksummed by the fletcher32 filter (not variable-length strings,
which HDF5 cannot checksum), attributes as one JSON string."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from ...errors import StoreError
from .base import ATTRS_KEY, COLUMN_CHUNK, Backend


def _new_dataset(f, name, shape, chunks, dtype, fill) -> None:
    import h5py

    checksum = dtype is not str  # HDF5 cannot checksum variable-length strings
    if dtype is str:
        dtype, fill = h5py.string_dtype(), None
    f.create_dataset(
        name, shape=shape, maxshape=(None, *shape[1:]), chunks=chunks, dtype=dtype, fillvalue=fill,
        fletcher32=checksum,
    )  # fmt: skip


class HDF5Backend(Backend):
    name = "hdf5"

    def __init__(self, path: Path, mode: str) -> None:
        import h5py

        super().__init__(path, mode)
        try:
            self.file = h5py.File(path, "r" if mode == "r" else "r+")
        except OSError as exc:
            raise StoreError(
                f"{path}: cannot open as an HDF5 zoo ({exc}); check the path and that no other process writes it"
            ) from None

    @classmethod
    def create(cls, path: Path, attrs: dict, params_shape: tuple[int, int, int], chunk: int) -> HDF5Backend:
        import h5py

        with h5py.File(path, "w-") as f:
            f.attrs[ATTRS_KEY] = json.dumps(attrs)
            _new_dataset(f, "params", params_shape, (chunk, *params_shape[1:]), "float32", 0.0)
            _new_dataset(f, "done", params_shape[:1], (COLUMN_CHUNK,), "bool", False)
        return cls(path, "a")

    def attrs(self) -> dict:
        raw = self.file.attrs.get(ATTRS_KEY)
        return json.loads(raw) if raw is not None else {}

    def set_attrs(self, attrs: dict) -> None:
        self.file.attrs[ATTRS_KEY] = json.dumps(attrs)

    def names(self, group: str) -> list[str]:
        return sorted(self.file[group].keys()) if group in self.file else []

    def shape(self, name: str) -> tuple[int, ...]:
        return tuple(self.file[name].shape)

    def dtype(self, name: str) -> np.dtype:
        return np.dtype(self.file[name].dtype)

    def chunk_rows(self, name: str) -> int:
        return self.file[name].chunks[0]

    def create_column(
        self, name: str, dtype: Any, tail: tuple[int, ...], rows: int, chunk: int = COLUMN_CHUNK
    ) -> None:
        fill = None if dtype is str else (np.nan if np.dtype(dtype).kind == "f" else 0)
        _new_dataset(self.file, name, (rows, *tail), (chunk, *tail), dtype, fill)
        self.fill(name, 0, rows)

    def resize(self, name: str, rows: int) -> None:
        self.file[name].resize(rows, axis=0)

    def refresh(self) -> None:
        if self.mode != "r":
            self.file.flush()

    def _read(self, name: str, sel: Any) -> np.ndarray:
        ds = self.file[name]
        # ZooStore passes fancy selections sorted and unique, as h5py requires
        out = ds[sel] if not isinstance(sel, np.ndarray) or len(sel) else ds[0:0]
        if ds.dtype.kind == "O":
            out = np.array([v.decode() if isinstance(v, bytes) else v for v in np.ravel(out)], dtype=object).reshape(
                np.shape(out)
            )
        return out

    def write(self, name: str, sel: Any, values: np.ndarray) -> None:
        self.file[name][sel] = values

    def chunk_present(self, name: str, chunk_index: int) -> bool:
        ds = self.file[name]
        coord = (chunk_index * ds.chunks[0],) + (0,) * (ds.ndim - 1)
        try:
            info = ds.id.get_chunk_info_by_coord(coord)
        except Exception:
            return False
        return info.byte_offset is not None

    def fill(self, name: str, start: int, stop: int) -> None:
        ds = self.file[name]
        if stop > start:
            ds[start:stop] = ds.fillvalue

    def close(self) -> None:
        if self.file:
            self.file.flush()
            self.file.close()

    def sharded_copy(self, out: Path, max_entries: int) -> Path:
        raise StoreError(f"{self.path}: an HDF5 zoo is one file; it needs no sharded copy")
