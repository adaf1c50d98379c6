"""Metanet runs on the Hugging Face Hub: model repos holding ``model.safetensors``,
``config.json`` (model, input layout, task, normalization, scores) and a model card.

:class:`~weightzoo.metanet.train.MetanetRun` is a ``huggingface_hub.ModelHubMixin``; this module
holds what it delegates to (download, model card) and the two CLI jobs: push a run directory,
and import a run to write its predictions for a zoo's members.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from ..errors import SpecError
from ..zoo.hub import PushResult, ensure_repo, hub_errors, progress_bars, require_token
from ..zoo.store import open_zoo

if TYPE_CHECKING:
    import pandas as pd
    from huggingface_hub import ModelCard

    from .train import MetanetRun

RUN_FILES = ["config.json", "model.safetensors", "README.md"]


def run_folder(
    source: str,
    revision: str | None = None,
    cache_dir: str | Path | None = None,
    force_download: bool = False,
    local_files_only: bool = False,
    token: str | bool | None = None,
) -> Path:
    """A local folder with the run: ``source`` itself if it is a directory, else the model repo
    ``source`` downloaded into the Hugging Face cache."""
    if os.path.isdir(source):
        return Path(source)
    from huggingface_hub import snapshot_download

    with hub_errors("download metanet", source, revision), progress_bars(False):
        folder = snapshot_download(
            source, repo_type="model", revision=revision, allow_patterns=RUN_FILES, cache_dir=cache_dir,
            force_download=force_download, local_files_only=local_files_only, token=token,
        )  # fmt: skip
    return Path(folder)


def _metric_rows(scores: dict[str, dict[str, float]]) -> list[str]:
    names = sorted({k for split in scores.values() for k in split})
    rows = ["| split | " + " | ".join(names) + " |", "|---" * (len(names) + 1) + "|"]
    for split, values in scores.items():
        cells = " | ".join(f"{values[n]:.4f}" if isinstance(values.get(n), float) else "-" for n in names)
        rows.append(f"| {split} | {cells} |")
    return rows


def model_card(run: MetanetRun, repo_id: str | None = None) -> ModelCard:
    """The model card: the metanet, its task, the zoo it was trained on and its test metrics."""
    from huggingface_hub import ModelCard, ModelCardData

    cfg = run.config
    zoo = cfg.get("zoo", {})
    data = ModelCardData(
        library_name="weightzoo",
        license="apache-2.0",
        tags=sorted({"weight-space-learning", "metanetwork", "weightzoo", str(cfg["model"])}),
    )
    name = repo_id or "USER/REPO"
    task = cfg["task"]
    lines = [
        "---",
        data.to_yaml(),
        "---",
        "",
        f"# {cfg['model']} metanetwork: {'predict' if task.get('kind') == 'regression' else 'classify'}:"
        f"{task.get('column', '')}",
        "",
        f"A `{cfg['model']}` metanetwork (weightzoo) that reads the weights of trained networks and "
        f"{'predicts' if task.get('kind') == 'regression' else 'classifies'} `{task.get('column', '')}`.",
        "",
        "## Training zoo",
        "",
        f"- zoo: `{zoo.get('name', '?')}` ({zoo.get('members', '?')} members, architecture "
        f"`{(zoo.get('architecture') or {}).get('family', 'custom')}`)",
        f"- split: {cfg.get('split')}",
        f"- model arguments: `{cfg.get('model_args')}`",
        "",
        "## Metrics",
        "",
        *_metric_rows(cfg.get("scores", {})),
        "",
        "## Use it",
        "",
        "```python",
        "from weightzoo import open_zoo",
        "from weightzoo.metanet import MetanetRun",
        "",
        f'run = MetanetRun.from_pretrained("{name}")',
        'predictions = run.predict(open_zoo("zoo.zarr"))',
        "```",
        "",
        f"or `weightzoo metanet import {name} --zoo zoo.zarr --out predictions.csv`.",
        "",
    ]
    return ModelCard("\n".join(lines))


def push_run(
    run_dir: str | os.PathLike,
    repo_id: str,
    *,
    private: bool = False,
    revision: str | None = None,
    message: str | None = None,
    token: str | None = None,
) -> PushResult:
    """Upload a saved run (checked first) as the model repo ``repo_id`` with a model card."""
    from huggingface_hub import HfApi

    from .train import load_run

    run = load_run(run_dir)
    token = require_token(token, "push", repo_id)
    branch = revision or "main"
    with hub_errors("push", repo_id, revision):
        api = HfApi(token=token)
        ensure_repo(api, repo_id, "model", private, revision)
        before = _head(api, repo_id, branch)
        info = run.push_to_hub(
            repo_id,
            commit_message=message or f"weightzoo: push {run.config['model']} metanet",
            private=private,
            token=token,
            branch=branch,
            model_card_kwargs={"repo_id": repo_id},
        )
    changed = info.oid != before
    return PushResult(repo_id, branch, commits=[info.oid] if changed else [], uploaded=RUN_FILES if changed else [],
                      url=info.commit_url)  # fmt: skip


def _head(api, repo_id: str, branch: str) -> str | None:
    """The branch's head commit (one repo-info request, not the history)."""
    return api.repo_info(repo_id, repo_type="model", revision=branch).sha


def import_predictions(
    source: str,
    zoo: str | os.PathLike,
    out: str | os.PathLike,
    *,
    revision: str | None = None,
    token: str | None = None,
    device: str = "cpu",
) -> pd.DataFrame:
    """Load a metanet (repo id or run directory), predict every member of ``zoo`` and write the
    table (member, prediction, and the zoo's own value of the target when it has one) to ``out``
    as CSV."""
    import pandas as pd

    from .train import MetanetRun

    out = Path(out)
    if out.suffix.lower() != ".csv":
        raise SpecError(f"{out}: predictions are written as CSV; name the file *.csv")
    run = MetanetRun.from_pretrained(source, revision=revision, token=token, device=device)
    with open_zoo(zoo) as store:
        prediction = run.predict(store, split="all")
        table = pd.DataFrame({"member": np.arange(len(store)), "prediction": prediction})
        column = run.task.column
        if column in store.hparam_names or column in store.metric_names:
            table[column] = store.values(column, None, run.task.epoch, what="target")
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".tmp")
    table.to_csv(tmp, index=False)
    tmp.replace(out)
    return table
