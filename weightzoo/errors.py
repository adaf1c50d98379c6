"""Errors a user can cause. Each message names the file or field, what is wrong and the fix."""

from __future__ import annotations


class WeightZooError(Exception):
    """Base class: the CLI prints the message as one line and exits with ``exit_code``."""

    exit_code = 2


class SpecError(WeightZooError):
    """A spec, architecture or layout description is invalid."""


class LayoutError(WeightZooError):
    """Parameters do not match a ParamLayout (missing names, wrong shapes or sizes)."""


class StoreError(WeightZooError):
    """A zoo store is missing, not a zoo, of the wrong format, or damaged."""


class WriteError(WeightZooError):
    """An output cannot be written: permission denied, a read-only or virtual filesystem, or a
    file where a folder must be."""


class ImportFormatError(WeightZooError):
    """A source in an external zoo format is malformed or incomplete."""


class HubError(WeightZooError):
    """A Hugging Face Hub operation failed: no token, a refused or missing repo, a lost
    connection, offline mode without a cached copy, or a download that fails its checksum."""


class MergeError(WeightZooError):
    """A merge or alignment request is invalid: an unknown method or parameter, a value out of
    range, models that do not share an architecture or a base."""
