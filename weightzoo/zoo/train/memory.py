"""Memory planning: the device memory a training group needs, and the largest group that fits."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch

from .. import archs
from ..tasks import Task
from .dense import dense_blocks
from .network import compile_layers, shape_input

EVAL_CHUNK = 1024  # samples per member evaluated at once at checkpoints
EVAL_BYTES = 2 << 20  # the widest activation of one evaluation chunk: small tensors, no page faults
FAST_CHUNK_BYTES = 16 << 20  # the fast path's widest activation per chunk: reused buffers, so big is fine
AUTOGRAD_CHUNK_BYTES = 64 << 20  # the generic path's activations per chunk


def feature_sizes(arch: Mapping[str, Any], task: Task) -> list[int]:
    """Per-sample numel of the input and of every layer's output."""
    module = archs.build_module(arch).eval()
    h = shape_input(arch, task.x_train[:1], 1)
    sizes = [h.numel()]
    with torch.no_grad():
        for m in module:
            h = m(h)
            sizes.append(h.numel())
    return sizes


def chunk_members(fast: bool, batch_size: int, feature_sizes: Sequence[int]) -> int:
    """Members whose training step runs at once: activations sized for the cache (fast path) or a budget."""
    if fast:
        return max(1, FAST_CHUNK_BYTES // (4 * batch_size * max(feature_sizes)))
    return max(1, AUTOGRAD_CHUNK_BYTES // (4 * 3 * batch_size * sum(feature_sizes)))


@dataclass(frozen=True)
class MemoryModel:
    """Estimated device memory of a training group: per-member state, per-member activations of a
    training chunk (at most ``chunk`` members at once) and fixed costs (task data, evaluation)."""

    state: int
    activations: int
    chunk: int
    fixed: int

    def group_bytes(self, members: int) -> int:
        return members * self.state + min(members, self.chunk) * self.activations + self.fixed

    def largest_group(self, memory_bytes: int) -> int:
        """The largest group that fits ``memory_bytes`` (at least 1)."""
        within_chunk = (memory_bytes - self.fixed) // (self.state + self.activations)
        if within_chunk <= self.chunk:
            return max(1, within_chunk)
        return self.chunk + (memory_bytes - self.group_bytes(self.chunk)) // self.state


def memory_model(arch: Mapping[str, Any], task: Task, batch_size: int) -> MemoryModel:
    """The memory model of training ``arch`` on ``task`` with ``batch_size`` (see :class:`MemoryModel`)."""
    task = task.for_architecture(arch)  # inputs shaped as the first layer reads them (8x8 images for conv2d)
    module, layout, _ = archs.describe(arch)
    fast = dense_blocks(arch, compile_layers(arch, module, layout)) is not None
    feats = feature_sizes(arch, task)
    per_sample = sum(feats)
    # parameters, gradients, two moments, the update, per-element learning rate, weight decay, decay factor
    state = 4 * 8 * layout.size
    activations = 4 * batch_size * per_sample * (8 if fast else 3)  # buffers (fast) or saved tensors and grads
    eval_members = max(1, EVAL_BYTES // (4 * EVAL_CHUNK * max(feats)))
    evaluate = 4 * 3 * eval_members * min(EVAL_CHUNK, len(task.x_train)) * per_sample
    data = 4 * (task.x_train.numel() + task.x_test.numel() + task.y_train.numel() + task.y_test.numel())
    return MemoryModel(state, activations, chunk_members(fast, batch_size, feats), evaluate + data)


def group_size_for(arch: dict, task: Task, batch_size: int, memory_bytes: int) -> int:
    """The largest group (at least 1) whose parameters, gradients, optimizer state and activations
    fit in ``memory_bytes``; activations are per chunk of members, so mostly the state grows with G."""
    return memory_model(arch, task, int(batch_size)).largest_group(int(memory_bytes))
