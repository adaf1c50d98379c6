"""Rebuilding a zoo's members: each member's architecture, ParamLayout and PermutationSpec, and the
member as an ``nn.Module``.

A zoo stores one architecture plus the hyperparameter columns that change it per member
(``arch_overrides``: activation, width, depth, ...). Since format version 2 it also records the
resolved layer list of every distinct member architecture when members are written, so a member
is rebuilt from stored layers rather than by replaying the family functions of whatever
weightzoo version reads it. Zoos of format version 1 have no such record and are replayed.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from ..errors import StoreError
from ..layout import ParamLayout
from ..symmetry import PermutationSpec
from . import archs

ColumnReader = Callable[[str, np.ndarray], np.ndarray]  # (column name, member indices) -> values


def override_value(value: Any) -> Any:
    """A stored per-member architecture argument as the family takes it. String columns hold a
    None grid value (e.g. ``norm: [null, layernorm]``) as the text "None"; no family argument
    takes that text, so it is read back as None."""
    value = value.item() if isinstance(value, np.generic) else value
    return None if value == "None" else value


def _key(values: Sequence[Any]) -> str:
    """One member architecture's identity: its override values as JSON."""
    return json.dumps([override_value(v) for v in values])


class MemberArchitectures:
    """Which architecture each member of a zoo has, read from the zoo's attributes and its
    per-member architecture columns (``column`` reads one for a list of member indices); ``layout``
    is the zoo's (the largest member's in a mixed zoo)."""

    def __init__(self, path: Path, attrs: Mapping[str, Any], column: ColumnReader, layout: ParamLayout) -> None:
        self.path = path
        self.base: dict | None = attrs.get("architecture")
        self.names: list[str] = list(attrs.get("arch_overrides") or [])
        self.mixed = bool(attrs.get("mixed_layouts"))
        self.layout = layout
        spec = attrs.get("permutation_spec")
        self.perm_spec = PermutationSpec.from_dict(spec) if spec else None
        self.resolved = {_key([r["overrides"][k] for k in self.names]): r["architecture"]
                         for r in attrs.get("architectures") or []}  # fmt: skip
        self._column = column
        self._described: dict[str, tuple[ParamLayout, PermutationSpec | None]] = {}

    # ------------------------------------------------------------------ identities
    def keys(self, indices: np.ndarray) -> list[str]:
        """The architecture key of each member (every override column read once)."""
        if not self.names:
            return [_key(())] * len(indices)
        columns = [self._column(k, indices) for k in self.names]
        return [_key(values) for values in zip(*columns)]

    def architecture(self, key: str) -> dict:
        """The architecture with these override values: as recorded, else replayed (format 1)."""
        if self.base is None:
            raise StoreError(
                f"{self.path}: the zoo stores no architecture, so members cannot be rebuilt; use state_dict(i)"
            )
        if key in self.resolved:
            return json.loads(json.dumps(self.resolved[key]))  # a copy the caller may change
        return archs.with_overrides(self.base, **dict(zip(self.names, json.loads(key))))

    def of(self, i: int) -> dict:
        """The architecture of member ``i``."""
        return self.architecture(self.keys(np.array([i]))[0])

    def of_many(self, indices: np.ndarray) -> list[dict]:
        """The architecture of each member (columns read once, each distinct one resolved once)."""
        keys = self.keys(indices)
        found = {key: self.architecture(key) for key in dict.fromkeys(keys)}
        return [found[key] for key in keys]

    def records(self, columns: Mapping[str, np.ndarray]) -> list[dict]:
        """Resolved architectures for the override values in ``columns`` (hyperparameter columns
        of members about to be written) that the zoo has not recorded yet."""
        if self.base is None or not self.names or not all(k in columns for k in self.names):
            return []
        new: dict[str, dict] = {}
        for values in zip(*(columns[k] for k in self.names)):
            key = _key(values)
            if key not in self.resolved and key not in new:
                overrides = dict(zip(self.names, json.loads(key)))
                new[key] = {"overrides": overrides, "architecture": archs.with_overrides(self.base, **overrides)}
        self.resolved.update({k: r["architecture"] for k, r in new.items()})
        return list(new.values())

    # ------------------------------------------------------------------ views
    def describe(self, key: str) -> tuple[ParamLayout, PermutationSpec | None]:
        """Layout and permutation spec of the architecture ``key`` (computed once)."""
        if key not in self._described:
            module = archs.build_module(self.architecture(key))
            self._described[key] = (ParamLayout.from_module(module), PermutationSpec.from_module(module))
        return self._described[key]

    def layout_of(self, i: int) -> ParamLayout:
        """Member ``i``'s layout: the zoo's unless members differ in shape."""
        return self.describe(self.keys(np.array([i]))[0])[0] if self.mixed else self.layout

    def perm_spec_of(self, i: int) -> PermutationSpec:
        """Member ``i``'s PermutationSpec, with the symmetries its own activation allows."""
        return PermutationSpec.from_module(archs.build_module(self.of(i)))

    def groups(self, indices: np.ndarray) -> tuple[list[ParamLayout], list[PermutationSpec], np.ndarray]:
        """Distinct ``(layout, spec)`` pairs among members and each member's pair index."""
        if not self.mixed:
            return [self.layout], [self.perm_spec], np.zeros(len(indices), dtype=np.int64)
        seen: dict[str, int] = {}
        ids = np.empty(len(indices), dtype=np.int64)
        for row, key in enumerate(self.keys(indices)):
            ids[row] = seen.setdefault(key, len(seen))
        pairs = [self.describe(key) for key in seen]
        return [p[0] for p in pairs], [p[1] for p in pairs], ids


    def module(self, architecture: Mapping[str, Any], state_dict: Mapping[str, torch.Tensor]) -> nn.Module:
        """``architecture`` built as an ``nn.Module`` (eval mode) holding ``state_dict``."""
        module = archs.build_module(architecture)
        missing, unexpected = module.load_state_dict(dict(state_dict), strict=False)
        float_missing = [k for k in missing if torch.is_floating_point(module.state_dict()[k])]
        if float_missing or unexpected:
            raise StoreError(
                f"{self.path}: stored layout does not match the stored architecture "
                f"(missing {float_missing}, unexpected {unexpected})"
            )
        return module.eval()
