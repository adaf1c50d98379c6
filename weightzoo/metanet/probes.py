"""Probe features: every neuron's activations on a fixed set of inputs, as extra metanetwork inputs.

Kofinas et al. (2024, "Graph Neural Networks for Learning Equivariant Representations of Neural
Networks") add to each node of the parameter graph the values its neuron takes when the network
runs on a few probe inputs; on INR classification this carries most of the signal a metanetwork
finds. A neuron's probe values move with the neuron under every hidden-neuron permutation, so
GMN and DWSNet stay equivariant (and invariant after pooling) with them.

:class:`ProbeFeatures` runs a batch of members of one MLP architecture (Linear layers with
parameter-free elementwise modules between them: activations, dropout) on ``S`` inputs drawn once
from the zoo's task, and returns ``[B, N, S]`` for the ``N`` neurons in graph order (network
inputs, then each Linear's outputs), standardized per layer with statistics fit on the training
members. The probe inputs are fixed, not learned as in the paper, so they can be computed
without gradients and saved in the run's ``config.json``.
"""

from __future__ import annotations

import json
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from ..errors import SpecError, StoreError
from ..zoo import archs
from ..zoo.store import ZooStore
from .data import Normalizer, ZooMembers

_ELEMENTWISE = (*{cls for cls in archs.ACTIVATIONS.values()}, nn.Dropout)


def probe_input(zoo: ZooStore, members: ZooMembers, count: int, normalizer: Normalizer, seed: int = 0) -> dict:
    """The JSON a :class:`ProbeFeatures` is built from: the members' one architecture, ``count``
    probe inputs drawn (seeded) from the first member's training inputs (standard normal ones
    for a zoo without a task), and the normalization
    the metanetwork's inputs carry (so raw weights can be recovered)."""
    if count < 1:
        raise SpecError(f"probes={count}: the number of probe inputs must be >= 1 (0 turns probes off)")
    archs_seen = {_key(a) for a in zoo.member_architectures(members.indices)}
    if len(archs_seen) != 1:
        raise SpecError(
            f"{zoo.path}: probe features need members of one architecture; these have {len(archs_seen)} "
            "(e.g. a grid over activations): train without probes"
        )
    architecture = zoo.member_architecture(int(members.indices[0]))
    ProbeFeatures.check(architecture)
    shift, scale = normalizer.vectors(members.layouts[0])
    return {
        "architecture": architecture,
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


def _key(arch: dict) -> str:
    return json.dumps(arch, sort_keys=True)


class ProbeFeatures(nn.Module):
    """``[B, >= P]`` normalized flat members -> ``[B, N, S]`` standardized neuron values on ``S`` probes."""

    def __init__(self, info: dict[str, Any]) -> None:
        super().__init__()
        module, self.layout, _ = archs.describe(info["architecture"])
        self.steps = self.check(info["architecture"], module)
        self.register_buffer("points", torch.tensor(info["points"], dtype=torch.float32))
        self.register_buffer("shift", torch.tensor(info["shift"], dtype=torch.float32))
        self.register_buffer("scale", torch.tensor(info["scale"], dtype=torch.float32))
        sizes = [self.layout.dense_layers()[0][0].shape[1]] + [w.shape[0] for w, _ in self.layout.dense_layers()]
        self.sizes = sizes
        self.register_buffer("mean", torch.zeros(len(sizes)))
        self.register_buffer("std", torch.ones(len(sizes)))

    @property
    def count(self) -> int:
        return self.points.shape[0]

    @staticmethod
    def check(architecture: dict, module: nn.Module | None = None) -> list[nn.Module]:
        """The modules of an MLP architecture in order, or SpecError naming the first other layer."""
        module = archs.build_module(architecture) if module is None else module
        steps = list(module.children())
        for i, m in enumerate(steps):
            if not isinstance(m, (nn.Linear, *_ELEMENTWISE)):
                raise SpecError(
                    f"probe features take MLPs (Linear layers and elementwise activations); layer {i} of this "
                    f"architecture is {m.__class__.__name__}: train without probes"
                )
        return steps

    @torch.no_grad()
    def raw(self, flat: Tensor) -> list[Tensor]:
        """Un-standardized neuron values per layer, each ``[B, S, n_k]``, from normalized ``flat``."""
        size = self.layout.size
        weights = flat[:, :size] * self.scale + self.shift
        params = self.layout.unflatten(weights)
        h = self.points.expand(len(flat), *self.points.shape)
        values, dense = [h], iter(self.layout.dense_layers())
        for m in self.steps:
            if isinstance(m, nn.Linear):
                w, b = next(dense)
                h = h @ params[w.name].transpose(1, 2)
                h = h + params[b.name][:, None] if b is not None else h
                values.append(h)
            elif not isinstance(m, nn.Dropout):  # dropout is the identity in eval mode
                h = m(h)
                values[-1] = h  # a neuron's value is taken after its activation
        return values

    def fit(self, flat: Tensor) -> None:
        """Per-layer mean and std of the neuron values of the training members ``flat``."""
        for k, v in enumerate(self.raw(flat)):
            self.mean[k] = v.mean()
            self.std[k] = v.std().clamp_min(1e-6) if v.numel() > 1 else 1.0

    def forward(self, flat: Tensor) -> Tensor:
        parts = [((v - self.mean[k]) / self.std[k]).transpose(1, 2) for k, v in enumerate(self.raw(flat))]
        return torch.cat(parts, dim=1)  # [B, N, S]

    def layers(self, feats: Tensor) -> list[Tensor]:
        """``forward``'s output split per layer: ``[B, n_k, S]`` each."""
        return list(torch.split(feats, self.sizes, dim=1))

    def __repr__(self) -> str:
        return f"{self.__class__.__name__}(probes={self.count}, neurons={self.sizes})"
