"""What every Hub operation shares: the token to write with, the repo to write to, and
huggingface_hub's progress bars switched on or off for one transfer."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

from ...errors import HubError


def require_token(token: str | None, action: str, repo_id: str) -> str:
    """The token to write with: ``token``, ``HF_TOKEN`` or the huggingface_hub login."""
    from huggingface_hub import get_token

    token = token or get_token()
    if not token:
        raise HubError(f"{action} {repo_id}: no Hugging Face token; set HF_TOKEN or run `hf auth login`")
    return token


@contextlib.contextmanager
def progress_bars(show: bool) -> Iterator[None]:
    """huggingface_hub's progress bars on or off for the duration of a transfer."""
    from huggingface_hub.utils import are_progress_bars_disabled, disable_progress_bars, enable_progress_bars

    was_disabled = are_progress_bars_disabled()
    (enable_progress_bars if show else disable_progress_bars)()
    try:
        yield
    finally:
        (disable_progress_bars if was_disabled else enable_progress_bars)()


def ensure_repo(api, repo_id: str, repo_type: str, private: bool, revision: str | None) -> None:
    """Create the repo (and the branch ``revision``) unless they exist."""
    api.create_repo(repo_id, repo_type=repo_type, private=private, exist_ok=True)
    if revision:
        api.create_branch(repo_id, repo_type=repo_type, branch=revision, exist_ok=True)
