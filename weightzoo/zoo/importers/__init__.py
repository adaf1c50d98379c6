"""External zoo formats -> ZooStore.

Formats (one module each):

- ``smallcnnzoo`` (:mod:`.smallcnnzoo`): Unterthiner et al. 2020, "Predicting Neural Network
  Accuracy from Weights" (``weights.npy``, ``metrics.csv.gz``, ``layout.csv``; TensorFlow axis order).
- ``modelzoo`` (:mod:`.modelzoo`): Schürholt et al. 2022, "Model Zoos" (one Ray Tune trial folder
  per model with ``params.json``, ``result.json`` and ``checkpoint_<epoch>/checkpoints``).
- ``inr-folder`` (:mod:`.inr_folder`): DWSNets / nfn style SIREN datasets (``<root>/<class>/*.pth``,
  optional ``splits.json``).
- ``state-dicts`` (:mod:`.state_dict_folder`): any folder of ``.safetensors`` / ``.pt`` / ``.pth``
  state_dicts.

Each format module has one ``plan(src) -> ImportPlan`` (:mod:`.plan`) that reads the source's
metadata; the writer in :mod:`.plan` turns any plan into a store, and :mod:`.state_dicts` reads
state_dict files and derives layouts from them. A new format is a new module with a ``plan``
function, registered in ``_PLANNERS`` below. Incomplete or broken members are skipped and listed in
the report; malformed inputs raise a one-line :class:`~weightzoo.errors.WeightZooError`.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from ..._fs import ensure_writable
from ...errors import ImportFormatError, StoreError
from ..backends import resolve_store_path
from . import inr_folder, modelzoo, smallcnnzoo, state_dict_folder
from .plan import ImportPlan, write_zoo

_PLANNERS: dict[str, Callable[[Path], ImportPlan]] = {
    "smallcnnzoo": smallcnnzoo.plan,
    "modelzoo": modelzoo.plan,
    "inr-folder": inr_folder.plan,
    "state-dicts": state_dict_folder.plan,
}
FORMATS = tuple(_PLANNERS)

__all__ = ["FORMATS", "ImportReport", "import_zoo"]


@dataclass
class ImportReport:
    """What an import did: members written, and one line per source item left out and why."""

    format: str
    source: str
    out: str
    imported: int
    skipped: list[str] = field(default_factory=list)

    def __str__(self) -> str:
        return (
            f"imported {self.imported} members from {self.source} ({self.format}) into {self.out}; "
            f"skipped {len(self.skipped)}"
        )


def import_zoo(
    fmt: str,
    src: str | os.PathLike,
    out: str | os.PathLike,
    *,
    backend: str | None = None,
    overwrite: bool = False,
    progress: bool = False,
) -> ImportReport:
    """Read a zoo in an external format from ``src`` and write it as a weightzoo store at ``out``.

    ``backend`` (``"zarr"`` or ``"hdf5"``) is taken from ``out``'s suffix when None; ``out`` is
    replaced only if the import succeeds and ``overwrite`` is set.
    """
    if fmt not in _PLANNERS:
        raise ImportFormatError(f"unknown import format {fmt!r}; valid formats: {', '.join(FORMATS)}")
    src, out = Path(src), resolve_store_path(out, backend)
    if not src.is_dir():
        raise ImportFormatError(f"{src}: no such directory; the {fmt!r} importer reads a folder")
    if out.exists() and not overwrite:
        raise StoreError(f"{out}: already exists; choose another path or pass overwrite=True (--overwrite)")
    ensure_writable(out)
    plan = _PLANNERS[fmt](src)
    plan.source = {"format": fmt, "path": str(src.resolve()), **plan.source}
    imported, skipped = write_zoo(plan, out, overwrite=overwrite, progress=progress, desc=f"import {fmt}")
    return ImportReport(fmt, str(src), str(out), imported, skipped)
