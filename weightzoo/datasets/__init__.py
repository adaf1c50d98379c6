"""Datasets OF weights: zoo members served as WeightSpace batches for weight-space learning."""

from .splits import group_keys, split_indices
from .weights import ChunkShuffleSampler, Prebatched, WeightDataset, collate

__all__ = ["WeightDataset", "ChunkShuffleSampler", "Prebatched", "collate", "split_indices", "group_keys"]
