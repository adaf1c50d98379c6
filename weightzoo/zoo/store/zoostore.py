"""ZooStore: a zoo of trained networks on disk, one API over Zarr and HDF5.

Layout (HDF5 mirrors it with datasets)::

    attrs        format, version, ParamLayout, PermutationSpec, architecture(s), ZooSpec, epochs
    params       float32 [N, E, P]   chunked along N, a checksum per chunk
    done         bool [N]            written last for a member: the resume/consistency marker
    hparams/<k>  [N]                 numbers or strings
    metrics/<k>  float32 [N, E]

Public member indices run over the members marked done (``store.members`` maps them to
storage rows), so a reader opened while a writer appends sees only finished members. A store
opened for appending holds the store's writer lock until it is closed.

Opening a store and reading its attributes, columns and metrics imports no torch (``zoo info``
starts faster than ``import torch``): torch, the architectures and the permutation spec are
imported where parameters or members are first asked for.
"""

from __future__ import annotations

import contextlib
import math
import os
from collections.abc import Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from ..._fs import remove, writer_lock
from ...errors import SpecError, StoreError
from ...layout import ParamLayout
from ..backends import Backend, backend_for
from ..train.numerics import NumericPath
from .attributes import CHUNK_BYTES, FORMAT, FORMAT_VERSION, new_attrs, params_chunk
from .bases import base_rows, member_base, store_base
from .columns import as_float32, check_column_name, column_kind, column_values
from .integrity import BASE, VerifyReport, check_present, verify
from .summary import summarize

if TYPE_CHECKING:
    import torch
    from torch import nn

    from ...symmetry import PermutationSpec
    from ..members import MemberArchitectures



class ZooStore:
    """A zoo on disk. Create with :meth:`create`, open with ``ZooStore(path, mode)`` or
    :func:`weightzoo.open_zoo` (which also opens ``hf://`` URLs). ``mode="a"`` takes the store's
    writer lock (refused while another process writes it) unless ``lock=False``, for a store
    whose writer already holds the lock of the path it will be published at."""

    def __init__(self, path: str | os.PathLike, mode: str = "r", *, lock: bool = True) -> None:
        if mode not in ("r", "a"):
            raise ValueError(f"mode must be 'r' or 'a', got {mode!r}")
        if "://" in str(path):
            raise StoreError(f"{path}: a URL, not a store path; open it with weightzoo.open_zoo({str(path)!r})")
        self.path = Path(path)
        self.mode = mode
        self._backend_cls = backend_for(self.path)
        if not self.path.exists():
            raise StoreError(f"{self.path}: no such zoo; build or import one first (weightzoo zoo import/build)")
        self._backend: Backend | None = None
        self._lock = contextlib.ExitStack()
        if mode == "a" and lock:
            self._lock.enter_context(writer_lock(self.path))
        try:
            attrs = self.backend.attrs()
            if attrs.get("format") != FORMAT:
                raise StoreError(f"{self.path}: not a weightzoo zoo (attribute 'format' is {attrs.get('format')!r})")
            if attrs.get("format_version", 0) > FORMAT_VERSION:
                raise StoreError(
                    f"{self.path}: format version {attrs['format_version']} is newer than this "
                    f"weightzoo reads ({FORMAT_VERSION}); upgrade weightzoo"
                )
            self._load_attrs(attrs)
            self.refresh()
        except BaseException:
            self.close()
            raise

    # ----------------------------------------------------------------- creation
    @classmethod
    def create(
        cls,
        path: str | os.PathLike,
        layout: ParamLayout,
        *,
        architecture: Mapping[str, Any] | None = None,
        perm_spec: PermutationSpec | None = None,
        epochs: Sequence[int] = (0,),
        spec: Mapping[str, Any] | None = None,
        arch_overrides: Sequence[str] = (),
        source: Mapping[str, Any] | None = None,
        capacity: int = 0,
        chunk_members: int | None = None,
        expected_members: int | None = None,
        mixed_layouts: bool = False,
        overwrite: bool = False,
        lock: bool = True,
    ) -> ZooStore:
        """Create an empty zoo for networks of ``layout`` and open it for appending.

        ``architecture`` (a layer list, see :mod:`weightzoo.zoo.archs`) lets ``model(i)``
        rebuild members; ``arch_overrides`` names hparam columns that change it per member
        (``"activation"``); the resolved architecture of each distinct member is recorded as
        members are written. The PermutationSpec is derived from the architecture if not given.
        With ``mixed_layouts`` members differ in shape (per-member architecture arguments such
        as width): ``layout`` is the largest member's, each row holds its member's own flat
        vector zero-padded to that size, and :meth:`member_layout` gives each member's layout.
        Params are chunked along members (``chunk_members``, default ~4 MiB per chunk, fewer
        when ``expected_members`` says the zoo is smaller); ``capacity`` reserves rows.
        """
        path = Path(path)
        backend_cls = backend_for(path)
        epochs = [int(e) for e in epochs]
        if not epochs or sorted(set(epochs)) != epochs:
            raise SpecError(f"{path}: checkpoint epochs must be a non-empty increasing list, got {epochs}")
        attrs = new_attrs(
            layout, epochs, architecture=architecture, perm_spec=perm_spec, arch_overrides=arch_overrides,
            mixed_layouts=mixed_layouts, spec=spec, source=source,
        )  # fmt: skip
        chunk = params_chunk(layout, len(epochs), chunk_members, expected_members)
        with writer_lock(path) if lock else contextlib.nullcontext():
            if path.exists():
                if not overwrite:
                    raise StoreError(
                        f"{path}: already exists; choose another path or pass overwrite=True (--overwrite)"
                    )
                remove(path)
            path.parent.mkdir(parents=True, exist_ok=True)
            backend_cls.create(path, attrs, (0, len(epochs), layout.size), chunk).close()
            store = cls(path, "a", lock=lock)
        store.reserve(int(capacity))
        return store

    @classmethod
    def create_like(cls, source: ZooStore, path: str | os.PathLike, *, lock: bool = True) -> ZooStore:
        """An empty store at ``path`` with the attributes, shapes, chunking and columns of
        ``source`` (backend by ``path``'s suffix), open for :meth:`write_block`."""
        path = Path(path)
        src = source.backend
        with writer_lock(path) if lock else contextlib.nullcontext():
            target = backend_for(path).create(path, src.attrs(), src.shape("params"), src.chunk_rows("params"))
            for name in source.array_names()[2:]:
                rows, *tail = src.shape(name)
                dtype = src.dtype(name)
                kind = str if dtype.kind == "O" else dtype
                target.create_column(name, kind, tuple(tail), rows, chunk=src.chunk_rows(name))
            target.close()
            return cls(path, "a", lock=lock)

    def _load_attrs(self, attrs: dict) -> None:
        self.attrs = attrs
        self.layout = ParamLayout.from_dict(attrs["layout"])
        self.architecture: dict | None = attrs.get("architecture")
        self.epochs: list[int] = list(attrs["epochs"])
        self._member_archs: MemberArchitectures | None = None

    @property
    def _members(self) -> MemberArchitectures:
        """Each member's architecture, layout and spec (made on first use: it needs torch)."""
        if self._member_archs is None:
            from ..members import MemberArchitectures

            self._member_archs = MemberArchitectures(self.path, self.attrs, self.column, self.layout)
        return self._member_archs

    @property
    def perm_spec(self) -> PermutationSpec | None:
        """The zoo-wide PermutationSpec (None for mixed zoos: see :meth:`member_perm_spec`)."""
        return self._members.perm_spec

    # ------------------------------------------------------------ backend handle
    @property
    def backend(self) -> Backend:
        """The open storage handle; opened lazily, so a pickled store reopens in each worker."""
        if self._backend is None:
            self._backend = self._backend_cls(self.path, self.mode)
        return self._backend

    def __getstate__(self) -> dict:
        state = self.__dict__.copy()
        state["_backend"] = None
        state["_member_archs"] = None
        state["_lock"] = contextlib.ExitStack()  # a pickled copy (a worker's) never holds the lock
        return state

    def close(self) -> None:
        if self._backend is not None:
            self._backend.close()
            self._backend = None
        self._lock.close()

    def __enter__(self) -> ZooStore:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __repr__(self) -> str:
        return (
            f"ZooStore({str(self.path)!r}, members={len(self)}/{self.capacity}, "
            f"params={self.layout.size}, epochs={self.epochs})"
        )

    # ------------------------------------------------------------------ members
    def refresh(self) -> None:
        """Re-read which members are done (another process may have appended)."""
        self.backend.refresh()
        self.capacity = self.backend.shape("done")[0]
        done = self.backend.read("done", slice(0, self.capacity)) if self.capacity else np.zeros(0, bool)
        self.members = np.flatnonzero(done)

    def __len__(self) -> int:
        return len(self.members)

    @property
    def name(self) -> str:
        """The zoo's name: its build spec's, else the store's file name without suffix."""
        return (self.attrs.get("spec") or {}).get("name") or self.path.stem

    @property
    def chunk_members(self) -> int:
        """Members per params chunk: the unit of every read from disk."""
        return self.backend.chunk_rows("params")

    def rows(self, indices: Any = None) -> np.ndarray:
        """Storage rows of public member indices (int, slice, sequence or None for all)."""
        if indices is None:
            return self.members
        if isinstance(indices, slice):
            return self.members[indices]
        idx = np.asarray(indices, dtype=np.int64)
        n = len(self.members)
        if idx.size and (idx.max() >= n or idx.min() < -n):
            raise IndexError(f"{self.path}: member index out of range for a zoo of {n} members")
        return self.members[idx]

    def epoch_index(self, epoch: int) -> int:
        """Position of a checkpoint: negative values count from the last stored checkpoint,
        others name the epoch (``epoch=0`` is the initialization if it was stored)."""
        if epoch < 0:
            if -epoch > len(self.epochs):
                raise StoreError(f"{self.path}: epoch {epoch} out of range; {len(self.epochs)} checkpoints stored")
            return len(self.epochs) + epoch
        if epoch not in self.epochs:
            raise StoreError(f"{self.path}: no checkpoint at epoch {epoch}; stored epochs are {self.epochs}")
        return self.epochs.index(epoch)

    def _read_rows(self, name: str, rows: np.ndarray, *rest: Any) -> np.ndarray:
        """Read ``name[rows, *rest]`` with one contiguous read when the rows allow it."""
        if rows.ndim == 0:
            return self.backend.read(name, (int(rows), *rest))
        if len(rows) == 0:
            return self.backend.read(name, (slice(0, 0), *rest))
        uniq, inverse = np.unique(rows, return_inverse=True)
        if int(uniq[-1]) - int(uniq[0]) + 1 == len(uniq):
            block = self.backend.read(name, (slice(int(uniq[0]), int(uniq[-1]) + 1), *rest))
        else:  # one contiguous read per touched chunk: faster than fancy selection on both backends
            chunk = self.backend.chunk_rows(name)
            pieces = []
            for part in np.split(uniq, np.flatnonzero(np.diff(uniq // chunk)) + 1):
                span = self.backend.read(name, (slice(int(part[0]), int(part[-1]) + 1), *rest))
                pieces.append(span[part - part[0]])
            block = np.concatenate(pieces)
        return block if np.array_equal(uniq, rows) else block[inverse]

    def params(self, indices: Any = None, epoch: int | None = -1) -> torch.Tensor:
        """Flat parameters ``[n, P]`` of members at one checkpoint (``epoch=None``: ``[n, E, P]``)."""
        import torch

        rows = self.rows(indices)
        if epoch is None:
            return torch.from_numpy(np.ascontiguousarray(self._read_rows("params", rows)))
        return torch.from_numpy(np.ascontiguousarray(self._read_rows("params", rows, self.epoch_index(epoch))))

    def params_chunk(self, chunk: int, epoch_index: int) -> np.ndarray:
        """Storage rows of params chunk ``chunk`` at checkpoint position ``epoch_index``, done or
        not: the unit a streaming reader caches (one read from disk)."""
        start = chunk * self.chunk_members
        stop = min(start + self.chunk_members, self.capacity)
        return self.backend.read("params", (slice(start, stop), epoch_index))

    def state_dict(self, i: int, epoch: int = -1) -> dict[str, torch.Tensor]:
        """The state_dict of member ``i`` at a checkpoint (float tensors of the layout)."""
        return {k: v.clone() for k, v in self.unflatten_member(i, self.params(int(i), epoch)).items()}

    @property
    def mixed(self) -> bool:
        """Whether members differ in parameter shapes (see ``create(mixed_layouts=True)``)."""
        return bool(self.attrs.get("mixed_layouts"))

    def member_layout(self, i: int) -> ParamLayout:
        """The ParamLayout of member ``i`` (the zoo's layout unless the zoo is mixed)."""
        return self._members.layout_of(i)

    def architecture_groups(self, indices: Any = None) -> tuple[list[ParamLayout], list[PermutationSpec], np.ndarray]:
        """Distinct ``(layout, spec)`` pairs among members and each member's pair index.

        Reads every per-member architecture column once (not once per member). A zoo that is not
        mixed has one pair: its layout and permutation spec.
        """
        idx = np.arange(len(self)) if indices is None else np.asarray(indices, dtype=np.int64).reshape(-1)
        return self._members.groups(idx)

    def unflatten_member(self, i: int, flat: torch.Tensor) -> dict[str, torch.Tensor]:
        """Member ``i``'s stored row ``[..., P]`` as named tensors of its own layout."""
        layout = self.member_layout(i)
        return layout.unflatten(flat[..., : layout.size])

    def member_architecture(self, i: int) -> dict:
        """The architecture of member ``i``, with its per-member overrides (e.g. activation)."""
        return self._members.of(i)

    def member_architectures(self, indices: Any) -> list[dict]:
        """The architecture of each of several members, every architecture column read once."""
        return self._members.of_many(np.asarray(indices, dtype=np.int64).reshape(-1))

    def member_perm_spec(self, i: int) -> PermutationSpec:
        """The PermutationSpec of member ``i``, with the symmetries its own activation allows."""
        return self._members.perm_spec_of(i)

    def model(self, i: int, epoch: int = -1) -> nn.Module:
        """Rebuild member ``i`` as an ``nn.Module`` (eval mode) with its stored parameters."""
        return self._members.module(self.member_architecture(i), self.state_dict(i, epoch))

    # ------------------------------------------------------------- fine-tuned zoos
    @property
    def fine_tuned(self) -> bool:
        """Whether members started from stored base weights (see :meth:`base_params`)."""
        return bool(self.attrs.get("base"))

    def set_base(self, params: Any, source: Mapping[str, Any]) -> None:
        """Store the base rows ``[K, P]`` fine-tuned members start from, and where they came from
        (``members``: the base zoo's member of each row, ``sha256`` of each row, ...); once."""
        self._writable()
        store_base(self, params, source)

    def base_params(self, indices: Any = None) -> torch.Tensor:
        """The base weights: each member's ``[n, P]`` for ``indices``; without them the one base ``[P]``
        all members share, or all distinct bases ``[K, P]`` when members have their own."""
        import torch

        rows = base_rows(self)
        if indices is None:
            return torch.from_numpy(rows[0] if len(rows) == 1 else rows)
        idx = np.arange(len(self))[indices] if isinstance(indices, slice) else np.atleast_1d(indices)
        return torch.from_numpy(rows[member_base(self, idx)])

    def task_vectors(self, indices: Any = None, epoch: int = -1) -> torch.Tensor:
        """Each member's parameters minus its base, ``[n, P]``: what task-arithmetic merges combine."""
        idx = np.arange(len(self)) if indices is None else np.arange(len(self))[indices]
        return self.params(idx, epoch) - self.base_params(idx)

    # ------------------------------------------------------------- members' tasks
    def task_data(self, i: int):
        """Member ``i``'s training subset and test set as its variant of the task has them
        (:class:`~weightzoo.zoo.evaluate.MemberData`); built zoos only."""
        from ..evaluate import task_data

        return task_data(self, i)

    def evaluate(self, params: Any, members: Any, *, device: str = "cpu") -> dict[str, np.ndarray]:
        """The builder's metrics for weights ``[B, P]`` of the zoo's layout, each on its member's task
        (see :func:`weightzoo.zoo.evaluate.evaluate`)."""
        from ..evaluate import evaluate

        return evaluate(self, params, members, device=device)

    # ------------------------------------------------------------- columns
    def values(self, name: str, indices: Any = None, epoch: int | None = -1, *, what: str = "column") -> np.ndarray:
        """Values of a metric (at checkpoint ``epoch``) or of a hyperparameter column, by name."""
        if name in self.metric_names:
            return self.metric(name, indices, epoch=epoch)
        if name in self.hparam_names:
            return self.column(name, indices)
        raise StoreError(
            f"{self.path}: no column {name!r}: the {what} {name!r} is neither a metric {self.metric_names} "
            f"nor a hyperparameter {self.hparam_names}"
        )

    @property
    def hparam_names(self) -> list[str]:
        return self.backend.names("hparams")

    @property
    def metric_names(self) -> list[str]:
        return self.backend.names("metrics")

    def column(self, name: str, indices: Any = None) -> np.ndarray:
        """One hyperparameter column for members (strings come back as Python str)."""
        if name not in self.hparam_names:
            raise StoreError(f"{self.path}: no hyperparameter column {name!r}; columns are {self.hparam_names}")
        return self._read_rows(f"hparams/{name}", self.rows(indices))

    def metric(self, name: str, indices: Any = None, epoch: int | None = -1) -> np.ndarray:
        """A metric for members at one checkpoint ``[n]`` (``epoch=None``: ``[n, E]``)."""
        if name not in self.metric_names:
            raise StoreError(f"{self.path}: no metric {name!r}; metrics are {self.metric_names}")
        rest = () if epoch is None else (self.epoch_index(epoch),)
        return self._read_rows(f"metrics/{name}", self.rows(indices), *rest)

    def table(self, epoch: int = -1):
        """Hyperparameters and metrics (at ``epoch``, default the last) as a pandas DataFrame."""
        import pandas as pd

        data: dict[str, Any] = {name: self.column(name) for name in self.hparam_names}
        for name in self.metric_names:
            data[name] = self.metric(name, epoch=epoch)
        frame = pd.DataFrame(data, index=pd.RangeIndex(len(self), name="member"))
        frame.insert(0, "row", self.members)
        return frame

    # -------------------------------------------------------------- writing
    def _writable(self) -> Backend:
        if self.mode != "a":
            raise StoreError(f"{self.path}: opened read-only; open with mode='a' to write")
        return self.backend

    def _column_arrays(self) -> list[str]:
        """Names of the small per-member arrays: ``done`` and every column."""
        return ["done", *(f"hparams/{k}" for k in self.hparam_names), *(f"metrics/{k}" for k in self.metric_names)]

    def reserve(self, capacity: int) -> None:
        """Grow every array to ``capacity`` rows (never shrinks).

        The new rows of ``done`` and the columns are written with fill values at once, so every
        chunk of them exists on disk and ``verify`` can report a missing one as lost."""
        backend = self._writable()
        if capacity <= self.capacity:
            return
        backend.resize("params", capacity)
        for name in self._column_arrays():
            backend.resize(name, capacity)
            backend.fill(name, self.capacity, capacity)
        self.capacity = capacity

    def write(
        self,
        rows: Iterable[int],
        params: Any,
        hparams: Mapping[str, Sequence] | None = None,
        metrics: Mapping[str, Any] | None = None,
    ) -> None:
        """Write members' parameters ``[n, E, P]``, hyperparameters and metrics ``[n, E]`` at
        storage rows, without marking them done. Everything is validated before anything is
        written, so bad input leaves the store as it was. The resolved architecture of every
        member architecture not seen before is recorded first."""
        backend = self._writable()
        rows = np.asarray(list(rows), dtype=np.int64)
        n, E, P = len(rows), len(self.epochs), self.layout.size
        arr = as_float32(params, f"{self.path}: params")
        if arr.ndim == 2 and E == 1:
            arr = arr[:, None, :]
        if arr.shape != (n, E, P):
            raise StoreError(f"{self.path}: params for {n} members must have shape {(n, E, P)}, got {arr.shape}")
        if n and (rows.min() < 0 or rows.max() >= self.capacity):
            raise StoreError(f"{self.path}: rows out of range; reserve({rows.max() + 1}) first")
        if len(np.unique(rows)) != n:
            raise StoreError(f"{self.path}: rows {rows.tolist()} repeat a row; write each member once")
        for k in [*(hparams or {}), *(metrics or {})]:
            check_column_name(self.path, k)
        stored = set(self.hparam_names)
        columns = {
            f"hparams/{k}": column_values(
                f"{self.path}: hyperparameter {k!r}", v, n, self._column_kind("hparams", k) if k in stored else None
            )
            for k, v in (hparams or {}).items()
        }
        for k, v in (metrics or {}).items():
            m = as_float32(v, f"{self.path}: metric {k!r}")
            m = m.reshape(n, 1) if m.shape == (n,) and E == 1 else m
            if m.shape != (n, E):
                raise StoreError(f"{self.path}: metric {k!r} must have shape {(n, E)}, got {m.shape}")
            columns[f"metrics/{k}"] = m
        self._record_architectures({k: columns[f"hparams/{k}"] for k in hparams or {}})
        order = np.argsort(rows)
        rows, arr = rows[order], arr[order]
        existing = {f"hparams/{k}" for k in self.hparam_names} | {f"metrics/{k}" for k in self.metric_names}
        for name, values in columns.items():
            if name not in existing:
                dtype = str if values.dtype == object else values.dtype
                backend.create_column(name, dtype, values.shape[1:], self.capacity)
            columns[name] = values[order]
        sel = slice(int(rows[0]), int(rows[-1]) + 1) if n and rows[-1] - rows[0] + 1 == n else rows
        if n:
            backend.write("params", sel, arr)
            for name, values in columns.items():
                backend.write(name, sel, values)

    def _column_kind(self, group: str, key: str) -> str:
        return column_kind(self.backend.dtype(f"{group}/{key}"))

    def _record_architectures(self, columns: Mapping[str, np.ndarray]) -> None:
        """Add the resolved layer lists of member architectures these columns introduce."""
        new = self._members.records(columns)
        if new:
            self.update_attrs(architectures=[*(self.attrs.get("architectures") or []), *new])

    def mark_done(self, rows: Iterable[int]) -> None:
        """Mark members finished; the last write for a member, after its data is stored."""
        backend = self._writable()
        rows = np.unique(np.asarray(list(rows), dtype=np.int64))
        if len(rows):
            sel = slice(int(rows[0]), int(rows[-1]) + 1) if rows[-1] - rows[0] + 1 == len(rows) else rows
            backend.write("done", sel, np.ones(len(rows), dtype=bool))
        self.refresh()

    def append(
        self, params: Any, hparams: Mapping[str, Sequence] | None = None, metrics: Mapping[str, Any] | None = None
    ) -> np.ndarray:
        """Add members at the end, write them and mark them done; returns their storage rows."""
        n = len(params)
        start = self.capacity
        self.reserve(start + n)
        rows = np.arange(start, start + n)
        try:
            self.write(rows, params, hparams, metrics)
        except BaseException:
            self._shrink(start)
            raise
        self.mark_done(rows)
        return rows

    def _shrink(self, capacity: int) -> None:
        """Undo a reserve() whose write was refused (rows were never marked done)."""
        for name in ["params", *self._column_arrays()]:
            self.backend.resize(name, capacity)
        self.capacity = capacity

    def update_attrs(self, **values: Any) -> None:
        """Change top-level attributes (e.g. ``source`` after an import)."""
        attrs = self.backend.attrs() | values
        self._writable().set_attrs(attrs)
        self._load_attrs(attrs)

    # ------------------------------------------------------------ numerics
    @property
    def numerics(self) -> NumericPath | None:
        """The numeric path that trained the members (None for imported zoos)."""
        data = self.attrs.get("numerics")
        return NumericPath.from_dict(data) if data else None

    # ------------------------------------------------------------ raw blocks (copies and conversions)
    def array_names(self) -> list[str]:
        """Every array: params, done, then the hyperparameter and metric columns."""
        columns = [f"hparams/{k}" for k in self.hparam_names] + [f"metrics/{k}" for k in self.metric_names]
        return ["params", "done", *columns, *([BASE] if self.fine_tuned else [])]

    def blocks(self, name: str) -> Iterator[tuple[int, int]]:
        """Row ranges of whole chunks of ``name``, about ``CHUNK_BYTES`` each, covering all rows."""
        rows, *tail = self.backend.shape(name)
        chunk = self.backend.chunk_rows(name)
        chunk_bytes = chunk * 8 * math.prod(tail)  # 8 bytes a value bounds every column dtype
        step = chunk * max(1, CHUNK_BYTES // chunk_bytes)
        for start in range(0, rows, step):
            yield start, min(start + step, rows)

    def read_block(self, name: str, start: int, stop: int) -> np.ndarray:
        """Storage rows ``start:stop`` of array ``name``, done or not. A lost chunk holding done
        members (it would read as fill values) or a damaged one is a StoreError, never data."""
        check_present(self, name, start, stop)
        return self.backend.read(name, slice(start, stop))  # a checksum failure raises StoreError

    def write_block(self, name: str, start: int, values: np.ndarray) -> None:
        """Write raw storage rows of array ``name`` (a copy of another store's block)."""
        self._writable().write(name, slice(start, start + len(values)), values)

    # ------------------------------------------------------------ files
    @property
    def backend_name(self) -> str:
        return self._backend_cls.name

    def files(self) -> list[Path]:
        """Every file of the store (the Hub uploads and checks these)."""
        return self.backend.files()

    def largest_folder(self) -> int:
        """Entries in the store's fullest folder (0 for a single-file store)."""
        return self.backend.largest_folder()

    def sharded_copy(self, out: str | os.PathLike, max_entries: int) -> Path:
        """A copy at ``out`` that reads the same, with at most ``max_entries`` entries per folder."""
        return self.backend.sharded_copy(Path(out), max_entries)

    # ------------------------------------------------------------ integrity
    def verify(self) -> VerifyReport:
        """Read every chunk, checking its checksum; report damaged members by index."""
        return verify(self)

    def size_on_disk(self) -> int:
        return self.backend.size_on_disk()

    def summary(self) -> dict[str, Any]:
        """What ``weightzoo zoo info`` prints."""
        return summarize(self)
