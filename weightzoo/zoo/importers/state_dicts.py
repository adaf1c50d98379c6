"""State-dict files as import members, and the layouts and architectures derived from them.

Files are read without unpickling code (safetensors, or ``torch.load(..., weights_only=True)``).
The first readable file is the :class:`Reference` every member must match; :func:`canonical`
names the parameters after the rebuilt ``nn.Sequential`` when an architecture fits them.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ...errors import ImportFormatError
from ...layout import ParamLayout
from .. import archs
from .plan import Skip, oneline

STATE_DICT_SUFFIXES = (".safetensors", ".pt", ".pth")

# Activation spellings of Keras, the Model Zoos code and others -> weightzoo names.
_ACTIVATION_ALIASES = {
    "leakyrelu": "leaky_relu",
    "linear": "identity",
    "none": "identity",
    "swish": "silu",
    "sin": "sine",
    "siren": "sine",
}
_LEAF_RANK = {"weight": 0, "bias": 1}


def read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    """The float tensors of a state_dict file, read without unpickling code; raises ``Skip``."""
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            obj = _module_order(load_file(str(path)))
        else:
            obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - any failure to read means: skip this file
        raise Skip(f"unreadable ({oneline(exc)})") from None
    sd = _unwrap_state_dict(obj)
    if sd is None:
        raise Skip(f"not a state_dict (holds a {type(obj).__name__})")
    floats = {k: v for k, v in sd.items() if torch.is_floating_point(v)}
    if not floats:
        raise Skip("holds no float tensors")
    return floats


def load_flat(path: str | Path, layout: ParamLayout) -> torch.Tensor:
    """The parameters ``[P]`` of one state_dict file (``.safetensors`` or ``.pt``/``.pth``, never
    unpickled) in ``layout``'s order; one-line errors name the file and what does not fit."""
    path = Path(path)
    if path.suffix not in STATE_DICT_SUFFIXES:
        raise ImportFormatError(f"{path}: weights are read from {'/'.join(STATE_DICT_SUFFIXES)} state_dict files")
    if not path.is_file():
        raise ImportFormatError(f"{path}: no such file")
    try:
        state = read_state_dict(path)
    except Skip as exc:
        raise ImportFormatError(f"{path}: {exc}") from None
    return layout.flatten(state, source=str(path))


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
class Reference:
    """The parameter names and shapes every member must share, from the first readable file."""

    path: str
    names: list[str]
    shapes: list[tuple[int, ...]]

    @classmethod
    def of(cls, path: Path, sd: Mapping[str, torch.Tensor]) -> Reference:
        return cls(str(path), list(sd), [tuple(t.shape) for t in sd.values()])

    def flat(self, sd: Mapping[str, torch.Tensor]) -> np.ndarray:
        """The tensors of ``sd`` in reference order as one float32 vector; ``Skip`` if they differ."""
        problem = self.difference(sd)
        if problem:
            raise Skip(f"parameters differ from {self.path}: {problem}")
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


def find_reference(paths: Sequence[Path]) -> tuple[Reference, dict[str, torch.Tensor]]:
    """The first readable state_dict among ``paths`` (unreadable ones are skipped later)."""
    first_error = None
    for path in paths:
        try:
            sd = read_state_dict(path)
        except Skip as exc:
            first_error = first_error or f"{path}: {exc}"
            continue
        return Reference.of(path, sd), sd
    raise ImportFormatError(f"no readable state_dict among {len(paths)} files; first problem: {first_error}")


def load_checkpoints(paths: Sequence[Path], ref: Reference) -> np.ndarray:
    """Parameters ``[E, P]`` of one member from its checkpoint files, one per epoch."""
    rows = []
    for path in paths:
        try:
            rows.append(ref.flat(read_state_dict(path)))
        except Skip as exc:
            where = f"{path.parent.name}/{path.name}: " if len(paths) > 1 else ""
            raise Skip(f"{where}{exc}") from None
    return np.stack(rows)


# ------------------------------------------------------------------- layouts and architectures


def dense_chain(shapes: Sequence[tuple[int, ...]]) -> list[tuple[tuple[int, ...], bool]] | None:
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


def infer_architecture(shapes: Sequence[tuple[int, ...]], activation: str) -> dict | None:
    """A conv/linear chain with exactly these parameter shapes, or None if it cannot be known.

    Convolutions are followed by global average pooling when the first linear layer reads one
    value per channel; a larger fan-in means a flattened feature map of unknown spatial size, so
    no architecture is returned. Stride 1 and no padding are assumed (a state_dict has neither).
    """
    chain = dense_chain(shapes)
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


def canonical(ref: Reference, *architectures: dict | None) -> tuple[ParamLayout, dict | None, dict[str, str]]:
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


def _plain_layout(ref: Reference) -> ParamLayout:
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


def activation_name(raw: Any) -> str | None:
    """The weightzoo name of an activation spelled ``raw`` (Keras, Model Zoos, ...), or None."""
    if raw is None:
        return None
    name = str(raw).strip().lower()
    name = _ACTIVATION_ALIASES.get(name, name)
    return name if name in archs.ACTIVATIONS else None
