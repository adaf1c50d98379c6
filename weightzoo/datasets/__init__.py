"""Datasets OF weights: zoo members served as WeightSpace batches or parameter graphs."""

from .splits import group_keys, split_indices
from .weights import ChunkShuffleSampler, Prebatched, WeightDataset, collate


def __getattr__(name: str):
    if name == "GraphDataset":  # imports torch_geometric: only when asked for
        from .graphs import GraphDataset

        return GraphDataset
    raise AttributeError(name)


__all__ = [
    "WeightDataset",
    "GraphDataset",
    "ChunkShuffleSampler",
    "Prebatched",
    "collate",
    "split_indices",
    "group_keys",
]
