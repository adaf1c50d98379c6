"""Hub failures as one-line HubErrors: huggingface_hub's exceptions and its HTTP transport's,
translated into what went wrong and what to do about it."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

from ...errors import HubError


@contextlib.contextmanager
def hub_errors(action: str, repo_id: str, revision: str | None = None) -> Iterator[None]:
    """Turn huggingface_hub and transport errors raised while ``action`` into one-line HubErrors."""
    try:
        yield
    except Exception as exc:
        error = translate(exc, f"{action} {repo_id}@{revision}" if revision else f"{action} {repo_id}", revision)
        if error is None:
            raise
        raise error from None


def translate(exc: BaseException, what: str, revision: str | None = None) -> HubError | None:
    """The one-line HubError for an exception of huggingface_hub or of its HTTP transport raised
    while doing ``what``; None for anything else."""
    from huggingface_hub import constants
    from huggingface_hub.errors import (
        HfHubHTTPError,
        HFValidationError,
        LocalEntryNotFoundError,
        OfflineModeIsEnabled,
        RepositoryNotFoundError,
        RevisionNotFoundError,
    )

    retry = "run the same command again (a push uploads only what is missing)"
    if isinstance(exc, OfflineModeIsEnabled | LocalEntryNotFoundError):
        if constants.HF_HUB_OFFLINE:
            return HubError(f"{what}: HF_HUB_OFFLINE=1 and it is not in the Hugging Face cache; unset HF_HUB_OFFLINE")
        if exc.__cause__ is not None:  # snapshot_download reports a failed lookup as "not cached"
            return translate(exc.__cause__, what, revision)
        return HubError(f"{what}: cannot reach {constants.ENDPOINT} ({_first_line(exc)})")
    if isinstance(exc, HFValidationError):
        return HubError(f"{what}: {_first_line(exc)}")
    if isinstance(exc, RevisionNotFoundError):
        return HubError(f"{what}: revision {revision or 'main'!r} not found; check its name")
    if isinstance(exc, RepositoryNotFoundError):  # also the Hub's 401 to anonymous requests for it
        return HubError(
            f"{what}: repository not found on {constants.ENDPOINT} (or private and your token cannot see it); "
            "check the repo id, or set HF_TOKEN"
        )
    if isinstance(exc, HfHubHTTPError):
        status = _status(exc)
        if status in (401, 403):
            return _auth_error(what, status)
        if status is not None and status >= 500:
            return HubError(
                f"{what}: the Hub answered {status} ({_first_line(exc)}); try again later "
                "(a push uploads only what is missing)"
            )
        return HubError(f"{what}: the Hub answered {status} ({_first_line(exc)})")
    if type(exc).__module__.split(".")[0] in ("httpx2", "httpx", "httpcore") or isinstance(exc, ConnectionError):
        return HubError(f"{what}: connection to the Hub failed ({type(exc).__name__}: {_first_line(exc)}); {retry}")
    if isinstance(exc, OSError):  # an incomplete download, a full disk
        return HubError(f"{what}: {type(exc).__name__}: {_first_line(exc)}; {retry}")
    return None


def _auth_error(what: str, status: int) -> HubError:
    refused = "rejected the token" if status == 401 else "refused access with this token"
    return HubError(
        f"{what}: the Hub {refused} ({status}); set HF_TOKEN to a token with write access or run `hf auth login`"
    )


def _status(exc: Exception) -> int | None:
    response = getattr(exc, "response", None)
    return getattr(response, "status_code", None)


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
