"""Small CNN Zoo (Unterthiner et al. 2020, "Predicting Neural Network Accuracy from Weights").

A folder holds ``weights.npy`` (one row per checkpoint, TensorFlow axis order),
``metrics.csv.gz`` (one row per checkpoint: config, step, metrics) and ``layout.csv`` (each
TensorFlow variable's span in a row). Rows are grouped into runs; one gather per run turns its
rows into canonical PyTorch order for ``archs.small_cnn_zoo``.
"""

from __future__ import annotations

import ast
import functools
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ...errors import ImportFormatError
from ...layout import ParamLayout
from .. import archs
from .plan import Candidate, ImportPlan, oneline
from .state_dicts import activation_name

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


def plan(src: Path) -> ImportPlan:
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
    return ImportPlan(layout, arch, epochs, candidates, source, skipped, arch_overrides=("activation",))


def _read_csv(path: Path):
    """A CSV (gzipped or not) as a DataFrame; an unreadable file is a one-line error."""
    import pandas as pd

    try:
        return pd.read_csv(path)
    except Exception as exc:  # noqa: BLE001
        raise ImportFormatError(
            f"{path}: unreadable CSV ({oneline(exc)}); restore the file from the dataset archive"
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
            f"{path}: unreadable or truncated ({oneline(exc)}); re-extract it from the dataset archive"
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


def _scz_runs(frame, weights: np.ndarray, gather: np.ndarray) -> tuple[list[Candidate], list[str], list[int], str]:
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
        activation = activation_name(activations[rows[0]])
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
            Candidate(f"run {run}", hparams, metrics, functools.partial(_scz_params, weights, ordered, gather))
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
