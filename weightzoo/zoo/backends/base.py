"""The contract between ZooStore and a storage format: :class:`Backend`.

A backend holds named arrays (``"params"``, ``"done"``, ``"hparams/lr"``, ``"metrics/test_acc"``)
chunked along their first axis (members), a checksum on every chunk, and the zoo's attributes as
one JSON document. ZooStore calls nothing but the methods listed here.
"""

from __future__ import annotations

import abc
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from ...errors import StoreError

ATTRS_KEY = "weightzoo"
COLUMN_CHUNK = 4096  # members per chunk of the small per-member arrays


class Backend(abc.ABC):
    """One open store in one format. Subclasses implement the abstract methods; reading with
    one-line errors, chunk iteration and the file listing are shared."""

    name: str = ""
    directory: bool = False  # a store is a folder of files (else one file)

    def __init__(self, path: Path, mode: str) -> None:
        self.path, self.mode = path, mode

    # ----------------------------------------------------------------- per format
    @classmethod
    @abc.abstractmethod
    def create(cls, path: Path, attrs: dict, params_shape: tuple[int, int, int], chunk: int) -> Backend:
        """Create a store with ``params`` and ``done`` arrays and open it for appending."""

    @abc.abstractmethod
    def attrs(self) -> dict:
        """The zoo's attributes."""

    @abc.abstractmethod
    def set_attrs(self, attrs: dict) -> None:
        """Replace the zoo's attributes."""

    @abc.abstractmethod
    def names(self, group: str) -> list[str]:
        """Sorted array names in ``group`` (``"hparams"`` or ``"metrics"``)."""

    @abc.abstractmethod
    def shape(self, name: str) -> tuple[int, ...]:
        """The shape of array ``name``."""

    @abc.abstractmethod
    def dtype(self, name: str) -> np.dtype:
        """The dtype arrays read back as (object for strings)."""

    @abc.abstractmethod
    def chunk_rows(self, name: str) -> int:
        """Members per chunk of array ``name``."""

    @abc.abstractmethod
    def create_column(
        self, name: str, dtype: Any, tail: tuple[int, ...], rows: int, chunk: int = COLUMN_CHUNK
    ) -> None:
        """A new array of ``rows`` rows (``dtype`` ``str`` for text) in chunks of ``chunk`` rows, filled
        so every chunk exists."""

    @abc.abstractmethod
    def resize(self, name: str, rows: int) -> None:
        """Grow or shrink array ``name`` along members."""

    @abc.abstractmethod
    def _read(self, name: str, sel: Any) -> np.ndarray:
        """``name[sel]`` as numpy; fancy selections are sorted and unique."""

    @abc.abstractmethod
    def write(self, name: str, sel: Any, values: np.ndarray) -> None:
        """``name[sel] = values``."""

    @abc.abstractmethod
    def chunk_present(self, name: str, chunk_index: int) -> bool:
        """Whether chunk ``chunk_index`` of ``name`` is stored (not lost, not never-written)."""

    @abc.abstractmethod
    def fill(self, name: str, start: int, stop: int) -> None:
        """Write the fill value into rows ``start:stop`` so their chunks exist on disk."""

    @abc.abstractmethod
    def refresh(self) -> None:
        """Forget cached metadata so that what another process wrote is seen."""

    @abc.abstractmethod
    def close(self) -> None:
        """Flush and release the store."""

    @abc.abstractmethod
    def sharded_copy(self, out: Path, max_entries: int) -> Path:
        """A copy at ``out`` whose folders hold at most ``max_entries`` entries (same chunks)."""

    # ----------------------------------------------------------------- shared
    def read(self, name: str, sel: Any) -> np.ndarray:
        """``name[sel]``; a damaged chunk becomes a StoreError that says how to find the rest."""
        try:
            return self._read(name, sel)
        except (ValueError, OSError, RuntimeError) as exc:
            first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            raise StoreError(
                f"{self.path}: cannot read {name!r} ({first}); "
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

    def files(self) -> list[Path]:
        """Every file of the store, sorted (one for a single-file format)."""
        if self.path.is_file():
            return [self.path]
        return sorted(p for p in self.path.rglob("*") if p.is_file())

    def largest_folder(self) -> int:
        """Entries in the fullest folder of the store (0 for a single file)."""
        if self.path.is_file():
            return 0
        return max((len(os.listdir(d)) for d, _, _ in os.walk(self.path)), default=0)

    def size_on_disk(self) -> int:
        return sum(f.stat().st_size for f in self.files())
