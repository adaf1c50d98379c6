"""ZooStore: a zoo of trained networks on disk, one API over Zarr and HDF5.

Layout (HDF5 mirrors it with datasets)::

    attrs        format, version, ParamLayout, PermutationSpec, architecture, ZooSpec, epochs
    params       float32 [N, E, P]   chunked along N, a checksum per chunk
    done         bool [N]            written last for a member: the resume/consistency marker
    hparams/<k>  [N]                 numbers or strings
    metrics/<k>  float32 [N, E]

Public member indices run over the members marked done (``store.members`` maps them to
storage rows), so a reader opened while a writer appends sees only finished members.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import json
import os
import shutil
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from ..errors import SpecError, StoreError
from ..layout import ParamLayout, PermutationSpec
from . import archs
from .backends import Backend, backend_for

FORMAT = "weightzoo"
FORMAT_VERSION = 1
CHUNK_BYTES = 4 << 20  # target size of one params chunk: zarr pays ~1 ms per chunk read


def open_zoo(path: str | os.PathLike, mode: str = "r") -> ZooStore:
    """Open a zoo (``.zarr`` directory or ``.h5``/``.hdf5`` file); ``mode`` is ``"r"`` or ``"a"``.

    ``hf://datasets/USER/REPO[@REVISION]`` pulls a pushed zoo into the Hugging Face cache (checked
    against its manifest) and opens it read-only.
    """
    if str(path).startswith("hf://"):
        if mode != "r":
            raise StoreError(f"{path}: a zoo on the Hub opens read-only; pull it with --out to append to it")
        from .hub import open_hub_zoo

        return open_hub_zoo(str(path))
    return ZooStore(path, mode)


def _versions() -> dict[str, str]:
    import h5py
    import zarr

    from .. import __version__

    return {
        "weightzoo": __version__,
        "torch": torch.__version__,
        "zarr": zarr.__version__,
        "h5py": h5py.__version__,
        "numpy": np.__version__,
    }


@dataclass
class VerifyReport:
    """What ``ZooStore.verify`` found: damaged member indices (public) and one line per problem."""

    checked_chunks: int = 0
    damaged_rows: list[int] = field(default_factory=list)
    damaged_members: list[int] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems


class ZooStore:
    """A zoo on disk. Create with :meth:`create`, open with :func:`open_zoo`."""

    def __init__(self, path: str | os.PathLike, mode: str = "r") -> None:
        if mode not in ("r", "a"):
            raise ValueError(f"mode must be 'r' or 'a', got {mode!r}")
        self.path = Path(path)
        self.mode = mode
        self._backend_cls = backend_for(self.path)
        if not self.path.exists():
            raise StoreError(f"{self.path}: no such zoo; build or import one first (weightzoo zoo import/build)")
        self._backend: Backend | None = None
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
    ) -> ZooStore:
        """Create an empty zoo for networks of ``layout`` and open it for appending.

        ``architecture`` (a layer list, see :mod:`weightzoo.zoo.archs`) lets ``model(i)``
        rebuild members; ``arch_overrides`` names hparam columns that change it per member
        (``"activation"``). The PermutationSpec is derived from the architecture if not given.
        With ``mixed_layouts`` members differ in shape (per-member architecture arguments such
        as width): ``layout`` is the largest member's, each row holds its member's own flat
        vector zero-padded to that size, and :meth:`member_layout` gives each member's layout.
        Params are chunked along members (``chunk_members``, default ~4 MiB per chunk, fewer
        when ``expected_members`` says the zoo is smaller); ``capacity`` reserves rows.
        """
        path = Path(path)
        backend_cls = backend_for(path)
        if path.exists():
            if not overwrite:
                raise StoreError(f"{path}: already exists; choose another path or pass overwrite=True (--overwrite)")
            _remove(path)
        epochs = [int(e) for e in epochs]
        if not epochs or sorted(set(epochs)) != epochs:
            raise SpecError(f"{path}: checkpoint epochs must be a non-empty increasing list, got {epochs}")
        if perm_spec is None and architecture is not None:
            try:
                perm_spec = PermutationSpec.from_module(archs.build_module(architecture))
            except SpecError:
                perm_spec = None  # architectures without a derivable spec still store fine
            if mixed_layouts:
                perm_spec = None  # no zoo-wide spec; see member_perm_spec(i)
            elif perm_spec is not None and "activation" in arch_overrides:
                # members differ in activation: only what every member allows is zoo-wide
                perm_spec = perm_spec.restricted_to(("permute",))
        attrs = {
            "format": FORMAT,
            "format_version": FORMAT_VERSION,
            "layout": layout.to_dict(),
            "permutation_spec": perm_spec.to_dict() if perm_spec is not None else None,
            "architecture": dict(architecture) if architecture is not None else None,
            "arch_overrides": list(arch_overrides),
            "mixed_layouts": bool(mixed_layouts),
            "spec": dict(spec) if spec is not None else None,
            "epochs": epochs,
            "source": dict(source) if source is not None else None,
            "versions": _versions(),
            "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        }
        per_member = max(1, len(epochs) * layout.size * 4)
        chunk = chunk_members or int(np.clip(CHUNK_BYTES // per_member, 1, 65536))
        if expected_members and not chunk_members:
            chunk = min(chunk, max(1, int(expected_members)))  # a small zoo is one unpadded chunk
        path.parent.mkdir(parents=True, exist_ok=True)
        backend_cls.create(path, attrs, (0, len(epochs), layout.size), chunk).close()
        store = cls(path, "a")
        store.reserve(int(capacity))
        return store

    def _load_attrs(self, attrs: dict) -> None:
        self.attrs = attrs
        self.layout = ParamLayout.from_dict(attrs["layout"])
        ps = attrs.get("permutation_spec")
        self.perm_spec = PermutationSpec.from_dict(ps) if ps else None
        self.architecture: dict | None = attrs.get("architecture")
        self.epochs: list[int] = list(attrs["epochs"])
        self._member_layouts: dict[str, ParamLayout] = {}

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
        return state

    def close(self) -> None:
        if self._backend is not None:
            self._backend.close()
            self._backend = None

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
        rows = self.rows(indices)
        if epoch is None:
            return torch.from_numpy(np.ascontiguousarray(self._read_rows("params", rows)))
        return torch.from_numpy(np.ascontiguousarray(self._read_rows("params", rows, self.epoch_index(epoch))))

    def state_dict(self, i: int, epoch: int = -1) -> dict[str, torch.Tensor]:
        """The state_dict of member ``i`` at a checkpoint (float tensors of the layout)."""
        return {k: v.clone() for k, v in self.unflatten_member(i, self.params(int(i), epoch)).items()}

    @property
    def mixed(self) -> bool:
        """Whether members differ in parameter shapes (see ``create(mixed_layouts=True)``)."""
        return bool(self.attrs.get("mixed_layouts"))

    def member_layout(self, i: int) -> ParamLayout:
        """The ParamLayout of member ``i`` (the zoo's layout unless the zoo is mixed)."""
        if not self.mixed:
            return self.layout
        arch = self.member_architecture(i)
        key = json.dumps(arch, sort_keys=True)
        if key not in self._member_layouts:
            self._member_layouts[key] = ParamLayout.from_module(archs.build_module(arch))
        return self._member_layouts[key]

    def architecture_groups(self, indices: Any = None) -> tuple[list[ParamLayout], list[PermutationSpec], np.ndarray]:
        """Distinct ``(layout, spec)`` pairs among members and each member's pair index.

        Reads every per-member architecture column once (not once per member). A zoo that is not
        mixed has one pair: its layout and permutation spec.
        """
        idx = np.arange(len(self)) if indices is None else np.asarray(indices, dtype=np.int64).reshape(-1)
        if not self.mixed:
            return [self.layout], [self.perm_spec], np.zeros(len(idx), dtype=np.int64)
        names = list(self.attrs.get("arch_overrides", []))
        columns = [self.column(k, idx) for k in names]
        seen: dict[tuple, int] = {}
        layouts, specs, ids = [], [], np.empty(len(idx), dtype=np.int64)
        for row, values in enumerate(zip(*columns)):  # a mixed zoo has at least one such column
            key = tuple(_override_value(v) for v in values)
            if key not in seen:
                seen[key] = len(layouts)
                module = archs.build_module(archs.with_overrides(self.architecture, **dict(zip(names, key))))
                layouts.append(ParamLayout.from_module(module))
                specs.append(PermutationSpec.from_module(module))
            ids[row] = seen[key]
        return layouts, specs, ids

    def unflatten_member(self, i: int, flat: torch.Tensor) -> dict[str, torch.Tensor]:
        """Member ``i``'s stored row ``[..., P]`` as named tensors of its own layout."""
        layout = self.member_layout(i)
        return layout.unflatten(flat[..., : layout.size])

    def member_architecture(self, i: int) -> dict:
        """The architecture of member ``i``, with its per-member overrides (e.g. activation)."""
        if self.architecture is None:
            raise StoreError(
                f"{self.path}: the zoo stores no architecture, so members cannot be rebuilt; use state_dict(i)"
            )
        overrides = {k: _override_value(self.column(k, [i])[0]) for k in self.attrs.get("arch_overrides", [])}
        return archs.with_overrides(self.architecture, **overrides)

    def member_perm_spec(self, i: int) -> PermutationSpec:
        """The PermutationSpec of member ``i``, with the symmetries its own activation allows."""
        return PermutationSpec.from_module(archs.build_module(self.member_architecture(i)))

    def model(self, i: int, epoch: int = -1) -> nn.Module:
        """Rebuild member ``i`` as an ``nn.Module`` (eval mode) with its stored parameters."""
        module = archs.build_module(self.member_architecture(i))
        missing, unexpected = module.load_state_dict(self.state_dict(i, epoch), strict=False)
        float_missing = [k for k in missing if torch.is_floating_point(module.state_dict()[k])]
        if float_missing or unexpected:
            raise StoreError(
                f"{self.path}: stored layout does not match the stored architecture "
                f"(missing {float_missing}, unexpected {unexpected})"
            )
        return module.eval()

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
        written, so bad input leaves the store as it was."""
        backend = self._writable()
        rows = np.asarray(list(rows), dtype=np.int64)
        n, E, P = len(rows), len(self.epochs), self.layout.size
        arr = _as_float32(params, f"{self.path}: params")
        if arr.ndim == 2 and E == 1:
            arr = arr[:, None, :]
        if arr.shape != (n, E, P):
            raise StoreError(f"{self.path}: params for {n} members must have shape {(n, E, P)}, got {arr.shape}")
        if n and (rows.min() < 0 or rows.max() >= self.capacity):
            raise StoreError(f"{self.path}: rows out of range; reserve({rows.max() + 1}) first")
        if len(np.unique(rows)) != n:
            raise StoreError(f"{self.path}: rows {rows.tolist()} repeat a row; write each member once")
        for k in [*(hparams or {}), *(metrics or {})]:
            _check_column_name(self.path, k)
        columns = {
            f"hparams/{k}": _column_values(
                f"{self.path}: hyperparameter {k!r}", v, n, self._column_kind(f"hparams/{k}")
            )
            for k, v in (hparams or {}).items()
        }
        for k, v in (metrics or {}).items():
            m = _as_float32(v, f"{self.path}: metric {k!r}")
            m = m.reshape(n, 1) if m.shape == (n,) and E == 1 else m
            if m.shape != (n, E):
                raise StoreError(f"{self.path}: metric {k!r} must have shape {(n, E)}, got {m.shape}")
            columns[f"metrics/{k}"] = m
        order = np.argsort(rows)
        rows, arr = rows[order], arr[order]
        for name, values in columns.items():
            if name not in {f"hparams/{k}" for k in self.hparam_names} | {f"metrics/{k}" for k in self.metric_names}:
                dtype = str if values.dtype == object else values.dtype
                backend.create_column(name, dtype, values.shape[1:], self.capacity)
            columns[name] = values[order]
        sel = slice(int(rows[0]), int(rows[-1]) + 1) if n and rows[-1] - rows[0] + 1 == n else rows
        if n:
            backend.write("params", sel, arr)
            for name, values in columns.items():
                backend.write(name, sel, values)

    def _column_kind(self, name: str) -> str | None:
        group, key = name.split("/", 1)
        if key not in self.backend.names(group):
            return None
        sample = self.backend.read(name, slice(0, 0))
        return "str" if sample.dtype == object else np.dtype(sample.dtype).kind

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

    # ------------------------------------------------------------ integrity
    def verify(self) -> VerifyReport:
        """Read every chunk, checking its checksum; report damaged members by index."""
        report = VerifyReport()
        backend = self.backend
        done_rows = set(self.members.tolist())
        names = ["params", *(f"hparams/{k}" for k in self.hparam_names), *(f"metrics/{k}" for k in self.metric_names)]
        bad_rows: set[int] = set()
        for name in ["done", *names]:
            for start, stop, err in backend.read_chunks(name):
                report.checked_chunks += 1
                if err is None:
                    continue
                hit = sorted(done_rows.intersection(range(start, stop)))
                if name == "done" or hit:
                    report.problems.append(f"{name} rows {start}..{stop - 1}: {err}")
                    bad_rows.update(range(start, stop) if name == "done" else hit)
        report.damaged_rows = sorted(bad_rows)
        report.damaged_members = np.flatnonzero(np.isin(self.members, report.damaged_rows)).tolist()
        return report

    def size_on_disk(self) -> int:
        return self.backend.size_on_disk()

    def summary(self) -> dict[str, Any]:
        """What ``weightzoo zoo info`` prints."""
        arch = self.architecture or {}
        quantiles = {}
        for name in self.metric_names:
            values = self.metric(name).astype(np.float64)
            values = values[np.isfinite(values)]
            if len(values):
                quantiles[name] = {
                    q: float(np.quantile(values, p))
                    for q, p in (("min", 0), ("q25", 0.25), ("median", 0.5), ("q75", 0.75), ("max", 1))
                }
        return {
            "path": str(self.path),
            "backend": self._backend_cls.__name__.replace("Backend", "").lower(),
            "members_done": len(self),
            "members_total": self.capacity,
            "architecture": arch.get("family", "custom" if arch else "unknown"),
            "params_per_member": self.layout.size,
            "mixed_layouts": self.mixed,
            "checkpoint_epochs": self.epochs,
            "hparams": self.hparam_names,
            "size_on_disk_bytes": self.size_on_disk(),
            "metric_quantiles": quantiles,
        }


BACKEND_SUFFIXES = {"zarr": ".zarr", "hdf5": ".h5", "h5": ".h5"}


def resolve_store_path(out: str | os.PathLike, backend: str | None = None) -> Path:
    """The store path: ``out`` itself, or ``out`` plus the suffix of an explicitly named backend."""
    out = Path(out)
    if backend is None:
        return out
    suffix = BACKEND_SUFFIXES.get(backend.lower())
    if suffix is None:
        raise StoreError(f"unknown backend {backend!r}; valid: 'zarr', 'hdf5'")
    have = out.suffix.lower()
    if have in (".zarr", ".h5", ".hdf5"):
        if (have == ".zarr") != (suffix == ".zarr"):
            raise StoreError(f"{out}: suffix {have!r} contradicts backend {backend!r}; drop one of them")
        return out
    return out.with_name(out.name + suffix)


@contextlib.contextmanager
def staged_path(path: str | os.PathLike, overwrite: bool = False):
    """Yield a hidden temporary path beside ``path`` to write a new store into; move it into
    place only if the block succeeds, so a failed import or conversion leaves ``path`` as it was."""
    path = Path(path)
    backend_for(path)  # refuse an unknown suffix before doing any work
    if path.exists() and not overwrite:
        raise StoreError(f"{path}: already exists; choose another path or pass --overwrite")
    tmp = path.with_name(f".{path.stem}.partial{path.suffix}")
    if tmp.exists():
        _remove(tmp)
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        yield tmp
    except BaseException:
        if tmp.exists():
            _remove(tmp)
        raise
    if path.exists():
        _remove(path)
    os.replace(tmp, path)


def _human_bytes(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.1f} {unit}" if unit != "B" else f"{int(n)} B"
        n /= 1024
    return f"{n:.1f} TiB"


def format_summary(s: dict) -> str:
    """A ``summary()`` as the aligned text ``weightzoo zoo info`` prints."""
    lines = [
        f"zoo            {s['path']} ({s['backend']})",
        f"members        {s['members_done']:,} done / {s['members_total']:,} total",
        f"architecture   {s['architecture']}",
        f"parameters     {'up to ' if s.get('mixed_layouts') else ''}{s['params_per_member']:,} per member",
        f"checkpoints    epochs {s['checkpoint_epochs']}",
        f"size on disk   {_human_bytes(s['size_on_disk_bytes'])}",
        f"hparams        {', '.join(s['hparams']) or '-'}",
    ]
    if s["metric_quantiles"]:
        lines.append(f"{'metric (last checkpoint)':<26}{'min':>11}{'q25':>11}{'median':>11}{'q75':>11}{'max':>11}")
        for name, q in s["metric_quantiles"].items():
            lines.append(f"  {name:<24}" + "".join(f"{q[k]:>11.4g}" for k in ("min", "q25", "median", "q75", "max")))
    return "\n".join(lines)


def _remove(path: Path) -> None:
    if path.is_dir():
        shutil.rmtree(path)
    else:
        path.unlink()


def _override_value(value: Any) -> Any:
    """A stored per-member architecture argument as the family takes it. String columns hold a
    None grid value (e.g. ``norm: [null, layernorm]``) as the text "None"; no family argument
    takes that text, so it is read back as None."""
    value = _python_scalar(value)
    return None if value == "None" else value


def _python_scalar(value: Any) -> Any:
    """A numpy scalar as the plain Python value an architecture description holds."""
    return value.item() if isinstance(value, np.generic) else value


def _as_numpy(values: Any) -> np.ndarray:
    if isinstance(values, torch.Tensor):
        return values.detach().cpu().numpy()
    return np.asarray(values)


def _as_float32(values: Any, label: str) -> np.ndarray:
    """Numbers as a float32 array; anything else is a StoreError naming ``label``."""
    try:
        return _as_numpy(values).astype(np.float32, copy=False)
    except (TypeError, ValueError) as exc:
        raise StoreError(f"{label}: expected numbers ({exc})") from None


def _check_column_name(path: Path, name: Any) -> None:
    """Column names become array names: a non-empty string without '/'."""
    if not isinstance(name, str) or not name or "/" in name:
        raise StoreError(f"{path}: column name {name!r} must be a non-empty string without '/'")


def _column_values(name: str, values: Sequence, n: int, existing_kind: str | None) -> np.ndarray:
    """A hyperparameter column as numpy: bool, int64, float64 or object (str); ``name`` labels errors."""
    arr = _as_numpy(values)
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
