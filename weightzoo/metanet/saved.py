"""A saved model folder: ``model.safetensors`` + ``config.json`` vouching for it with the weights'
sha256, and the same folder fetched from a Hugging Face model repo.

Metanet runs and weight generators are both saved this way: nothing is pickled, the config is
written last (a folder with a config has complete weights), and a changed or damaged weights file
is refused on reading.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any, ClassVar

import torch
from huggingface_hub import ModelHubMixin
from torch import Tensor

from .._fs import staged
from ..errors import StoreError
from ..zoo.hub import digest, hub_errors, progress_bars

WEIGHTS_FILE = "model.safetensors"
CONFIG_FILE = "config.json"
SAVED_FILES = [CONFIG_FILE, WEIGHTS_FILE, "README.md"]


def save_folder(folder: str | os.PathLike, state: Mapping[str, Tensor], config: dict[str, Any], fmt: str) -> Path:
    """Write ``state`` and ``config`` (``format`` and ``weights_sha256`` set in it) into ``folder``,
    staged beside it and moved in with the config last; other files in ``folder`` are kept."""
    from safetensors.torch import save_file

    folder = Path(folder)
    tensors = {k: v.detach().cpu().contiguous() for k, v in state.items()}
    with staged(folder, overwrite=True, merge=_own_files, last=[CONFIG_FILE]) as tmp:
        save_file(tensors, str(tmp / WEIGHTS_FILE), metadata={"format": fmt})
        config["format"], config["weights_sha256"] = fmt, digest(tmp / WEIGHTS_FILE).sha256
        (tmp / CONFIG_FILE).write_text(json.dumps(json_safe(config), indent=2, allow_nan=False))
    return folder


def read_folder(folder: str | os.PathLike, fmt: str, what: str) -> tuple[dict[str, Any], dict[str, Tensor]]:
    """The config and tensors of a folder written by :func:`save_folder` with format ``fmt``
    (``what`` names it in errors); missing, foreign, changed or damaged files raise StoreError."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    folder = Path(folder)
    config_path, weights = folder / CONFIG_FILE, folder / WEIGHTS_FILE
    for path in (config_path, weights):
        if not path.is_file():
            raise StoreError(f"{path}: missing; a {what} directory holds {CONFIG_FILE} and {WEIGHTS_FILE}")
    try:
        config = json.loads(config_path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise StoreError(f"{config_path}: not valid JSON ({exc})") from None
    if not isinstance(config, dict) or config.get("format") != fmt:
        raise StoreError(f"{config_path}: not a weightzoo {what} (format should be {fmt!r})")
    if config.get("weights_sha256") != digest(weights).sha256:
        raise StoreError(f"{weights}: checksum differs from {CONFIG_FILE}; the weights were changed or damaged")
    try:
        state = load_file(str(weights))
    except SafetensorError as exc:
        raise StoreError(f"{weights}: not a readable safetensors file ({exc})") from None
    return config, state


def load_state(module: torch.nn.Module, state: Mapping[str, Tensor], folder: str | os.PathLike) -> None:
    """``module.load_state_dict(state)``, strictly; a mismatch is a one-line StoreError."""
    try:
        module.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        first = str(exc).strip().splitlines()[0]
        raise StoreError(f"{Path(folder) / WEIGHTS_FILE}: does not fit the model in {CONFIG_FILE} ({first})") from None


def hub_folder(
    source: str,
    revision: str | None = None,
    cache_dir: str | Path | None = None,
    force_download: bool = False,
    local_files_only: bool = False,
    token: str | bool | None = None,
    what: str = "metanet",
) -> Path:
    """A local folder with the saved model: ``source`` itself if it is a directory, else the model
    repo ``source`` downloaded into the Hugging Face cache."""
    if os.path.isdir(source):
        return Path(source)
    from huggingface_hub import snapshot_download

    with hub_errors(f"download {what}", source, revision), progress_bars(False):
        folder = snapshot_download(
            source, repo_type="model", revision=revision, allow_patterns=SAVED_FILES, cache_dir=cache_dir,
            force_download=force_download, local_files_only=local_files_only, token=token,
        )  # fmt: skip
    return Path(folder)


class SavedOnHub(ModelHubMixin):
    """huggingface_hub's ``ModelHubMixin`` for models saved by :func:`save_folder`: a subclass
    defines ``save(folder)`` and the classmethod ``load(folder, device)``; ``save_pretrained``,
    ``push_to_hub`` and ``from_pretrained`` (a folder or a repo id) then go through them."""

    hub_what: ClassVar[str] = "model"

    def _save_pretrained(self, save_directory: Path) -> None:
        self.save(save_directory)

    @classmethod
    def _from_pretrained(
        cls,
        *,
        model_id: str,
        revision: str | None,
        cache_dir: str | Path | None,
        force_download: bool,
        local_files_only: bool,
        token: str | bool | None,
        device: str = "cpu",
        **_: Any,
    ):
        folder = hub_folder(model_id, revision, cache_dir, force_download, local_files_only, token, cls.hub_what)
        return cls.load(folder, device=device)


def json_safe(value: Any) -> Any:
    """NaN/inf become None so config.json stays standard JSON."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [json_safe(v) for v in value]
    return value


def _own_files(folder: Path) -> list[Path]:
    """The files :func:`save_folder` writes: replaced by a new save, the rest of ``folder`` kept."""
    return [folder / WEIGHTS_FILE, folder / CONFIG_FILE]
