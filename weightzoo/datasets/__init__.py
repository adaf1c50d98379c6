"""Datasets OF weights: zoo members served as WeightSpace batches or parameter graphs.

``GraphDataset`` imports PyTorch Geometric, so it is loaded on first use.
"""

from .._util.lazy import lazy_exports
from .splits import group_keys, split_indices
from .weights import ChunkShuffleSampler, Prebatched, WeightDataset, collate

__getattr__, __dir__ = lazy_exports(__name__, {"GraphDataset": ".graphs"})

__all__ = [
    "WeightDataset",
    "GraphDataset",
    "ChunkShuffleSampler",
    "Prebatched",
    "collate",
    "split_indices",
    "group_keys",
]
