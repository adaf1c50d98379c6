"""Zoos on the Hugging Face Hub: push a store as a dataset repo, pull it back verified.

One module per job: ``errors`` (huggingface_hub failures as one-line HubErrors), ``session``
(token, repo creation, progress bars), ``manifest`` (what a pull checks), ``card`` (the dataset
card), ``push`` and ``pull``. The metanet Hub code uses the same errors and session helpers.
"""

from .errors import hub_errors, translate
from .manifest import MANIFEST, FileDigest, digest
from .pull import HF_URL_PREFIX, open_hub_zoo, parse_hf_url, pull_zoo
from .push import PushResult, push_zoo
from .session import ensure_repo, progress_bars, require_token

__all__ = [
    "HF_URL_PREFIX",
    "MANIFEST",
    "FileDigest",
    "PushResult",
    "digest",
    "ensure_repo",
    "hub_errors",
    "open_hub_zoo",
    "parse_hf_url",
    "progress_bars",
    "pull_zoo",
    "push_zoo",
    "require_token",
    "translate",
]
