"""External zoo formats -> ZooStore.

Each format has one planner that reads the source's metadata and returns an :class:`_ImportPlan`:
the canonical ParamLayout (names of the rebuilt ``nn.Sequential``), the architecture if it can be
known, the checkpoint epochs and one :class:`_Candidate` per source member with a loader for its
parameters. One writer turns any plan into a store, inside :func:`~weightzoo.zoo.store.staged_path`
so a failed import leaves ``out`` as it was. Incomplete or broken members are skipped and listed
in the report; malformed inputs raise a one-line :class:`~weightzoo.errors.WeightZooError`.

Formats:

- ``smallcnnzoo``: Unterthiner et al. 2020, "Predicting Neural Network Accuracy from Weights"
  (``weights.npy``, ``metrics.csv.gz``, ``layout.csv``; TensorFlow axis order).
- ``modelzoo``: Schürholt et al. 2022, "Model Zoos" (one Ray Tune trial folder per model with
  ``params.json``, ``result.json`` and ``checkpoint_<epoch>/checkpoints``).
- ``inr-folder``: DWSNets / nfn style SIREN datasets (``<root>/<class>/*.pth``, optional
  ``splits.json``).
- ``state-dicts``: any folder of ``.safetensors`` / ``.pt`` / ``.pth`` state_dicts.
"""

from __future__ import annotations

import ast
import collections
import functools
import itertools
import json
import math
import numbers
import os
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..errors import ImportFormatError, StoreError
from ..layout import ParamLayout
from . import archs
from .store import ZooStore, resolve_store_path, staged_path

FORMATS = ("smallcnnzoo", "modelzoo", "inr-folder", "state-dicts")
BATCH_MEMBERS = 256  # members written per append
STATE_DICT_SUFFIXES = (".safetensors", ".pt", ".pth")
SIREN_W0 = 30.0

# Activation spellings of Keras, the Model Zoos code and others -> weightzoo names.
_ACTIVATION_ALIASES = {
    "leakyrelu": "leaky_relu",
    "linear": "identity",
    "none": "identity",
    "swish": "silu",
    "sin": "sine",
    "siren": "sine",
}


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


class _Skip(Exception):
    """A source member cannot be imported; the message says why (it goes into the report)."""


@dataclass
class _Candidate:
    """One source member before its parameters are read: name, hparams, metrics ``[E]`` and a
    loader returning its parameters ``[E, P]`` in canonical order (or raising ``_Skip``)."""

    name: str
    hparams: dict[str, Any]
    metrics: dict[str, np.ndarray]
    load: Callable[[], np.ndarray]


@dataclass
class _ImportPlan:
    """Everything the writer needs: layout, architecture, epochs, members and provenance."""

    layout: ParamLayout
    architecture: dict | None
    epochs: list[int]
    candidates: list[_Candidate]
    source: dict[str, Any]
    skipped: list[str] = field(default_factory=list)
    arch_overrides: tuple[str, ...] = ()


# ---------------------------------------------------------------------------------- public API


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
    plan = _PLANNERS[fmt](src)
    plan.source = {"format": fmt, "path": str(src.resolve()), **plan.source}
    imported, skipped = _write_zoo(plan, out, overwrite=overwrite, progress=progress, desc=f"import {fmt}")
    return ImportReport(fmt, str(src), str(out), imported, skipped)


# ------------------------------------------------------------------------------------- writer


def _write_zoo(plan: _ImportPlan, out: Path, *, overwrite: bool, progress: bool, desc: str) -> tuple[int, list[str]]:
    """Stream the plan's members into a new store at ``out``; return (imported, skipped)."""
    from tqdm import tqdm

    kinds = _column_kinds([c.hparams for c in plan.candidates])
    metric_names = _ordered_union(c.metrics for c in plan.candidates)
    skipped, imported = list(plan.skipped), 0
    with staged_path(out, overwrite) as tmp:
        store = ZooStore.create(
            tmp,
            plan.layout,
            architecture=plan.architecture,
            epochs=plan.epochs,
            arch_overrides=plan.arch_overrides,
            source=plan.source,
            expected_members=len(plan.candidates),
        )
        try:
            batch: list[tuple[_Candidate, np.ndarray]] = []
            for cand in tqdm(plan.candidates, desc=desc, unit="member", disable=not progress):
                try:
                    batch.append((cand, cand.load()))
                except _Skip as exc:
                    skipped.append(f"{cand.name}: {exc}")
                if len(batch) >= BATCH_MEMBERS:
                    imported += _flush(store, batch, kinds, metric_names)
                    batch = []
            imported += _flush(store, batch, kinds, metric_names)
            if imported == 0:
                first = f"; first reason: {skipped[0]}" if skipped else ""
                raise ImportFormatError(f"{plan.source['path']}: no member could be imported{first}")
            store.update_attrs(source={**plan.source, "imported": imported, "skipped": skipped})
        finally:
            store.close()
    return imported, skipped


def _flush(
    store: ZooStore, batch: list[tuple[_Candidate, np.ndarray]], kinds: Mapping[str, str], metric_names: Sequence[str]
) -> int:
    """Append a batch of loaded members with their hparams and metrics; return how many."""
    if not batch:
        return 0
    n_epochs = len(store.epochs)
    params = np.stack([p for _, p in batch])
    hparams = {k: [_encode(c.hparams.get(k), kind) for c, _ in batch] for k, kind in kinds.items()}
    missing = np.full(n_epochs, np.nan, dtype=np.float32)
    metrics = {m: np.stack([c.metrics.get(m, missing) for c, _ in batch]) for m in metric_names}
    store.append(params, hparams=hparams, metrics=metrics)
    return len(batch)


def _ordered_union(dicts: Iterable[Mapping[str, Any]]) -> list[str]:
    """Keys of all mappings, in order of first appearance."""
    seen: dict[str, None] = {}
    for d in dicts:
        seen.update(dict.fromkeys(d))
    return list(seen)


def _is_missing(v: Any) -> bool:
    return v is None or (isinstance(v, float | np.floating) and math.isnan(v))


def _column_kinds(records: Sequence[Mapping[str, Any]]) -> dict[str, str]:
    """One storage kind per hyperparameter (``b``ool, ``i``nt, ``f``loat, ``s``tr) such that
    every member fits: missing numbers become NaN floats, anything mixed becomes strings."""
    kinds: dict[str, str] = {}
    for key in _ordered_union(records):
        values = [r.get(key) for r in records]
        present = [v for v in values if not _is_missing(v)]
        complete = len(present) == len(values)
        if not present:
            continue  # nothing to store
        if all(isinstance(v, bool | np.bool_) for v in present):
            kinds[key] = "b" if complete else "s"
        elif all(isinstance(v, numbers.Integral) and not isinstance(v, bool) for v in present) and complete:
            kinds[key] = "i"
        elif all(isinstance(v, numbers.Real) and not isinstance(v, bool | np.bool_) for v in present):
            kinds[key] = "f"
        else:
            kinds[key] = "s"
    return kinds


def _encode(value: Any, kind: str) -> Any:
    """A hyperparameter value as its column's kind (missing -> NaN or empty string)."""
    if kind == "s":
        return "" if _is_missing(value) else str(value)
    if kind == "f":
        return math.nan if _is_missing(value) else float(value)
    return bool(value) if kind == "b" else int(value)


# ---------------------------------------------------------------------- state_dict helpers


def _oneline(exc: BaseException) -> str:
    """An exception as one short line (library messages can span many)."""
    text = " ".join(str(exc).split()) or type(exc).__name__
    return text if len(text) <= 160 else text[:157] + "..."


def _read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    """The float tensors of a state_dict file, read without unpickling code; raises ``_Skip``."""
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            obj = _module_order(load_file(str(path)))
        else:
            obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - any failure to read means: skip this file
        raise _Skip(f"unreadable ({_oneline(exc)})") from None
    sd = _unwrap_state_dict(obj)
    if sd is None:
        raise _Skip(f"not a state_dict (holds a {type(obj).__name__})")
    floats = {k: v for k, v in sd.items() if torch.is_floating_point(v)}
    if not floats:
        raise _Skip("holds no float tensors")
    return floats


_LEAF_RANK = {"weight": 0, "bias": 1}


def _module_order(sd: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Tensors in module order: safetensors files do not keep the state_dict's key order, so
    sort by module path (numbers numerically) and put each module's weight before its bias."""

    def key(name: str):
        prefix, _, leaf = name.rpartition(".")
        parts = tuple((0, int(p), "") if p.isdigit() else (1, 0, p) for p in prefix.split(".")) if prefix else ()
        return parts, _LEAF_RANK.get(leaf, 2), leaf

    return {k: sd[k] for k in sorted(sd, key=key)}


def _unwrap_state_dict(obj: Any) -> Mapping[str, torch.Tensor] | None:
    """The tensor mapping in ``obj``: itself, or under ``state_dict``/``model_state_dict``/``model``."""
    if isinstance(obj, Mapping) and obj and all(isinstance(v, torch.Tensor) for v in obj.values()):
        return obj
    if isinstance(obj, Mapping):
        for key in ("state_dict", "model_state_dict", "model"):
            inner = obj.get(key)
            if isinstance(inner, Mapping) and inner and all(isinstance(v, torch.Tensor) for v in inner.values()):
                return inner
    return None


@dataclass
class _Reference:
    """The parameter names and shapes every member must share, from the first readable file."""

    path: str
    names: list[str]
    shapes: list[tuple[int, ...]]

    @classmethod
    def of(cls, path: Path, sd: Mapping[str, torch.Tensor]) -> _Reference:
        return cls(str(path), list(sd), [tuple(t.shape) for t in sd.values()])

    def flat(self, sd: Mapping[str, torch.Tensor]) -> np.ndarray:
        """The tensors of ``sd`` in reference order as one float32 vector; ``_Skip`` if they differ."""
        problem = self.difference(sd)
        if problem:
            raise _Skip(f"parameters differ from {self.path}: {problem}")
        return np.concatenate([sd[n].detach().to(torch.float32).reshape(-1).numpy() for n in self.names])

    def difference(self, sd: Mapping[str, torch.Tensor]) -> str | None:
        """The first key or shape in which ``sd`` differs from the reference, or None."""
        for name, shape in zip(self.names, self.shapes):
            if name not in sd:
                return f"missing {name!r}"
            if tuple(sd[name].shape) != shape:
                return f"{name!r} has shape {tuple(sd[name].shape)}, expected {shape}"
        extra = [k for k in sd if k not in set(self.names)]
        return f"unexpected {extra[0]!r}" if extra else None


def _find_reference(paths: Sequence[Path]) -> tuple[_Reference, dict[str, torch.Tensor]]:
    """The first readable state_dict among ``paths`` (unreadable ones are skipped later)."""
    first_error = None
    for path in paths:
        try:
            sd = _read_state_dict(path)
        except _Skip as exc:
            first_error = first_error or f"{path}: {exc}"
            continue
        return _Reference.of(path, sd), sd
    raise ImportFormatError(f"no readable state_dict among {len(paths)} files; first problem: {first_error}")


def _load_checkpoints(paths: Sequence[Path], ref: _Reference) -> np.ndarray:
    """Parameters ``[E, P]`` of one member from its checkpoint files, one per epoch."""
    rows = []
    for path in paths:
        try:
            rows.append(ref.flat(_read_state_dict(path)))
        except _Skip as exc:
            where = f"{path.parent.name}/{path.name}: " if len(paths) > 1 else ""
            raise _Skip(f"{where}{exc}") from None
    return np.stack(rows)


def _dense_chain(shapes: Sequence[tuple[int, ...]]) -> list[tuple[tuple[int, ...], bool]] | None:
    """``(weight shape, has bias)`` per layer if the tensors are weights each optionally followed by
    its bias; None if anything else (norms, buffers, embeddings) is present."""
    layers: list[tuple[tuple[int, ...], bool]] = []
    for shape in shapes:
        if len(shape) >= 2:
            layers.append((shape, False))
        elif len(shape) == 1 and layers and not layers[-1][1] and layers[-1][0][0] == shape[0]:
            layers[-1] = (layers[-1][0], True)
        else:
            return None
    return layers or None


def _infer_architecture(shapes: Sequence[tuple[int, ...]], activation: str) -> dict | None:
    """A conv/linear chain with exactly these parameter shapes, or None if it cannot be known.

    Convolutions are followed by global average pooling when the first linear layer reads one
    value per channel; a larger fan-in means a flattened feature map of unknown spatial size, so
    no architecture is returned. Stride 1 and no padding are assumed (a state_dict has neither).
    """
    chain = _dense_chain(shapes)
    if chain is None:
        return None
    layers: list[dict] = []
    prev_out, conv_dim, seen_linear = None, 0, False
    for i, (w, bias) in enumerate(chain):
        last = i == len(chain) - 1
        if prev_out is not None and w[1] != prev_out:
            return None  # includes a flattened feature map: its spatial size is unknown
        if len(w) in (3, 4):
            if seen_linear or last:
                return None
            conv_dim = len(w) - 2
            kernel = w[2] if len(set(w[2:])) == 1 else list(w[2:])
            layers += [
                {"type": f"conv{conv_dim}d", "in": w[1], "out": w[0], "kernel": kernel, "bias": bias},
                {"type": "act", "name": activation},
            ]
        elif len(w) == 2:
            if conv_dim and not seen_linear:
                layers.append({"type": f"gap{conv_dim}d"})
            seen_linear = True
            layers.append({"type": "linear", "in": w[1], "out": w[0], "bias": bias})
            if not last:
                layers.append({"type": "act", "name": activation})
        else:
            return None
        prev_out = w[0]
    return {"family": "cnn" if conv_dim else "mlp", "layers": layers}


def _canonical(ref: _Reference, *architectures: dict | None) -> tuple[ParamLayout, dict | None, dict[str, str]]:
    """Layout, architecture and ``{stored name: source name}`` for members shaped like ``ref``.

    With the first architecture whose parameters match the reference in order, names are those of
    the rebuilt ``nn.Sequential``; otherwise the source names are kept and no architecture is stored.
    """
    for architecture in architectures:
        if architecture is None:
            continue
        layout = ParamLayout.from_module(archs.build_module(architecture))
        if [e.shape for e in layout] == ref.shapes:
            return layout, architecture, dict(zip(layout.names, ref.names))
    return _plain_layout(ref), None, {n: n for n in ref.names}


def _plain_layout(ref: _Reference) -> ParamLayout:
    """A layout under the source names: tensors of 2+ dims are weights, a following matching
    1-D tensor their bias, anything else ``other``."""
    items, layer = [], -1
    prev: tuple[int, ...] | None = None
    for name, shape in zip(ref.names, ref.shapes):
        if len(shape) >= 2:
            layer += 1
            role = "weight"
        elif len(shape) == 1 and prev is not None and len(prev) >= 2 and prev[0] == shape[0]:
            role = "bias"
        else:
            role = "other"
        items.append((name, shape, role, max(layer, 0)))
        prev = shape
    return ParamLayout.from_shapes(items)


def _activation_name(raw: Any) -> str | None:
    """The weightzoo name of an activation spelled ``raw`` (Keras, Model Zoos, ...), or None."""
    if raw is None:
        return None
    name = str(raw).strip().lower()
    name = _ACTIVATION_ALIASES.get(name, name)
    return name if name in archs.ACTIVATIONS else None


def _column_name(key: str) -> str:
    """A hyperparameter key as a store column name (``model::nlin`` -> ``model.nlin``)."""
    return re.sub(r"[^0-9A-Za-z_.=+-]+", ".", key).strip(".") or "_"


def _flatten_hparams(data: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """Scalar entries of a nested mapping under dotted column names; lists become JSON text."""
    out: dict[str, Any] = {}
    for key, value in data.items():
        name = _column_name(f"{prefix}{key}")
        if isinstance(value, Mapping):
            out.update(_flatten_hparams(value, f"{name}."))
        elif isinstance(value, bool | int | float | str):
            out[name] = value
        elif isinstance(value, list | tuple):
            out[name] = json.dumps(value, default=str)
        elif value is not None:
            out[name] = str(value)
    return out


# -------------------------------------------------------------------------- smallcnnzoo

_SCZ_FILES = ("weights.npy", "metrics.csv.gz", "layout.csv")
_TF_CONV_TO_TORCH = (3, 2, 0, 1)  # (kh, kw, in, out) -> (out, in, kh, kw)


@dataclass
class _TFVariable:
    """One row of ``layout.csv``: a TensorFlow variable's span in the flat weight rows."""

    name: str
    start: int
    stop: int
    shape: tuple[int, ...]

    @property
    def layer(self) -> str:
        return self.name.rsplit("/", 1)[0]

    @property
    def kind(self) -> str:
        leaf = self.name.rsplit("/", 1)[-1]
        return "kernel" if leaf.startswith("kernel") else "bias" if leaf.startswith("bias") else leaf


def _plan_smallcnnzoo(src: Path) -> _ImportPlan:
    """Small CNN Zoo: rows of ``weights.npy`` are checkpoints; runs are grouped from ``metrics.csv.gz``."""
    for name in _SCZ_FILES:
        if not (src / name).is_file():
            raise ImportFormatError(f"{src / name}: missing; a Small CNN Zoo folder holds {', '.join(_SCZ_FILES)}")
    variables = _read_tf_layout(src / "layout.csv")
    metrics = _read_scz_metrics(src / "metrics.csv.gz")
    weights = _read_scz_weights(
        src / "weights.npy", rows=len(metrics), cols=max(v.stop for v in variables), layout_file=src / "layout.csv"
    )
    first_kernel = next(v for v in variables if v.kind == "kernel")
    last_kernel = [v for v in variables if v.kind == "kernel"][-1]
    arch = archs.small_cnn_zoo("relu", in_channels=first_kernel.shape[2], num_classes=last_kernel.shape[-1])
    layout = ParamLayout.from_module(archs.build_module(arch))
    gather, names = _tf_gather_index(variables, layout, src / "layout.csv")
    candidates, skipped, epochs, run_key = _scz_runs(metrics, weights, gather)
    source = {
        "param_names": names,
        "run_key": run_key,
        "axis_order": "TensorFlow kernels converted: conv (kh, kw, in, out) -> (out, in, kh, kw), "
        "dense (in, out) -> (out, in)",
    }
    return _ImportPlan(layout, arch, epochs, candidates, source, skipped, arch_overrides=("activation",))


def _read_csv(path: Path):
    """A CSV (gzipped or not) as a DataFrame; an unreadable file is a one-line error."""
    import pandas as pd

    try:
        return pd.read_csv(path)
    except Exception as exc:  # noqa: BLE001
        raise ImportFormatError(
            f"{path}: unreadable CSV ({_oneline(exc)}); restore the file from the dataset archive"
        ) from None


def _read_tf_layout(path: Path) -> list[_TFVariable]:
    """Parse ``layout.csv`` (varname, start_idx, end_idx, shape) and check its spans tile the row."""
    frame = _read_csv(path)
    need = ["varname", "start_idx", "end_idx", "shape"]
    missing = [c for c in need if c not in frame.columns]
    if missing:
        raise ImportFormatError(f"{path}: missing column(s) {missing}; expected columns {need}")
    variables = []
    for i, row in enumerate(frame.itertuples(index=False)):
        variables.append(_tf_variable(path, i, row.varname, row.start_idx, row.end_idx, row.shape))
    if not variables:
        raise ImportFormatError(f"{path}: no variables listed; expected one row per TensorFlow variable")
    _check_spans(path, variables)
    return sorted(variables, key=lambda v: v.start)


def _tf_variable(path: Path, i: int, name: Any, start: Any, stop: Any, shape: Any) -> _TFVariable:
    """One checked layout row: a shape tuple whose size equals its span."""
    try:
        dims = ast.literal_eval(str(shape))
        dims = (dims,) if isinstance(dims, int) else tuple(int(d) for d in dims)
        start, stop = int(start), int(stop)
    except (ValueError, SyntaxError, TypeError):
        raise ImportFormatError(
            f"{path}: row {i} ({name}): cannot parse start_idx/end_idx/shape "
            f"({start!r}, {stop!r}, {shape!r}); shapes look like '(3, 3, 1, 16)'"
        ) from None
    if math.prod(dims) != stop - start:
        raise ImportFormatError(
            f"{path}: row {i} ({name}): shape {dims} holds {math.prod(dims)} values but "
            f"the span {start}..{stop} holds {stop - start}; fix the shape or the indices"
        )
    return _TFVariable(str(name), start, stop, dims)


def _check_spans(path: Path, variables: Sequence[_TFVariable]) -> None:
    """Spans must cover ``0..total`` without gaps or overlaps."""
    pos = 0
    for v in sorted(variables, key=lambda v: v.start):
        if v.start != pos:
            what = "overlaps the previous variable" if v.start < pos else f"leaves a gap at {pos}..{v.start}"
            raise ImportFormatError(
                f"{path}: variable {v.name} (start {v.start}) {what}; spans must tile the weight row"
            )
        pos = v.stop


def _tf_gather_index(
    variables: Sequence[_TFVariable], layout: ParamLayout, path: Path
) -> tuple[np.ndarray, dict[str, str]]:
    """Column indices that turn a TF-ordered weight row into canonical PyTorch order, and the
    ``{stored name: TF name}`` map; one gather does the split, the axis reorder and the concat."""
    layers: dict[str, dict[str, _TFVariable]] = {}
    for v in variables:
        if v.kind not in ("kernel", "bias"):
            raise ImportFormatError(
                f"{path}: variable {v.name} is neither a kernel nor a bias; only the "
                "Small CNN Zoo 'cnn' architecture (no batch norm) can be imported"
            )
        layers.setdefault(v.layer, {})[v.kind] = v
    dense = layout.dense_layers()
    if len(layers) != len(dense):
        raise ImportFormatError(
            f"{path}: {len(layers)} layers listed, the Small CNN Zoo network has {len(dense)} "
            "(3 conv + 1 dense); this is not the Small CNN Zoo 'cnn' architecture"
        )
    gather = np.empty(layout.size, dtype=np.int64)
    names: dict[str, str] = {}
    for (layer, tf), (w, b) in zip(layers.items(), dense):
        for kind, entry in (("kernel", w), ("bias", b)):
            v = tf.get(kind)
            if v is None or entry is None:
                raise ImportFormatError(f"{path}: layer {layer} has no {kind}; every layer needs a kernel and a bias")
            index = np.arange(v.start, v.stop).reshape(v.shape)
            index = _tf_to_torch(index)
            if tuple(index.shape) != entry.shape:
                raise ImportFormatError(
                    f"{path}: {v.name} has shape {v.shape} (PyTorch {tuple(index.shape)}), "
                    f"the Small CNN Zoo network expects {entry.shape} for {entry.name}"
                )
            gather[entry.offset : entry.stop] = index.reshape(-1)
            names[entry.name] = v.name
    return gather, names


def _tf_to_torch(array: np.ndarray) -> np.ndarray:
    """TensorFlow axis order to PyTorch's: conv kernels (kh, kw, in, out) and dense (in, out)."""
    if array.ndim == 4:
        return array.transpose(_TF_CONV_TO_TORCH)
    if array.ndim == 2:
        return array.T
    return array


def _read_scz_metrics(path: Path):
    """``metrics.csv.gz`` as a DataFrame with at least one row."""
    frame = _read_csv(path)
    if len(frame) == 0:
        raise ImportFormatError(f"{path}: no rows; expected one row per row of weights.npy")
    if "config.activation" not in frame.columns:
        raise ImportFormatError(f"{path}: no 'config.activation' column; it names each network's activation")
    return frame


def _read_scz_weights(path: Path, *, rows: int, cols: int, layout_file: Path) -> np.ndarray:
    """``weights.npy`` memory-mapped, checked against the metrics' row count and the layout."""
    try:
        weights = np.load(path, mmap_mode="r", allow_pickle=False)
    except Exception as exc:  # noqa: BLE001 - truncated or corrupt file
        raise ImportFormatError(
            f"{path}: unreadable or truncated ({_oneline(exc)}); re-extract it from the dataset archive"
        ) from None
    if weights.ndim != 2 or weights.dtype.kind != "f":
        raise ImportFormatError(
            f"{path}: expected a 2-D float array [checkpoints, params], got {weights.dtype} {weights.shape}"
        )
    if weights.shape[0] != rows:
        raise ImportFormatError(
            f"{path}: {weights.shape[0]} rows but metrics.csv.gz has {rows}; "
            "the files belong to different datasets or one is truncated"
        )
    if weights.shape[1] != cols:
        raise ImportFormatError(
            f"{path}: rows hold {weights.shape[1]} values but {layout_file.name} "
            f"lists {cols}; use the layout.csv of the same dataset"
        )
    return weights


def _scz_epoch_column(frame) -> str:
    """The column holding each row's checkpoint epoch (``step`` in the released files)."""
    for name in ("step", "epoch"):
        if name in frame.columns:
            return name
    raise ImportFormatError("metrics.csv.gz: no 'step' or 'epoch' column; it says which checkpoint each row is")


def _scz_run_ids(frame) -> tuple[list[str], str]:
    """A run id per row (``modeldir``, else the checkpoint path's folder, else the config)."""
    if "modeldir" in frame.columns:
        return [str(v) for v in frame["modeldir"]], "modeldir"
    first = frame.columns[0]
    paths = [str(v) for v in frame[first]]
    if str(first).startswith("Unnamed") and all("/" in p for p in paths):
        return [p.rsplit("/", 1)[0] for p in paths], "checkpoint path"
    config = [c for c in frame.columns if str(c).startswith("config.")]
    return ["|".join(map(str, row)) for row in frame[config].itertuples(index=False)], "config"


def _scz_runs(frame, weights: np.ndarray, gather: np.ndarray) -> tuple[list[_Candidate], list[str], list[int], str]:
    """Group rows into runs; complete runs become candidates, the others are skipped."""
    epoch_col = _scz_epoch_column(frame)
    run_ids, run_key = _scz_run_ids(frame)
    epochs_per_row = frame[epoch_col].to_numpy()
    epochs = sorted({int(e) for e in epochs_per_row})
    rows_of: dict[str, list[int]] = {}
    for i, run in enumerate(run_ids):
        rows_of.setdefault(run, []).append(i)
    config_cols = [c for c in frame.columns if str(c).startswith("config.")]
    skip_cols = {epoch_col, "modeldir", *config_cols}
    metric_values = {
        str(c): frame[c].to_numpy(dtype=np.float32)
        for c in frame.columns
        if c not in skip_cols and not str(c).startswith("Unnamed") and frame[c].dtype.kind in "biuf"
    }
    activations = frame["config.activation"].to_numpy()
    candidates, skipped = [], []
    for run, rows in rows_of.items():
        by_epoch = {int(epochs_per_row[r]): r for r in rows}
        problem = _scz_run_problem(by_epoch, rows, epochs)
        activation = _activation_name(activations[rows[0]])
        if problem is None and activation is None:
            problem = f"activation {activations[rows[0]]!r} has no weightzoo equivalent"
        if problem:
            skipped.append(f"run {run}: {problem}")
            continue
        ordered = np.array([by_epoch[e] for e in epochs])
        hparams = {str(c)[len("config.") :]: _scalar(frame[c].iat[rows[0]]) for c in config_cols}
        hparams["activation"] = activation
        if run_key == "modeldir":
            hparams["modeldir"] = run
        metrics = {name: values[ordered] for name, values in metric_values.items()}
        candidates.append(
            _Candidate(f"run {run}", hparams, metrics, functools.partial(_scz_params, weights, ordered, gather))
        )
    return candidates, skipped, epochs, run_key


def _scz_run_problem(by_epoch: Mapping[int, int], rows: Sequence[int], epochs: Sequence[int]) -> str | None:
    """Why a run cannot be imported (duplicate or missing checkpoints), or None."""
    if len(by_epoch) != len(rows):
        return "duplicate checkpoints for one epoch; runs must be told apart by a 'modeldir' column"
    missing = [e for e in epochs if e not in by_epoch]
    if missing:
        return f"missing checkpoints at epochs {missing} (crashed or stuck training job)"
    return None


def _scz_params(weights: np.ndarray, rows: np.ndarray, gather: np.ndarray) -> np.ndarray:
    """One run's checkpoints ``[E, P]`` in canonical order (rows read from the memory map)."""
    return np.asarray(weights[rows], dtype=np.float32)[:, gather]


def _scalar(value: Any) -> Any:
    """A pandas/numpy cell as a plain Python value."""
    return value.item() if isinstance(value, np.generic) else value


# ---------------------------------------------------------------------------- modelzoo

_CHECKPOINT_DIR = re.compile(r"^checkpoint_(\d+)$")
# Ray Tune bookkeeping in result.json that is not a metric of the model.
_TUNE_KEYS = {
    "training_iteration",
    "epoch",
    "timesteps_total",
    "episodes_total",
    "time_this_iter_s",
    "time_total_s",
    "timestamp",
    "pid",
    "time_since_restore",
    "timesteps_since_restore",
    "iterations_since_restore",
    "done",
    "episodes_this_iter",
    "timesteps_this_iter",
    "warmup_time",
}
_NLIN_KEYS = ("model.nlin", "nlin", "model.activation", "activation")


@dataclass
class _Trial:
    """One Model Zoos trial folder: its checkpoint files by epoch, hyperparameters and results."""

    path: Path
    checkpoints: dict[int, Path]
    hparams: dict[str, Any]
    results: dict[int, dict[str, float]]


def _plan_modelzoo(src: Path) -> _ImportPlan:
    """Model Zoos: one folder per trained model; every model needs every epoch's checkpoint."""
    trials, skipped = _read_trials(src)
    # epochs most trials have: crashed trials lack some and are skipped; a stray extra epoch
    # in a few trials is ignored rather than disqualifying all the others
    counts = collections.Counter(e for t in trials for e in t.checkpoints)
    epochs = sorted(e for e, c in counts.items() if 2 * c >= len(trials))
    complete = []
    for t in trials:
        missing = [e for e in epochs if e not in t.checkpoints]
        if missing:
            skipped.append(f"{t.path.name}: missing checkpoints at epochs {missing}")
        else:
            complete.append(t)
    if not complete:
        raise ImportFormatError(f"{src}: no model folder has checkpoints at every epoch {epochs}")
    ref, _ = _find_reference([t.checkpoints[epochs[0]] for t in complete])
    ref_trial = next(t for t in complete if str(t.checkpoints[epochs[0]]) == ref.path)
    activation = _activation_name(_nlin(ref_trial.hparams)) or "relu"
    layout, arch, names = _canonical(
        ref, _modelzoo_template(ref_trial.hparams, activation), _infer_architecture(ref.shapes, activation)
    )
    candidates = []
    for t in complete:
        hparams = {**t.hparams, "dir": t.path.name}
        if arch is not None:
            act = _activation_name(_nlin(t.hparams) or "relu")
            if act is None:
                skipped.append(f"{t.path.name}: activation {_nlin(t.hparams)!r} has no weightzoo equivalent")
                continue
            hparams["activation"] = act
        metrics = {
            k: np.array([t.results.get(e, {}).get(k, np.nan) for e in epochs], dtype=np.float32)
            for k in _ordered_union(t.results.values())
        }
        load = functools.partial(_load_checkpoints, [t.checkpoints[e] for e in epochs], ref)
        candidates.append(_Candidate(t.path.name, hparams, metrics, load))
    source = {"param_names": names, "architecture_inferred": arch is not None}
    overrides = ("activation",) if arch is not None else ()
    return _ImportPlan(layout, arch, epochs, candidates, source, skipped, arch_overrides=overrides)


def _read_trials(src: Path) -> tuple[list[_Trial], list[str]]:
    """Every subfolder with ``params.json`` or checkpoints, in sorted order; broken ones skipped."""
    trials, skipped = [], []
    for path in sorted(p for p in src.iterdir() if p.is_dir()):
        checkpoints = _trial_checkpoints(path)
        if not checkpoints and not (path / "params.json").is_file():
            continue  # not a trial folder
        try:
            hparams = _flatten_hparams(_read_json(path / "params.json"))
        except _Skip as exc:
            skipped.append(f"{path.name}: params.json {exc}")
            continue
        if not checkpoints:
            skipped.append(f"{path.name}: no checkpoint_<epoch>/checkpoints files")
            continue
        trials.append(_Trial(path, checkpoints, hparams, _read_results(path / "result.json")))
    if not trials and not skipped:
        raise ImportFormatError(
            f"{src}: no model folders (with params.json and checkpoint_<epoch>/checkpoints); "
            "point to the folder holding the NN_tune_trainable_* directories"
        )
    if not trials:
        raise ImportFormatError(f"{src}: no usable model folder; first problem: {skipped[0]}")
    return trials, skipped


def _trial_checkpoints(path: Path) -> dict[int, Path]:
    """``{epoch: checkpoint file}`` from ``checkpoint_<n>`` or zero-padded ``checkpoint_00000n``."""
    found = {}
    for sub in path.iterdir():
        match = _CHECKPOINT_DIR.match(sub.name)
        if match and (sub / "checkpoints").is_file():
            found[int(match.group(1))] = sub / "checkpoints"
    return dict(sorted(found.items()))


def _read_json(path: Path) -> dict:
    """A JSON object from ``path``; raises ``_Skip`` if missing or malformed."""
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        raise _Skip("is missing") from None
    except (OSError, ValueError) as exc:
        raise _Skip(f"is not valid JSON ({_oneline(exc)})") from None
    if not isinstance(data, dict):
        raise _Skip(f"holds a {type(data).__name__}, not an object")
    return data


def _read_results(path: Path) -> dict[int, dict[str, float]]:
    """``result.json`` (one JSON object per line) as ``{epoch: {metric: value}}``; missing -> {}."""
    if not path.is_file():
        return {}
    results: dict[int, dict[str, float]] = {}
    for i, line in enumerate(path.read_text().splitlines()):
        try:
            row = json.loads(line)
        except ValueError:
            continue  # a half-written last line of a crashed trial
        if not isinstance(row, dict):
            continue
        epoch = int(row.get("training_iteration", row.get("epoch", i)))
        results[epoch] = {
            k: float(v)
            for k, v in row.items()
            if k not in _TUNE_KEYS and isinstance(v, int | float) and not isinstance(v, bool)
        }
    return results


def _nlin(hparams: Mapping[str, Any]) -> Any:
    """The activation named in a trial's flattened ``params.json`` (``model::nlin``), or None."""
    return next((hparams[k] for k in _NLIN_KEYS if k in hparams), None)


# The three small CNNs of the Model Zoos (def_net.py: CNN, CNN2, CNN3): conv (out, kernel, pool?)
# blocks of conv -> MaxPool2d(2) -> activation, then Flatten -> Linear(flat, 20) -> Linear(20, 10).
_MODELZOO_CNNS = {
    "CNN": ([(8, 5, True), (6, 5, True), (4, 2, False)], 3 * 3 * 4),
    "CNN2": ([(6, 5, True), (9, 5, True), (6, 2, False)], 3 * 3 * 6),
    "CNN3": ([(16, 3, True), (32, 3, True), (15, 3, True)], 15 * 2 * 2),
}


def _modelzoo_template(hparams: Mapping[str, Any], activation: str) -> dict | None:
    """The exact architecture of a Model Zoos CNN named by ``model::type``, else None."""
    spec = _MODELZOO_CNNS.get(str(hparams.get("model.type", "")))
    if spec is None:
        return None
    blocks, flat = spec
    layers: list[dict] = []
    channels = int(hparams.get("model.channels_in", 1))
    for out, kernel, pool in blocks:
        layers.append({"type": "conv2d", "in": channels, "out": out, "kernel": kernel})
        if pool:
            layers.append({"type": "maxpool2d", "kernel": 2, "stride": 2})
        layers.append({"type": "act", "name": activation})
        channels = out
    layers += [
        {"type": "flatten"},
        {"type": "linear", "in": flat, "out": 20},
        {"type": "act", "name": activation},
        {"type": "linear", "in": 20, "out": 10},
    ]
    return {"family": f"modelzoo-{hparams['model.type']}", "layers": layers}


# --------------------------------------------------------------------------- inr-folder


def _plan_inr_folder(src: Path) -> _ImportPlan:
    """SIREN INRs: ``<root>/<class>/*.pth``, or the members listed in a DWSNets ``splits.json``."""
    skipped: list[str] = []
    if (src / "splits.json").is_file():
        entries = _inr_split_entries(src, skipped)
    else:
        entries = _inr_class_entries(src)
    if not entries:
        raise ImportFormatError(
            f"{src}: no INR files found; expected <root>/<class_name>/*.pth or a splits.json listing them"
        )
    ref, _ = _find_reference([e["path"] for e in entries])
    arch = _siren_architecture(ref)
    layout, arch, names = _canonical(ref, arch)
    label_ids = {label: i for i, label in enumerate(_sorted_labels({e["label"] for e in entries}))}
    candidates = []
    for e in entries:
        hparams = {"label": e["label"], "label_id": label_ids[e["label"]], "file": e["file"]}
        if "split" in e:
            hparams["split"] = e["split"]
        candidates.append(_Candidate(e["file"], hparams, {}, functools.partial(_load_checkpoints, [e["path"]], ref)))
    source = {"param_names": names, "w0": SIREN_W0, "label_ids": label_ids}
    return _ImportPlan(layout, arch, [0], candidates, source, skipped)


def _inr_class_entries(src: Path) -> list[dict]:
    """Members from the folder tree: the first folder under the root names the class."""
    entries = []
    for path in sorted(p for p in src.rglob("*") if p.suffix in STATE_DICT_SUFFIXES and p.is_file()):
        rel = path.relative_to(src)
        if len(rel.parts) < 2:
            continue  # files directly under the root belong to no class
        entries.append({"path": path, "file": rel.as_posix(), "label": rel.parts[0]})
    return entries


def _inr_split_entries(src: Path, skipped: list[str]) -> list[dict]:
    """Members listed in ``splits.json`` ({split: {"path": [...], "label": [...]}}), paths resolved
    against the root when they point elsewhere (the files were generated on another machine)."""
    path = src / "splits.json"
    try:
        data = _read_json(path)
    except _Skip as exc:
        raise ImportFormatError(f"{path}: {exc}; expected {{split: {{'path': [...], 'label': [...]}}}}") from None
    entries = []
    for split, listing in data.items():
        if (
            not isinstance(listing, Mapping)
            or not isinstance(listing.get("path"), list)
            or not isinstance(listing.get("label"), list)
            or len(listing["path"]) != len(listing["label"])
        ):
            raise ImportFormatError(f"{path}: split {split!r} must hold equally long lists 'path' and 'label'")
        for listed, label in zip(listing["path"], listing["label"]):
            found = _resolve_listed(src, str(listed))
            if found is None:
                skipped.append(f"{listed}: listed in splits.json ({split}) but not found under {src}")
                continue
            entries.append(
                {
                    "path": found,
                    "file": found.relative_to(src).as_posix() if found.is_relative_to(src) else str(found),
                    "label": str(label),
                    "split": str(split),
                }
            )
    return entries


def _resolve_listed(root: Path, listed: str) -> Path | None:
    """A listed file: as written, else the longest tail of its path that exists under ``root``."""
    path = Path(listed)
    if path.is_file():
        return path
    parts = path.parts[1:] if path.is_absolute() else path.parts
    for i in range(len(parts)):
        candidate = root.joinpath(*parts[i:])
        if candidate.is_file():
            return candidate
    return None


def _sorted_labels(labels: Iterable[str]) -> list[str]:
    """Class labels in numeric order when they are all integers, else alphabetical."""
    labels = list(labels)
    if all(re.fullmatch(r"-?\d+", s) for s in labels):
        return sorted(labels, key=int)
    return sorted(labels)


def _siren_architecture(ref: _Reference) -> dict:
    """``archs.siren`` for an INR state_dict of alternating 2-D weights and 1-D biases."""
    chain = _dense_chain(ref.shapes)
    ok = (
        chain is not None
        and all(len(w) == 2 and bias for w, bias in chain)
        and all(a[0][0] == b[0][1] for a, b in itertools.pairwise(chain))
    )
    if not ok:
        raise ImportFormatError(
            f"{ref.path}: not a SIREN state_dict (expected 2-D weights each followed by its "
            f"1-D bias, chained); found shapes {ref.shapes[:6]}"
        )
    hidden = [w[0] for w, _ in chain[:-1]]
    return archs.siren(chain[0][0][1], hidden, chain[-1][0][0], w0=SIREN_W0)


# -------------------------------------------------------------------------- state-dicts


def _plan_state_dicts(src: Path) -> _ImportPlan:
    """Any folder of state_dicts of one architecture; members in sorted path order."""
    files = sorted(p for p in src.rglob("*") if p.suffix in STATE_DICT_SUFFIXES and p.is_file())
    if not files:
        raise ImportFormatError(f"{src}: no {'/'.join(STATE_DICT_SUFFIXES)} files found (searched recursively)")
    ref, _ = _find_reference(files)
    layout, arch, names = _canonical(ref, _infer_architecture(ref.shapes, "relu"))
    candidates = [
        _Candidate(
            p.relative_to(src).as_posix(),
            {"file": p.relative_to(src).as_posix()},
            {},
            functools.partial(_load_checkpoints, [p], ref),
        )
        for p in files
    ]
    source = {"param_names": names, "architecture_inferred": arch is not None}
    if arch is not None:
        source["assumed"] = "activation relu, convolution stride 1 and no padding (a state_dict stores neither)"
    return _ImportPlan(layout, arch, [0], candidates, source)


_PLANNERS: dict[str, Callable[[Path], _ImportPlan]] = {
    "smallcnnzoo": _plan_smallcnnzoo,
    "modelzoo": _plan_modelzoo,
    "inr-folder": _plan_inr_folder,
    "state-dicts": _plan_state_dicts,
}

__all__ = ["FORMATS", "ImportReport", "import_zoo"]
