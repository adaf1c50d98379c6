"""PermutationSpec: which parameter axes move together when hidden neurons/channels are
permuted, and the group actions (permutation, sign flip, positive rescaling) that keep a
network's function.

A spec is derived from an ``nn.Module`` whose submodules are registered in data-flow order
(``nn.Sequential`` and friends); which further symmetries a group allows follows from the
activations after it. Specs round-trip through JSON; augmentation, alignment, the graph builder
and the invariance tests all read them.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace

import torch
from torch import Tensor, nn

from .errors import SpecError
from .layout import module_kind

SYMMETRIES = ("permute", "sign", "scale")

# Which symmetries of the pre-activations survive each parameter-free module.
_ALL = frozenset(SYMMETRIES)
_PERM = frozenset({"permute"})
_PERM_SCALE = frozenset({"permute", "scale"})
_PERM_SIGN = frozenset({"permute", "sign"})
_PRESERVED: dict[type, frozenset[str]] = {
    nn.ReLU: _PERM_SCALE,
    nn.LeakyReLU: _PERM_SCALE,
    nn.PReLU: _PERM,
    nn.Tanh: _PERM_SIGN,
    nn.Hardtanh: _PERM_SIGN,
    nn.Softsign: _PERM_SIGN,
    nn.Tanhshrink: _PERM_SIGN,
    nn.Sigmoid: _PERM,
    nn.GELU: _PERM,
    nn.SiLU: _PERM,
    nn.ELU: _PERM,
    nn.SELU: _PERM,
    nn.Softplus: _PERM,
    nn.Mish: _PERM,
    nn.ReLU6: _PERM,
    nn.Hardswish: _PERM,
    nn.MaxPool1d: _PERM_SCALE,
    nn.MaxPool2d: _PERM_SCALE,
    nn.AdaptiveMaxPool1d: _PERM_SCALE,
    nn.AdaptiveMaxPool2d: _PERM_SCALE,
    nn.AvgPool1d: _ALL,
    nn.AvgPool2d: _ALL,
    nn.AdaptiveAvgPool1d: _ALL,
    nn.AdaptiveAvgPool2d: _ALL,
    nn.Dropout: _ALL,
    nn.Dropout1d: _ALL,
    nn.Dropout2d: _ALL,
    nn.Identity: _ALL,
    nn.Flatten: _ALL,
}


def module_symmetries(module: nn.Module) -> frozenset[str] | None:
    """Symmetries a parameter-free module preserves, or None if weightzoo does not know it.

    Custom activations declare theirs with a class attribute ``weight_space_symmetries``.
    """
    declared = getattr(module, "weight_space_symmetries", None)
    if declared is not None:
        return frozenset(declared)
    return _PRESERVED.get(type(module))

@dataclass(frozen=True)
class AxisRef:
    """Axis ``axis`` of parameter ``param``; ``inner`` consecutive entries belong to each neuron
    (``inner > 1`` for a Linear layer reading a flattened ``C x spatial`` feature map)."""

    param: str
    axis: int
    inner: int = 1


@dataclass(frozen=True)
class PermGroup:
    """The neurons of one hidden layer and every parameter axis they index.

    ``out_axes`` produce the pre-activations (scaled by a group action), ``in_axes`` consume
    them (divided by the scale); ``symmetries`` lists which actions keep the function.
    """

    name: str
    size: int
    axes: tuple[AxisRef, ...]
    out_axes: tuple[AxisRef, ...] = ()
    in_axes: tuple[AxisRef, ...] = ()
    symmetries: tuple[str, ...] = ("permute",)


@dataclass
class GroupAction:
    """One element of the symmetry group: a permutation (``[size]`` or ``[B, size]``) per
    group and optionally a nonzero per-neuron scale (sign flips and/or positive rescaling)."""

    perms: dict[str, Tensor] = field(default_factory=dict)
    scales: dict[str, Tensor] = field(default_factory=dict)


@dataclass(frozen=True)
class PermutationSpec:
    """Named permutation groups, one per hidden layer."""

    groups: tuple[PermGroup, ...]

    def __getitem__(self, name: str) -> PermGroup:
        for g in self.groups:
            if g.name == name:
                return g
        raise KeyError(name)

    def __len__(self) -> int:
        return len(self.groups)

    @classmethod
    def from_module(cls, module: nn.Module) -> PermutationSpec:
        """Derive the groups of a feed-forward module whose leaves run in registration order;
        containers with ``weight_space_residual = True`` compute ``x + children(x)``."""
        return _SpecBuilder().build(module)

    def restricted_to(self, symmetries: Sequence[str]) -> PermutationSpec:
        """The same groups, keeping only the listed symmetries."""
        return PermutationSpec(
            tuple(replace(g, symmetries=tuple(s for s in g.symmetries if s in symmetries)) for g in self.groups)
        )

    # -- group actions
    def random_action(
        self,
        generator: torch.Generator | None = None,
        *,
        batch: int | None = None,
        sign: bool = True,
        scale: tuple[float, float] | None = (0.5, 2.0),
    ) -> GroupAction:
        """Draw a random symmetry: a permutation per group, random signs where allowed and
        log-uniform positive scales in ``scale`` where allowed (None disables scaling)."""
        lead = () if batch is None else (batch,)
        action = GroupAction()
        for g in self.groups:
            keys = torch.rand(*lead, g.size, generator=generator)
            action.perms[g.name] = keys.argsort(dim=-1)
            s = torch.ones(*lead, g.size)
            if sign and "sign" in g.symmetries:
                s = torch.where(torch.rand(*lead, g.size, generator=generator) < 0.5, -s, s)
            if scale is not None and "scale" in g.symmetries:
                lo, hi = torch.log(torch.tensor(scale, dtype=torch.float32))
                s = s * torch.exp(lo + (hi - lo) * torch.rand(*lead, g.size, generator=generator))
            if not torch.all(s == 1):
                action.scales[g.name] = s
        return action

    def apply(self, params: Mapping[str, Tensor], action: GroupAction, *, batch_dims: int = 0) -> dict[str, Tensor]:
        """Return new tensors transformed by ``action``; params carry ``batch_dims`` leading dims.

        Scaling happens first (in the original neuron order), then the permutation, so the
        result computes the same function as the input whenever the action is a symmetry.
        """
        out = dict(params)
        for g in self.groups:
            s = action.scales.get(g.name)
            if s is not None:
                if not set(g.symmetries) & {"sign", "scale"}:
                    raise SpecError(f"group {g.name!r} allows only permutations, got a scale")
                for ref in g.out_axes:
                    out[ref.param] = scale_axis(out[ref.param], ref, s, batch_dims)
                for ref in g.in_axes:
                    out[ref.param] = scale_axis(out[ref.param], ref, 1.0 / s, batch_dims)
            p = action.perms.get(g.name)
            if p is not None:
                for ref in g.axes:
                    out[ref.param] = permute_axis(out[ref.param], ref, p, batch_dims)
        return out

    # -- serialization
    def to_dict(self) -> dict:
        return {
            "groups": [
                {
                    "name": g.name,
                    "size": g.size,
                    "axes": [asdict(a) for a in g.axes],
                    "out_axes": [asdict(a) for a in g.out_axes],
                    "in_axes": [asdict(a) for a in g.in_axes],
                    "symmetries": list(g.symmetries),
                }
                for g in self.groups
            ]
        }

    @classmethod
    def from_dict(cls, data: Mapping) -> PermutationSpec:
        def refs(items) -> tuple[AxisRef, ...]:
            return tuple(AxisRef(a["param"], int(a["axis"]), int(a.get("inner", 1))) for a in items)

        try:
            return cls(
                tuple(
                    PermGroup(
                        g["name"],
                        int(g["size"]),
                        refs(g["axes"]),
                        refs(g.get("out_axes", [])),
                        refs(g.get("in_axes", [])),
                        tuple(g.get("symmetries", ["permute"])),
                    )
                    for g in data["groups"]
                )
            )
        except (KeyError, TypeError) as exc:
            raise SpecError(
                f"permutation spec: malformed description ({exc!r}); expected groups with name, size, axes"
            ) from None

    def to_json(self) -> str:
        return json.dumps(self.to_dict())

    @classmethod
    def from_json(cls, text: str) -> PermutationSpec:
        return cls.from_dict(json.loads(text))


def _split_axis(t: Tensor, ref: AxisRef, batch_dims: int) -> tuple[Tensor, int]:
    """View ``t`` with the referenced axis split into ``(neurons, inner)``; return the axis."""
    ax = batch_dims + ref.axis
    shape = list(t.shape)
    n = shape[ax] // ref.inner
    return t.reshape(*shape[:ax], n, ref.inner, *shape[ax + 1 :]), ax


def neuron_rows(t: Tensor, ref: AxisRef, batch_dims: int) -> Tensor:
    """``t`` as ``[*lead, n, rest]``: one row per neuron of axis ``ref``, holding every entry that
    neuron indexes (its ``inner`` block and all other axes), for matching neurons across networks."""
    v, ax = _split_axis(t, ref, batch_dims)
    return v.movedim(ax, batch_dims).reshape(*t.shape[:batch_dims], v.shape[ax], -1)


def scale_axis(t: Tensor, ref: AxisRef, s: Tensor, batch_dims: int) -> Tensor:
    """``t`` with each neuron of axis ``ref`` multiplied by its entry of ``s`` (``[n]`` or ``[*lead, n]``)."""
    v, ax = _split_axis(t, ref, batch_dims)
    lead = s.shape[:-1]  # () or batch dims
    bshape = [*lead] + [1] * (ax - len(lead)) + [s.shape[-1]] + [1] * (v.dim() - ax - 1)
    return (v * s.to(v.device, v.dtype).reshape(bshape)).reshape(t.shape)


def permute_axis(t: Tensor, ref: AxisRef, perm: Tensor, batch_dims: int) -> Tensor:
    """``t`` with the neurons of axis ``ref`` reordered: neuron ``i`` of the result is neuron ``perm[i]``
    of ``t`` (``perm`` is ``[n]``, or ``[*lead, n]`` for one permutation per leading element)."""
    v, ax = _split_axis(t, ref, batch_dims)
    perm = perm.to(v.device)
    if perm.dim() == 1:
        return v.index_select(ax, perm).reshape(t.shape)
    # batched: one permutation per leading element
    lead = perm.shape[:-1]
    idx_shape = [*lead] + [1] * (ax - len(lead)) + [perm.shape[-1]] + [1] * (v.dim() - ax - 1)
    idx = perm.reshape(idx_shape).expand(*v.shape[:ax], perm.shape[-1], *v.shape[ax + 1 :])
    return torch.gather(v, ax, idx).reshape(t.shape)


class _SpecBuilder:
    """Walks a module's leaves in order and collects one PermGroup per hidden dense layer.

    A container declaring ``weight_space_residual = True`` computes ``x + f(x)`` with ``f`` its
    children in order. Every layer reading or writing such a residual stream joins the stream's
    group, which allows permutations only; hidden neurons inside ``f`` get groups of their own.
    """

    def __init__(self) -> None:
        self.groups: list[PermGroup] = []
        self.open: dict | None = None  # the last dense layer whose outputs are not yet consumed
        self.streams: list[dict | None] = []  # residual streams of the blocks being walked (None: the input)

    def build(self, module: nn.Module) -> PermutationSpec:
        self._visit("", module)
        return PermutationSpec(tuple(self.groups))

    def _visit(self, name: str, mod: nn.Module) -> None:
        if isinstance(mod, nn.MultiheadAttention):
            raise SpecError(
                f"cannot derive a PermutationSpec: module {name!r} is nn.MultiheadAttention, whose "
                "within-head symmetries a PermutationSpec does not describe; use "
                "weightzoo.paramgraph.GraphBuilder.from_module for attention networks"
            )
        if getattr(mod, "weight_space_residual", False):
            self._residual(name, mod)
        elif next(mod.children(), None) is not None:
            self._children(name, mod)  # containers: their leaves are visited in order
        else:
            self._leaf(name, mod)

    def _children(self, name: str, mod: nn.Module) -> None:
        for child_name, child in mod.named_children():
            self._visit(f"{name}.{child_name}" if name else child_name, child)

    def _leaf(self, name: str, mod: nn.Module) -> None:
        prefix = f"{name}." if name else ""
        kind = module_kind(mod)
        if kind == "dense":
            self._dense(prefix, mod)
        elif kind == "norm":
            self._norm(prefix, mod)
        elif module_symmetries(mod) is not None:
            self._elementwise(mod)
        else:
            raise SpecError(
                f"cannot derive a PermutationSpec: module {name!r} ({type(mod).__name__}) is not "
                "supported; use Linear/Conv1d/Conv2d, BatchNorm/LayerNorm, activations, pooling, "
                "Flatten and Dropout, or declare `weight_space_symmetries` on a custom activation"
            )

    def _dense(self, prefix: str, mod: nn.Module) -> None:
        if self.open is not None:
            fan_in = mod.in_features if isinstance(mod, nn.Linear) else mod.in_channels
            self._read(self.open, prefix, fan_in, isinstance(mod, nn.Linear))
        size = mod.out_features if isinstance(mod, nn.Linear) else mod.out_channels
        refs = [AxisRef(prefix + "weight", 0)]
        if mod.bias is not None:
            refs.append(AxisRef(prefix + "bias", 0))
        self.open = {
            "size": size,
            "axes": list(refs),
            "out": list(refs),
            "in": [],
            "sym": set(SYMMETRIES),
            "flattened": False,
            "activated": False,
            "stream": False,
        }

    def _read(self, g: dict, prefix: str, fan_in: int, linear: bool) -> None:
        """A dense layer consumes ``g``: its input axis joins the group, which closes unless it is
        the stream of a residual block still being walked."""
        inner = 1
        if fan_in != g["size"]:
            if linear and g["flattened"] and fan_in % g["size"] == 0:
                inner = fan_in // g["size"]
            else:
                raise SpecError(
                    f"cannot derive a PermutationSpec: {prefix}weight reads {fan_in} inputs but the "
                    f"previous layer has {g['size']} outputs; is the module registered in data-flow order?"
                )
        ref = AxisRef(prefix + "weight", 1, inner)
        g["axes"].append(ref)
        g["in"].append(ref)
        if not any(g is s for s in self.streams):
            self._close(g)

    def _close(self, g: dict) -> None:
        self.groups.append(
            PermGroup(
                name=f"layer{len(self.groups)}",
                size=g["size"],
                axes=tuple(g["axes"]),
                out_axes=tuple(g["out"]),
                in_axes=tuple(g["in"]),
                symmetries=tuple(s for s in SYMMETRIES if s in g["sym"]),
            )
        )

    def _residual(self, name: str, mod: nn.Module) -> None:
        """``x + f(x)``: the block's output merges into the stream it read (permutations only)."""
        stream = self.open
        if stream is not None:
            stream["stream"] = True
            stream["sym"] &= _PERM
        self.streams.append(stream)
        self._children(name, mod)
        self.streams.pop()
        out, self.open = self.open, stream
        if stream is None or out is stream:
            return  # a skip around the network input (never permuted) or a block without dense layers
        if out is None or out["size"] != stream["size"]:
            raise SpecError(
                f"cannot derive a PermutationSpec: residual block {name!r} maps {stream['size']} features "
                f"to {out['size'] if out else 'none'}; x + f(x) needs f to keep the size"
            )
        for key in ("axes", "out", "in"):
            stream[key] += out[key]

    def _norm(self, prefix: str, mod: nn.Module) -> None:
        g = self.open
        if g is None:
            return  # normalization of the network input: input neurons are never permuted
        if isinstance(mod, nn.LayerNorm) and tuple(mod.normalized_shape) != (g["size"],):
            raise SpecError(
                f"cannot derive a PermutationSpec: LayerNorm {prefix[:-1]!r} normalizes shape "
                f"{tuple(mod.normalized_shape)}; only LayerNorm over the {g['size']} features "
                "of the previous layer is supported"
            )
        affine = [AxisRef(prefix + p, 0) for p in ("weight", "bias") if getattr(mod, p, None) is not None]
        stats = [AxisRef(prefix + b, 0) for b in ("running_mean", "running_var") if getattr(mod, b, None) is not None]
        g["axes"] += affine + stats
        if affine and not g["activated"] and not g["stream"]:
            g["out"] = affine
        else:
            g["sym"] &= {"permute"}

    def _elementwise(self, mod: nn.Module) -> None:
        if self.open is None:
            return
        self.open["sym"] &= module_symmetries(mod)
        if isinstance(mod, nn.Flatten):
            self.open["flattened"] = True
        elif module_symmetries(mod) != _ALL:
            self.open["activated"] = True
