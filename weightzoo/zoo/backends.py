"""Storage backends behind ZooStore: Zarr v3 directories and HDF5 files.

Both hold the same arrays (``params [N, E, P]``, ``done [N]``, ``hparams/<k> [N]``,
``metrics/<k> [N, E]``) chunked along N, with a checksum on every chunk (Zarr's crc32c codec,
HDF5's fletcher32 filter), and the zoo's attributes as one JSON document.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import StoreError

ATTRS_KEY = "weightzoo"
COLUMN_CHUNK = 4096  # members per chunk of the small per-member arrays
# Store every written chunk, even one equal to the fill value, so that verify() can tell a
# lost chunk from one that was never written (Zarr skips such chunks by default).
ZARR_CONFIG = {"write_empty_chunks": True}


def backend_for(path: str | os.PathLike) -> type[Backend]:
    """Pick the backend class from the path's suffix."""
    suffix = Path(path).suffix.lower()
    if suffix == ".zarr":
        return ZarrBackend
    if suffix in (".h5", ".hdf5"):
        return HDF5Backend
    raise StoreError(f"{path}: unknown zoo suffix {suffix or '(none)'!r}; name the store *.zarr or *.h5/*.hdf5")


class Backend:
    """What ZooStore needs from a storage format. Arrays are addressed by name
    (``"params"``, ``"done"``, ``"hparams/lr"``, ``"metrics/test_acc"``)."""

    suffixes: tuple[str, ...] = ()

    def __init__(self, path: Path, mode: str) -> None:
        self.path, self.mode = path, mode

    # implemented by each backend
    @classmethod
    def create(cls, path: Path, attrs: dict, params_shape: tuple[int, int, int], chunk: int) -> Backend: ...
    def attrs(self) -> dict: ...
    def set_attrs(self, attrs: dict) -> None: ...
    def names(self, group: str) -> list[str]: ...
    def shape(self, name: str) -> tuple[int, ...]: ...
    def chunk_rows(self, name: str) -> int: ...
    def create_column(self, name: str, dtype: Any, tail: tuple[int, ...], rows: int) -> None: ...
    def resize(self, name: str, rows: int) -> None: ...
    def _read(self, name: str, sel: Any) -> np.ndarray: ...
    def write(self, name: str, sel: Any, values: np.ndarray) -> None: ...
    def chunk_present(self, name: str, chunk_index: int) -> bool: ...
    def fill(self, name: str, start: int, stop: int) -> None: ...
    def close(self) -> None: ...

    def read(self, name: str, sel: Any) -> np.ndarray:
        """``name[sel]``; a damaged chunk becomes a StoreError that says how to find the rest."""
        try:
            return self._read(name, sel)
        except (ValueError, OSError, RuntimeError) as exc:
            raise StoreError(
                f"{self.path}: cannot read {name!r} ({str(exc).splitlines()[0] if str(exc) else type(exc).__name__}); "
                f"the store may be damaged: run `weightzoo zoo verify {self.path}`"
            ) from None

    def read_chunks(self, name: str) -> Iterator[tuple[int, int, Exception | None]]:
        """Read every chunk of ``name``; yield ``(start, stop, error or None)`` per chunk."""
        n, c = self.shape(name)[0], self.chunk_rows(name)
        for i, start in enumerate(range(0, n, c)):
            stop = min(start + c, n)
            if not self.chunk_present(name, i):
                yield start, stop, StoreError(f"chunk {i} of {name!r} is missing")
                continue
            try:
                self._read(name, slice(start, stop))
            except Exception as exc:  # a checksum or decode failure: report, keep going
                yield start, stop, exc
            else:
                yield start, stop, None

    def size_on_disk(self) -> int:
        if self.path.is_file():
            return self.path.stat().st_size
        return sum(f.stat().st_size for f in self.path.rglob("*") if f.is_file())


# --------------------------------------------------------------------------- Zarr


def _is_fancy(sel: Any) -> bool:
    parts = sel if isinstance(sel, tuple) else (sel,)
    return any(isinstance(p, np.ndarray) for p in parts)


class ZarrBackend(Backend):
    suffixes = (".zarr",)

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
        self._new_array("params", params_shape, (chunk, *params_shape[1:]), "float32", 0.0)
        self._new_array("done", params_shape[:1], (COLUMN_CHUNK,), "bool", False)
        return self

    def _new_array(self, name, shape, chunks, dtype, fill):
        from zarr.codecs import Crc32cCodec

        self._arrays[name] = self.group.create_array(
            name,
            shape=shape,
            chunks=chunks,
            dtype=dtype,
            fill_value=fill,
            compressors=[Crc32cCodec()],
            filters=None,
            config=ZARR_CONFIG,
        )

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

    def chunk_rows(self, name: str) -> int:
        return self._array(name).chunks[0]

    def create_column(self, name: str, dtype: Any, tail: tuple[int, ...], rows: int) -> None:
        fill = "" if dtype is str else (np.nan if np.dtype(dtype).kind == "f" else 0)
        self._new_array(name, (rows, *tail), (COLUMN_CHUNK, *tail), dtype, fill)
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
        arr = self._array(name)
        if arr.shards is not None:  # a sharded copy (as pushed to the Hub): the chunk lives in its shard's file
            chunk_index //= arr.shards[0] // arr.chunks[0]
        key = "/".join(["c", str(chunk_index)] + ["0"] * (len(arr.shape) - 1))
        return (self.path / name / key).exists()

    def fill(self, name: str, start: int, stop: int) -> None:
        """Write the fill value into rows ``start:stop`` so their chunks exist on disk."""
        arr = self._array(name)
        if stop > start:
            arr[start:stop] = arr.fill_value

    def close(self) -> None:
        self._arrays.clear()


# --------------------------------------------------------------------------- HDF5


class HDF5Backend(Backend):
    suffixes = (".h5", ".hdf5")

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
            cls._new_dataset(f, "params", params_shape, (chunk, *params_shape[1:]), "float32", 0.0)
            cls._new_dataset(f, "done", params_shape[:1], (COLUMN_CHUNK,), "bool", False)
        return cls(path, "a")

    @staticmethod
    def _new_dataset(f, name, shape, chunks, dtype, fill):
        import h5py

        checksum = dtype is not str  # HDF5 cannot checksum variable-length strings
        if dtype is str:
            dtype, fill = h5py.string_dtype(), None
        f.create_dataset(
            name,
            shape=shape,
            maxshape=(None, *shape[1:]),
            chunks=chunks,
            dtype=dtype,
            fillvalue=fill,
            fletcher32=checksum,
        )

    def attrs(self) -> dict:
        raw = self.file.attrs.get(ATTRS_KEY)
        return json.loads(raw) if raw is not None else {}

    def set_attrs(self, attrs: dict) -> None:
        self.file.attrs[ATTRS_KEY] = json.dumps(attrs)

    def names(self, group: str) -> list[str]:
        return sorted(self.file[group].keys()) if group in self.file else []

    def shape(self, name: str) -> tuple[int, ...]:
        return tuple(self.file[name].shape)

    def chunk_rows(self, name: str) -> int:
        return self.file[name].chunks[0]

    def create_column(self, name: str, dtype: Any, tail: tuple[int, ...], rows: int) -> None:
        fill = None if dtype is str else (np.nan if np.dtype(dtype).kind == "f" else 0)
        self._new_dataset(self.file, name, (rows, *tail), (COLUMN_CHUNK, *tail), dtype, fill)
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
        """Write the fill value into rows ``start:stop`` so their chunks are allocated."""
        ds = self.file[name]
        if stop > start:
            ds[start:stop] = ds.fillvalue

    def close(self) -> None:
        if self.file:
            self.file.flush()
            self.file.close()
