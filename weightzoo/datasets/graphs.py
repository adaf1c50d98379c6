"""GraphDataset: zoo members as parameter graphs (PyG ``Batch``), for any mix of architectures.

Members are read once into memory; a batch of positions becomes one ``Batch`` built by
:func:`~weightzoo.paramgraph.build_graphs` (a gather per architecture, no per-member loop),
with targets in ``batch.y``. Unlike :class:`~weightzoo.datasets.WeightDataset` it serves zoos
whose members differ in depth, width, normalization or skip connections.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset
from torch_geometric.data import Batch

from ..paramgraph import build_graphs, feature_dims
from ..zoo.opener import open_zoo
from ..zoo.store import ZooStore
from .splits import select_members
from .weights import augment_batch, load_targets


class GraphDataset(Dataset):
    """Members of a zoo at one checkpoint as parameter graphs, with optional targets and split.

    Args mirror :class:`WeightDataset` (``zoo``, ``target``, ``epoch``, ``split``,
    ``fractions``, ``seed``, ``group_by``); ``node_dim``/``edge_dim`` fix the feature widths
    (default: the widest any member needs) and ``conv_mode`` is passed to the graph builder.
    ``transform`` is a seeded weight-space augmentation (``weightzoo.metanet.augment``) applied to
    each batch's weights (and targets, for MixUp) before the graphs are built.
    """

    def __init__(
        self,
        zoo: ZooStore | str | os.PathLike,
        target: str | Sequence[str] | None = None,
        epoch: int = -1,
        split: str | None = None,
        *,
        fractions: Sequence[float] = (0.8, 0.1, 0.1),
        seed: int = 0,
        group_by: str | Sequence[str] | None = None,
        node_dim: int | None = None,
        edge_dim: int | None = None,
        conv_mode: str = "vector",
        transform: Any = None,
    ) -> None:
        self.zoo = open_zoo(zoo)
        self.indices = select_members(self.zoo, split, fractions, seed, group_by)
        self.flat = self.zoo.params(self.indices, epoch)
        self.layouts, self.specs, ids = self.zoo.architecture_groups(self.indices)
        self.layout_ids = ids
        self._cache: dict = {}
        native = feature_dims(self.layouts, self.specs, conv_mode=conv_mode, cache=self._cache)
        self.node_dim, self.edge_dim = node_dim or native[0], edge_dim or native[1]
        self.conv_mode, self.transform = conv_mode, transform
        self.targets, self.classes = load_targets(self.zoo, self.indices, target, epoch)

    def __len__(self) -> int:
        return len(self.indices)

    def __getitems__(self, positions: list[int]) -> Batch:
        pos = np.asarray(positions, dtype=np.int64)
        flat = self.flat[torch.from_numpy(pos)]
        targets = None if self.targets is None else self.targets[torch.from_numpy(pos)]
        if self.transform is not None:
            flat, targets = augment_batch(self.transform, flat, targets, self.indices[pos])
        batch = build_graphs(
            flat,
            [self.layouts[i] for i in self.layout_ids[pos]],
            [self.specs[i] for i in self.layout_ids[pos]],
            node_dim=self.node_dim,
            edge_dim=self.edge_dim,
            cache=self._cache,
            conv_mode=self.conv_mode,
        )
        if targets is not None:
            batch.y = targets
        return batch

    def set_epoch(self, epoch: int) -> None:
        """The epoch the augmentation draws for (set before each epoch's loader iteration)."""
        if self.transform is not None:
            self.transform.set_epoch(epoch)

    def __getitem__(self, i: int) -> Batch:
        return self.__getitems__([int(i)])

    def loader(self, batch_size: int = 64, shuffle: bool = True, *, seed: int = 0, **kwargs: Any) -> DataLoader:
        """A DataLoader whose batches are PyG ``Batch`` objects built a whole batch at a time."""
        if shuffle:
            kwargs.setdefault("generator", torch.Generator().manual_seed(seed))
        return DataLoader(self, batch_size=batch_size, shuffle=shuffle, collate_fn=_passthrough, **kwargs)

    def __repr__(self) -> str:
        return (
            f"GraphDataset({str(self.zoo.path)!r}, members={len(self)}, architectures={len(self.layouts)}, "
            f"node_dim={self.node_dim}, edge_dim={self.edge_dim})"
        )


def _passthrough(batch: Batch) -> Batch:
    return batch
