"""Probe features: every neuron's activations on a fixed set of inputs, as extra metanetwork inputs.

Kofinas et al. (2024, "Graph Neural Networks for Learning Equivariant Representations of Neural
Networks") add to each node of the parameter graph the values its neuron takes when the network
runs on a few probe inputs; on INR classification this carries most of the signal a metanetwork
finds. A neuron's probe values move with the neuron under every hidden-neuron permutation, so
GMN and DWSNet stay equivariant (and invariant after pooling) with them.

:class:`ProbeFeatures` runs a batch of members of one MLP layout (Linear layers with
parameter-free elementwise modules between them: activations, dropout; each member with its own
activation) on ``S`` inputs drawn once
from the zoo's task, and returns ``[B, N, S]`` for the ``N`` neurons in graph order (network
inputs, then each Linear's outputs), standardized per layer with statistics fit on the training
members. The probe inputs are fixed, not learned as in the paper, so they can be computed
without gradients and saved in the run's ``config.json``.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from ..errors import SpecError, StoreError
from ..zoo import archs
from ..zoo.store import ZooStore
from ..zoo.train.network import BatchedNet
from .data import Normalizer, ZooMembers, architecture_key

_ELEMENTWISE = (*archs.ACTIVATIONS.values(), nn.Dropout)


def probe_input(zoo: ZooStore, members: ZooMembers, count: int, normalizer: Normalizer, seed: int = 0) -> dict:
    """The JSON a :class:`ProbeFeatures` is built from: the members' architectures (one layout;
    they may differ in activation), ``count`` probe inputs drawn (seeded) from the first member's
    training inputs (standard normal ones for a zoo without a task), and the normalization the
    metanetwork's inputs carry, so raw weights can be recovered."""
    if count < 1:
        raise SpecError(f"probes={count}: the number of probe inputs must be >= 1 (0 turns probes off)")
    layouts = set(members.layouts)
    if len(layouts) != 1:
        raise SpecError(f"{zoo.path}: probe features need members of one layout; these have {len(layouts)}")
    for architecture in members.architectures:
        ProbeFeatures.check(architecture)
    shift, scale = normalizer.vectors(members.layouts[0])
    return {
        "architectures": members.architectures,
        "points": _points(zoo, int(members.indices[0]), members.layouts[0], count, seed).tolist(),
        "shift": shift.tolist(),
        "scale": scale.tolist(),
    }


def _points(zoo: ZooStore, member: int, layout, count: int, seed: int) -> Tensor:
    """``count`` of the member's training inputs, seeded; standard normal inputs for a zoo
    without a task (an imported zoo)."""
    rng = np.random.default_rng(seed)
    try:
        x = torch.as_tensor(zoo.task_data(member).x_train, dtype=torch.float32)
    except StoreError:
        width = layout.dense_layers()[0][0].shape[1]
        return torch.from_numpy(rng.standard_normal((count, width)).astype(np.float32))
    x = x.reshape(len(x), -1)
    return x[np.sort(rng.choice(len(x), size=min(count, len(x)), replace=False))]


class ProbeFeatures(nn.Module):
    """``[B, >= P]`` normalized flat members -> ``[B, N, S]`` standardized neuron values on ``S`` probes."""

    def __init__(self, info: dict[str, Any]) -> None:
        super().__init__()
        self.keys = [architecture_key(a) for a in info["architectures"]]
        self.layout = archs.describe(info["architectures"][0])[1]
        self.nets = [BatchedNet(a, self.check(a), self.layout) for a in info["architectures"]]
        self.register_buffer("points", torch.tensor(info["points"], dtype=torch.float32))
        self.register_buffer("shift", torch.tensor(info["shift"], dtype=torch.float32))
        self.register_buffer("scale", torch.tensor(info["scale"], dtype=torch.float32))
        dense = self.layout.dense_layers()
        self.sizes = [dense[0][0].shape[1]] + [w.shape[0] for w, _ in dense]
        self.register_buffer("mean", torch.zeros(len(self.sizes)))
        self.register_buffer("std", torch.ones(len(self.sizes)))

    @property
    def count(self) -> int:
        return self.points.shape[0]

    @staticmethod
    def check(architecture: dict) -> nn.Sequential:
        """The module of an MLP architecture, or SpecError naming the first other layer."""
        module = archs.build_module(architecture)
        for i, m in enumerate(module.children()):
            if not isinstance(m, (nn.Linear, *_ELEMENTWISE)):
                raise SpecError(
                    f"probe features take MLPs (Linear layers and elementwise activations); layer {i} of this "
                    f"architecture is {m.__class__.__name__}: train without probes"
                )
        return module

    def which(self, members: ZooMembers, source: str = "members") -> Tensor:
        """Each member's index into the architectures the probes were built for, or SpecError."""
        known = {k: i for i, k in enumerate(self.keys)}
        if members.architecture_ids is None:
            raise SpecError(f"{source}: probe features need each member's architecture (read with load_members)")
        lookup = []
        for a in members.architectures:
            if architecture_key(a) not in known:
                raise SpecError(f"{source}: a member architecture the probes were not built for: {a}")
            lookup.append(known[architecture_key(a)])
        return torch.tensor(lookup, dtype=torch.long)[members.architecture_ids]

    @torch.no_grad()
    def raw(self, flat: Tensor, which: Tensor) -> list[Tensor]:
        """Un-standardized neuron values per layer, each ``[B, S, n_k]``, from normalized ``flat``;
        member ``b`` runs with the activations of architecture ``which[b]``."""
        params = self.layout.unflatten(flat[:, : self.layout.size] * self.scale + self.shift)
        values = [self.points.expand(len(flat), *self.points.shape)]
        values += [flat.new_empty(len(flat), self.count, n) for n in self.sizes[1:]]
        for a in which.unique().tolist():
            rows = (which == a).nonzero().squeeze(1).to(flat.device)
            trace: list[Tensor] = []  # each dense layer's values, [members, n_k, S]
            self.nets[a].shared({n: t[rows] for n, t in params.items()}, self.points, trace=trace)
            for k, v in enumerate(trace, start=1):
                values[k][rows] = v.transpose(1, 2)
        return values

    def values(self, members: ZooMembers) -> Tensor:
        """Un-standardized ``[B, N, S]`` of ``members``, what :meth:`standardize` takes."""
        return torch.cat([v.transpose(1, 2) for v in self.raw(members.flat, self.which(members))], dim=1)

    def standardize(self, values: Tensor) -> Tensor:
        """``[B, N, S]`` values with each layer's training mean and std taken out."""
        sizes = torch.tensor(self.sizes, device=values.device)
        mean, std = (t.repeat_interleave(sizes)[:, None] for t in (self.mean, self.std))
        return (values - mean) / std

    def fit(self, flat: Tensor, which: Tensor) -> None:
        """Per-layer mean and std of the neuron values of the training members ``flat``."""
        for k, v in enumerate(self.raw(flat, which)):
            self.mean[k] = v.mean()
            self.std[k] = v.std().clamp_min(1e-6) if v.numel() > 1 else 1.0

    def forward(self, flat: Tensor, which: Tensor) -> Tensor:
        """Standardized ``[B, N, S]`` of normalized ``flat``, member ``b`` of architecture ``which[b]``."""
        return self.standardize(torch.cat([v.transpose(1, 2) for v in self.raw(flat, which)], dim=1))

    def layers(self, feats: Tensor) -> list[Tensor]:
        """``forward``'s output split per layer: ``[B, n_k, S]`` each."""
        return list(torch.split(feats, self.sizes, dim=1))

    def __repr__(self) -> str:
        return f"{self.__class__.__name__}(probes={self.count}, neurons={self.sizes}, architectures={len(self.keys)})"
