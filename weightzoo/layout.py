"""ParamLayout: how one network's parameters map to a flat float32 vector, the contract every
part of weightzoo speaks.

Parameters (and float buffers such as BatchNorm running statistics) are listed in state_dict
order with a role and the index of the dense layer they belong to; the layout is derived from an
``nn.Module`` and round-trips through JSON. Which axes permute together is
:mod:`weightzoo.symmetry`'s job.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING

from .errors import LayoutError, SpecError

if TYPE_CHECKING:
    from torch import Tensor, nn

ROLES = ("weight", "bias", "norm", "other")


def module_kind(module: nn.Module) -> str | None:
    """``"dense"`` for Linear/Conv layers (their weights get a layer index), ``"norm"`` for
    BatchNorm/LayerNorm, else None. torch is imported here, not with the module, so reading a
    stored layout (``zoo info``) needs no torch."""
    from torch import nn

    if isinstance(module, nn.Linear | nn.Conv1d | nn.Conv2d | nn.Conv3d):
        return "dense"
    if isinstance(module, nn.BatchNorm1d | nn.BatchNorm2d | nn.BatchNorm3d | nn.LayerNorm):
        return "norm"
    return None


@dataclass(frozen=True)
class ParamEntry:
    """One tensor of the state_dict: where it sits in the flat vector and what it is."""

    name: str
    shape: tuple[int, ...]
    offset: int
    role: str
    layer: int

    @property
    def numel(self) -> int:
        n = 1
        for s in self.shape:
            n *= s
        return n

    @property
    def stop(self) -> int:
        return self.offset + self.numel


@dataclass(frozen=True)
class ParamLayout:
    """How one network's parameters map to a flat float32 vector of length ``size``."""

    entries: tuple[ParamEntry, ...]

    def __post_init__(self) -> None:
        offset = 0
        for e in self.entries:
            if e.role not in ROLES:
                raise SpecError(f"layout entry {e.name!r}: role {e.role!r} is not one of {ROLES}")
            if e.offset != offset:
                raise SpecError(
                    f"layout entry {e.name!r}: offset {e.offset} should be {offset} "
                    "(entries must be contiguous and in order)"
                )
            offset = e.stop
        if len({e.name for e in self.entries}) != len(self.entries):
            raise SpecError("layout: parameter names must be unique")

    # -- construction
    @classmethod
    def from_shapes(cls, items: Iterable[tuple[str, Iterable[int], str, int]]) -> ParamLayout:
        """Build from ``(name, shape, role, layer)`` tuples, assigning offsets in order."""
        entries, offset = [], 0
        for name, shape, role, layer in items:
            e = ParamEntry(name, tuple(int(s) for s in shape), offset, role, int(layer))
            entries.append(e)
            offset = e.stop
        return cls(tuple(entries))

    @classmethod
    def from_module(cls, module: nn.Module) -> ParamLayout:
        """Parameters and float buffers of ``module`` in state_dict order.

        Linear/Conv weights and biases get roles ``weight``/``bias`` and a running layer
        index; normalization affine parameters get ``norm`` and running statistics ``other``,
        both with the index of the dense layer they follow.
        """
        owner_role: dict[str, tuple[str, int]] = {}
        layer = -1
        for mod_name, mod in module.named_modules():
            prefix = f"{mod_name}." if mod_name else ""
            kind = module_kind(mod)
            if kind == "dense":
                layer += 1
                owner_role[prefix + "weight"] = ("weight", layer)
                owner_role[prefix + "bias"] = ("bias", layer)
            elif kind == "norm":
                for p in ("weight", "bias"):
                    owner_role[prefix + p] = ("norm", max(layer, 0))
        items = []
        for name, tensor in module.state_dict().items():
            if not tensor.is_floating_point():
                continue  # e.g. BatchNorm's num_batches_tracked: not part of the function
            role, idx = owner_role.get(name, ("other", max(_layer_of(name, owner_role), 0)))
            items.append((name, tensor.shape, role, idx))
        return cls.from_shapes(items)

    # -- queries
    @property
    def size(self) -> int:
        return self.entries[-1].stop if self.entries else 0

    @property
    def names(self) -> list[str]:
        return [e.name for e in self.entries]

    def __len__(self) -> int:
        return len(self.entries)

    def __iter__(self):
        return iter(self.entries)

    def __getitem__(self, name: str) -> ParamEntry:
        for e in self.entries:
            if e.name == name:
                return e
        raise KeyError(name)

    def __contains__(self, name: object) -> bool:
        return any(e.name == name for e in self.entries)

    def slot(self, entry: ParamEntry) -> str:
        """A name for ``entry``'s place that is comparable across layouts of different depth:
        ``role/layer/kind`` with the last layer called ``last`` (e.g. ``weight/last/weight``)."""
        last = max(e.layer for e in self.entries)
        layer = "last" if entry.layer == last else str(entry.layer)
        return f"{entry.role}/{layer}/{entry.name.rsplit('.', 1)[-1]}"

    def dense_layers(self) -> list[tuple[ParamEntry, ParamEntry | None]]:
        """``(weight, bias or None)`` for each Linear/Conv layer, in order."""
        biases = {e.layer: e for e in self.entries if e.role == "bias"}
        return [(e, biases.get(e.layer)) for e in self.entries if e.role == "weight"]

    # -- conversion
    def flatten(self, state_dict: Mapping[str, Tensor], *, source: str = "state_dict") -> Tensor:
        """Concatenate a state_dict's tensors into a float32 vector ``[P]``."""
        self.check(state_dict, source=source)
        import torch

        parts = [state_dict[e.name].detach().reshape(-1).to(torch.float32).cpu() for e in self]
        return torch.cat(parts) if parts else torch.zeros(0)

    def check(self, state_dict: Mapping[str, Tensor], *, source: str = "state_dict") -> None:
        """Raise LayoutError naming the first missing or mis-shaped tensor."""
        for e in self.entries:
            if e.name not in state_dict:
                extra = sorted(set(state_dict) - set(self.names))[:3]
                hint = f"; it has {extra} instead" if extra else ""
                raise LayoutError(f"{source}: missing parameter {e.name!r}{hint}")
            got = tuple(state_dict[e.name].shape)
            if got != e.shape:
                raise LayoutError(f"{source}: parameter {e.name!r} has shape {got}, layout expects {e.shape}")

    def unflatten(self, flat: Tensor) -> dict[str, Tensor]:
        """Split ``[..., P]`` into ``{name: [..., *shape]}`` (views where possible)."""
        if flat.shape[-1] != self.size:
            raise LayoutError(f"flat parameters have length {flat.shape[-1]}, layout expects {self.size}")
        lead = flat.shape[:-1]
        return {e.name: flat[..., e.offset : e.stop].reshape(*lead, *e.shape) for e in self}

    # -- serialization
    def to_dict(self) -> dict:
        return {"entries": [asdict(e) | {"shape": list(e.shape)} for e in self.entries]}

    @classmethod
    def from_dict(cls, data: Mapping) -> ParamLayout:
        try:
            return cls(
                tuple(
                    ParamEntry(d["name"], tuple(d["shape"]), int(d["offset"]), d["role"], int(d["layer"]))
                    for d in data["entries"]
                )
            )
        except (KeyError, TypeError) as exc:
            raise SpecError(
                f"layout: malformed description ({exc!r}); expected entries with name, shape, offset, role, layer"
            ) from None

    def to_json(self) -> str:
        return json.dumps(self.to_dict())

    @classmethod
    def from_json(cls, text: str) -> ParamLayout:
        return cls.from_dict(json.loads(text))


def _layer_of(name: str, owner_role: Mapping[str, tuple[str, int]]) -> int:
    """Layer index of a buffer: that of a sibling parameter of the same module, else 0."""
    prefix = name.rsplit(".", 1)[0] + "."
    for key, (_, idx) in owner_role.items():
        if key.startswith(prefix):
            return idx
    return 0

