"""Opening a zoo wherever it is: a local store path, or a zoo pushed to the Hugging Face Hub.

This is the one place that tells the two apart, above both the store (which knows only local
paths) and the Hub code (which pulls a zoo into the cache and opens that).
"""

from __future__ import annotations

import os

from ..errors import StoreError
from .hub import HF_URL_PREFIX, open_hub_zoo
from .store import ZooStore


def open_zoo(path: str | os.PathLike | ZooStore, mode: str = "r") -> ZooStore:
    """Open a zoo (``.zarr`` directory or ``.h5``/``.hdf5`` file); ``mode`` is ``"r"`` or ``"a"``.

    ``hf://datasets/USER/REPO[@REVISION]`` pulls a pushed zoo into the Hugging Face cache (checked
    against its manifest) and opens it read-only. An open ZooStore is returned as it is.
    """
    if isinstance(path, ZooStore):
        return path
    if str(path).startswith(HF_URL_PREFIX):
        if mode != "r":
            raise StoreError(f"{path}: a zoo on the Hub opens read-only; pull it with --out to append to it")
        return open_hub_zoo(str(path))
    return ZooStore(path, mode)
