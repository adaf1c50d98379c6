"""WeightSpace: a batch of networks of one layout as per-layer tensors (NFN convention).

``weights[i]`` is ``[B, C, out, in, *kernel]`` and ``biases[i]`` is ``[B, C, out]`` for the
i-th Linear/Conv layer (zeros where the layer has no bias); ``extras`` holds every other
stored tensor (normalization parameters, running statistics) as ``[B, C, *shape]``.
Raw weights have ``C = 1``; metanetwork layers produce ``C > 1`` feature channels.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, replace

import torch
from torch import Tensor

from .errors import LayoutError
from .layout import ParamLayout
from .symmetry import GroupAction, PermutationSpec


@dataclass
class WeightSpace:
    weights: tuple[Tensor, ...]
    biases: tuple[Tensor, ...]
    layout: ParamLayout
    extras: dict[str, Tensor] = field(default_factory=dict)

    # -- construction
    @classmethod
    def from_flat(cls, flat: Tensor, layout: ParamLayout) -> WeightSpace:
        """``[B, P]`` (or ``[P]``, treated as B = 1) flat parameters -> WeightSpace."""
        if flat.dim() == 1:
            flat = flat.unsqueeze(0)
        return cls.from_params(layout.unflatten(flat), layout)

    @classmethod
    def from_params(cls, params: dict[str, Tensor], layout: ParamLayout) -> WeightSpace:
        """Batched named tensors ``{name: [B, *shape]}`` -> WeightSpace."""
        weights, biases = [], []
        dense_names = set()
        for w, b in layout.dense_layers():
            W = params[w.name]
            weights.append(W.unsqueeze(1))
            biases.append(params[b.name].unsqueeze(1) if b is not None else W.new_zeros(W.shape[0], 1, w.shape[0]))
            dense_names.update({w.name} | ({b.name} if b is not None else set()))
        extras = {e.name: params[e.name].unsqueeze(1) for e in layout if e.name not in dense_names}
        return cls(tuple(weights), tuple(biases), layout, extras)

    @staticmethod
    def collate(items: Sequence[WeightSpace]) -> WeightSpace:
        """Concatenate WeightSpaces of one layout along the batch dimension."""
        if not items:
            raise ValueError("collate needs at least one WeightSpace")
        first = items[0]
        if any(it.layout != first.layout for it in items[1:]):
            raise LayoutError("collate: WeightSpaces have different layouts")
        return WeightSpace(
            tuple(torch.cat(ts) for ts in zip(*(it.weights for it in items))),
            tuple(torch.cat(ts) for ts in zip(*(it.biases for it in items))),
            first.layout,
            {k: torch.cat([it.extras[k] for it in items]) for k in first.extras},
        )

    # -- views
    def __len__(self) -> int:
        return self.weights[0].shape[0] if self.weights else next(iter(self.extras.values())).shape[0]

    @property
    def channels(self) -> int:
        return self.weights[0].shape[1]

    def named_params(self) -> dict[str, Tensor]:
        """``{name: [B, *shape]}`` for raw weights (C = 1), inverse of ``from_params``."""
        if self.channels != 1:
            raise LayoutError(f"cannot map a WeightSpace with {self.channels} channels back to parameters")
        out: dict[str, Tensor] = {}
        for (w, b), W, B in zip(self.layout.dense_layers(), self.weights, self.biases):
            out[w.name] = W[:, 0]
            if b is not None:
                out[b.name] = B[:, 0]
        out.update({k: v[:, 0] for k, v in self.extras.items()})
        return out

    def to_flat(self) -> Tensor:
        """``[B, P]`` flat parameters in layout order."""
        params = self.named_params()
        return torch.cat([params[e.name].reshape(len(self), -1) for e in self.layout], dim=1)

    def to_state_dicts(self) -> list[dict[str, Tensor]]:
        """One state_dict per member (tensors are views into this batch)."""
        params = self.named_params()
        return [{k: v[i] for k, v in params.items()} for i in range(len(self))]

    # -- transforms
    def permute(self, spec: PermutationSpec, action: GroupAction) -> WeightSpace:
        """Apply a symmetry (permutations, optionally signs/scales) from ``spec`` to every member.

        Permutations may be shared (``[size]``) or one per member (``[B, size]``).
        """
        params = spec.apply(self.named_params(), action, batch_dims=1)
        return WeightSpace.from_params(params, self.layout)

    def map(self, fn) -> WeightSpace:
        """Apply ``fn`` to every tensor (e.g. ``lambda t: t.to(device)``)."""
        return replace(
            self,
            weights=tuple(fn(t) for t in self.weights),
            biases=tuple(fn(t) for t in self.biases),
            extras={k: fn(v) for k, v in self.extras.items()},
        )

    def to(self, *args, **kwargs) -> WeightSpace:
        return self.map(lambda t: t.to(*args, **kwargs))

    def __repr__(self) -> str:
        shapes = ", ".join(str(tuple(w.shape[2:])) for w in self.weights)
        return f"WeightSpace(B={len(self)}, C={self.channels}, layers=[{shapes}], extras={len(self.extras)})"
