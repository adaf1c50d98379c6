"""Storage backends behind ZooStore, and the one table of store suffixes.

Both formats hold the same arrays (``params [N, E, P]``, ``done [N]``, ``hparams/<k> [N]``,
``metrics/<k> [N, E]``) chunked along N with a checksum on every chunk; a new format is a
:class:`~.base.Backend` subclass in a module of its own plus a row of :data:`FORMATS`.
"""

from __future__ import annotations

import os
from pathlib import Path

from ...errors import StoreError
from .base import ATTRS_KEY, COLUMN_CHUNK, Backend
from .hdf5_backend import HDF5Backend
from .zarr_backend import ZARR_CONFIG, ZarrBackend

# backend name -> (class, suffixes; the first is the one a bare name gets)
FORMATS: dict[str, tuple[type[Backend], tuple[str, ...]]] = {
    "zarr": (ZarrBackend, (".zarr",)),
    "hdf5": (HDF5Backend, (".h5", ".hdf5")),
}
ALIASES = {"h5": "hdf5"}
STORE_SUFFIXES = tuple(s for _, suffixes in FORMATS.values() for s in suffixes)
DIRECTORY_SUFFIXES = tuple(s for cls, suffixes in FORMATS.values() if cls.directory for s in suffixes)


def backend_for(path: str | os.PathLike) -> type[Backend]:
    """The backend class for a store path, from its suffix."""
    suffix = Path(path).suffix.lower()
    for cls, suffixes in FORMATS.values():
        if suffix in suffixes:
            return cls
    names = " or ".join("/".join(f"*{s}" for s in suffixes) for _, suffixes in FORMATS.values())
    raise StoreError(f"{path}: unknown zoo suffix {suffix or '(none)'!r}; name the store {names}")


def resolve_store_path(out: str | os.PathLike, backend: str | None = None) -> Path:
    """The store path: ``out`` itself, or ``out`` plus the suffix of an explicitly named backend."""
    out = Path(out)
    if backend is None:
        return out
    name = ALIASES.get(backend.lower(), backend.lower())
    if name not in FORMATS:
        raise StoreError(f"unknown backend {backend!r}; valid: {', '.join(repr(n) for n in FORMATS)}")
    suffixes = FORMATS[name][1]
    have = out.suffix.lower()
    if have in STORE_SUFFIXES:
        if have not in suffixes:
            raise StoreError(f"{out}: suffix {have!r} contradicts backend {backend!r}; drop one of them")
        return out
    return out.with_name(out.name + suffixes[0])


__all__ = [
    "ATTRS_KEY",
    "COLUMN_CHUNK",
    "DIRECTORY_SUFFIXES",
    "FORMATS",
    "STORE_SUFFIXES",
    "ZARR_CONFIG",
    "Backend",
    "HDF5Backend",
    "ZarrBackend",
    "backend_for",
    "resolve_store_path",
]
