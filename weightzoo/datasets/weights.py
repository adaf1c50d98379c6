"""WeightDataset: the members of a zoo as WeightSpace samples with targets.

The read path avoids per-member I/O: a zoo (split) that fits in ``memory_limit`` is read once
with whole-chunk reads and served from RAM; a larger one is streamed chunk by chunk through a
small cache, with :class:`ChunkShuffleSampler` shuffling within a buffer of chunks. Batches are
gathered in one indexing operation (``__getitems__``), not member by member.
"""

from __future__ import annotations

import os
from collections import OrderedDict
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import DataLoader, Dataset, Sampler

from ..errors import SpecError
from ..weightspace import WeightSpace
from ..zoo.opener import open_zoo
from ..zoo.store import ZooStore
from .splits import select_members

Transform = Callable[[WeightSpace], WeightSpace]  # or a seeded augmentation (see WeightDataset)


@dataclass
class Prebatched:
    """A batch already gathered by ``WeightDataset.__getitems__``; ``collate`` passes it on."""

    weights: WeightSpace
    target: Tensor | None


def collate(samples: Sequence[tuple[WeightSpace, Tensor]] | Sequence[WeightSpace] | Prebatched):
    """Batch samples into ``(WeightSpace, targets)`` (or a WeightSpace when there is no target)."""
    if isinstance(samples, Prebatched):
        return samples.weights if samples.target is None else (samples.weights, samples.target)
    if isinstance(samples[0], WeightSpace):
        return WeightSpace.collate(samples)
    weights, targets = zip(*samples)
    return WeightSpace.collate(weights), torch.stack(targets)


class _ChunkReader:
    """Reads parameter rows of one checkpoint whole chunk at a time, keeping recent chunks."""

    def __init__(self, zoo: ZooStore, epoch_index: int, cache_chunks: int) -> None:
        self.zoo, self.epoch_index, self.cache_chunks = zoo, epoch_index, cache_chunks
        self.chunk = zoo.chunk_members
        self.cache: OrderedDict[int, np.ndarray] = OrderedDict()

    def __getstate__(self) -> dict:
        return self.__dict__ | {"cache": OrderedDict()}

    def _load(self, c: int) -> np.ndarray:
        if c in self.cache:
            self.cache.move_to_end(c)
            return self.cache[c]
        block = self.zoo.params_chunk(c, self.epoch_index)
        self.cache[c] = block
        while len(self.cache) > self.cache_chunks:
            self.cache.popitem(last=False)
        return block

    def read(self, rows: np.ndarray) -> np.ndarray:
        out = np.empty((len(rows), self.zoo.layout.size), dtype=np.float32)
        chunk_ids = rows // self.chunk
        for c in np.unique(chunk_ids):
            hit = chunk_ids == c
            out[hit] = self._load(int(c))[rows[hit] - c * self.chunk]
        return out


def load_targets(
    zoo: ZooStore, indices: np.ndarray, target: str | Sequence[str] | None, epoch: int
) -> tuple[Tensor | None, list[str] | None]:
    """Targets of members: metrics (at ``epoch``) or hyperparameter columns; string columns
    become class indices over the whole zoo's values (returned as the class list)."""
    if target is None:
        return None, None
    names = [target] if isinstance(target, str) else list(target)
    columns, classes = [], None
    for name in names:
        values = zoo.values(name, indices, epoch, what="target")
        if values.dtype == object:  # categorical: class indices over the whole zoo's values
            classes = sorted({str(v) for v in zoo.column(name)})
            lookup = {c: i for i, c in enumerate(classes)}
            columns.append(torch.tensor([lookup[str(v)] for v in values], dtype=torch.long))
        else:
            columns.append(torch.as_tensor(values.astype(np.float32)))
    if len(columns) == 1:
        return columns[0], classes
    return torch.stack([c.float() for c in columns], dim=1), None


def augment_batch(
    augmenter: Any, flat: Tensor, target: Tensor | None, members: np.ndarray
) -> tuple[Tensor, Tensor | None]:
    """A batch of zoo members ``members`` through a seeded augmentation, its generator drawn from
    the members (so any loader worker draws the same)."""
    return augmenter.flat(flat, target, augmenter.generator(members.tolist()), augmenter.groups(members))


class WeightDataset(Dataset):
    """Members of a zoo at one checkpoint, with optional targets and a deterministic split.

    Args:
        zoo: a ZooStore or a path to one (opened read-only).
        target: a metric (taken at ``epoch``) or hyperparameter column, or a list of them;
            string columns become class indices (``self.classes``).
        epoch: checkpoint to serve (negative counts from the last; otherwise the epoch number).
        split: ``"train"``, ``"val"``, ``"test"`` or None for all members.
        fractions, seed: how splits are drawn; ``group_by`` keeps members that share the
            value(s) of these columns on one side of every split.
        transform: applied to each gathered batch: a callable ``ws -> ws``, or a seeded weight-space
            augmentation (``weightzoo.metanet.augment.parse(...).bind(zoo)``), which gets a generator
            drawn from the batch's positions and the epoch (:meth:`set_epoch`) and may mix targets.
        in_memory: hold the parameters in RAM (default: when they fit in ``memory_limit`` bytes).
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
        transform: Transform | None = None,
        in_memory: bool | None = None,
        memory_limit: int = 2 << 30,
        cache_chunks: int = 8,
    ) -> None:
        self.zoo = open_zoo(zoo)
        if self.zoo.mixed:
            raise SpecError(
                f"{self.zoo.path}: members have different layouts; WeightDataset serves one layout "
                "(build one zoo per architecture, or use weightzoo.datasets.GraphDataset)"
            )
        self.layout, self.perm_spec = self.zoo.layout, self.zoo.perm_spec
        self.epoch, self.transform = epoch, transform
        epoch_index = self.zoo.epoch_index(epoch)
        self.indices = select_members(self.zoo, split, fractions, seed, group_by)
        self.rows = self.zoo.rows(self.indices)
        self.targets, self.classes = load_targets(self.zoo, self.indices, target, epoch)
        nbytes = len(self.rows) * self.layout.size * 4
        self.in_memory = nbytes <= memory_limit if in_memory is None else in_memory
        self._flat: Tensor | None = None
        self._reader: _ChunkReader | None = None
        if self.in_memory:
            self._flat = self.zoo.params(self.indices, epoch)
        else:
            self._reader = _ChunkReader(self.zoo, epoch_index, cache_chunks)

    # ------------------------------------------------------------------ setup
    # ----------------------------------------------------------------- access
    def __len__(self) -> int:
        return len(self.indices)

    def flat(self, positions: Sequence[int] | np.ndarray) -> Tensor:
        """Flat parameters ``[n, P]`` of dataset positions."""
        pos = np.asarray(positions, dtype=np.int64)
        if self._flat is not None:
            return self._flat[torch.from_numpy(pos)]
        return torch.from_numpy(self._reader.read(self.rows[pos]))

    def _batch(self, positions) -> Prebatched:
        flat = self.flat(positions)
        target = None if self.targets is None else self.targets[torch.as_tensor(positions, dtype=torch.long)]
        seeded = getattr(self.transform, "seeded", False)
        if seeded:
            flat, target = augment_batch(self.transform, flat, target, self.indices[np.asarray(positions)])
        ws = WeightSpace.from_flat(flat, self.layout)
        if self.transform is not None and not seeded:
            ws = self.transform(ws)
        return Prebatched(ws, target)

    def set_epoch(self, epoch: int) -> None:
        """The epoch a seeded augmentation draws for (set before each epoch's loader iteration)."""
        if hasattr(self.transform, "set_epoch"):
            self.transform.set_epoch(epoch)

    def __getitem__(self, i: int):
        b = self._batch([int(i)])
        return b.weights if b.target is None else (b.weights, b.target[0])

    def __getitems__(self, positions: list[int]) -> Prebatched:
        return self._batch(positions)

    def loader(self, batch_size: int = 256, shuffle: bool = True, *, seed: int = 0, **kwargs: Any) -> DataLoader:
        """A DataLoader with weightzoo's collate; shuffles within chunk buffers when streaming."""
        sampler = None
        if shuffle and not self.in_memory:
            sampler = ChunkShuffleSampler(self, seed=seed)
        elif shuffle:
            kwargs.setdefault("generator", torch.Generator().manual_seed(seed))
        return DataLoader(
            self,
            batch_size=batch_size,
            shuffle=shuffle and sampler is None,
            sampler=sampler,
            collate_fn=collate,
            **kwargs,
        )

    def __repr__(self) -> str:
        mode = "in memory" if self.in_memory else "streaming"
        return f"WeightDataset({str(self.zoo.path)!r}, members={len(self)}, params={self.layout.size}, {mode})"


class ChunkShuffleSampler(Sampler[int]):
    """Shuffles chunk order, then members within buffers of ``buffer_chunks`` chunks, so a
    streamed epoch reads each chunk once while batches still mix many chunks."""

    def __init__(self, dataset: WeightDataset, buffer_chunks: int = 8, seed: int = 0) -> None:
        self.buffer_chunks, self.seed, self.epoch = buffer_chunks, seed, 0
        chunk_ids = dataset.rows // dataset.zoo.chunk_members
        self.by_chunk = [np.flatnonzero(chunk_ids == c) for c in np.unique(chunk_ids)]
        self.n = len(dataset)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return self.n

    def __iter__(self) -> Iterator[int]:
        rng = np.random.default_rng((self.seed, self.epoch))
        self.epoch += 1
        order = rng.permutation(len(self.by_chunk))
        for start in range(0, len(order), self.buffer_chunks):
            buffer = np.concatenate([self.by_chunk[c] for c in order[start : start + self.buffer_chunks]])
            yield from rng.permutation(buffer).tolist()
