"""Zoos on disk: :class:`ZooStore` over the Zarr and HDF5 backends.

``zoostore`` is the store itself (create, append, read, verify), ``attributes`` what a new zoo
records, ``columns`` the coercion of values into its arrays, ``integrity`` checksums and lost
chunks, ``bases`` a fine-tuned zoo's base rows, ``summary`` what ``zoo info`` prints; member rebuilding lives in
:mod:`weightzoo.zoo.members` and the staged writes and writer lock in :mod:`weightzoo._fs`.
Open a zoo by path or ``hf://`` URL with :func:`weightzoo.open_zoo`.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from ..._fs import staged, writer_lock
from ..backends import backend_for, resolve_store_path
from .attributes import CHUNK_BYTES, FORMAT, FORMAT_VERSION
from .integrity import VerifyReport
from .summary import format_summary
from .zoostore import ZooStore


@contextlib.contextmanager
def opened(zoo: ZooStore | str | os.PathLike, open_store: Callable[[Any], ZooStore]) -> Iterator[ZooStore]:
    """An open zoo for the length of a block: ``zoo`` itself when it is open already (the caller's, left
    open), else ``open_store(zoo)`` (``ZooStore`` for local paths, ``open_zoo`` for URLs too), closed after."""
    if isinstance(zoo, ZooStore):
        yield zoo
        return
    with open_store(zoo) as store:
        yield store


@contextlib.contextmanager
def staged_store(path: str | os.PathLike, overwrite: bool = False) -> Iterator[Path]:
    """A hidden path beside ``path`` to write a new store into, published only if the block
    succeeds, with ``path``'s writer lock held throughout: create the store there with
    ``lock=False``."""
    path = Path(path)
    backend_for(path)  # refuse an unknown suffix before doing any work
    with writer_lock(path), staged(path, overwrite=overwrite) as tmp:
        yield tmp


__all__ = [
    "CHUNK_BYTES",
    "FORMAT",
    "FORMAT_VERSION",
    "VerifyReport",
    "ZooStore",
    "format_summary",
    "opened",
    "resolve_store_path",
    "staged_store",
]
