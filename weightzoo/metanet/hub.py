"""Metanet runs on the Hugging Face Hub, the two CLI jobs over :class:`~weightzoo.metanet.run.MetanetRun`'s
Hub methods: push a saved run as a model repo (weights, ``config.json``, model card), and import
a run to write its predictions for every member of a zoo.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from .._fs import ensure_writable, staged
from ..errors import SpecError
from ..zoo.hub import PushResult, ensure_repo, hub_errors, require_token
from ..zoo.opener import open_zoo
from ..zoo.store import ZooStore, opened
from .diffusion.generator import GENERATOR_FORMAT, WeightGenerator, load_generator
from .run import MetanetRun, load_run
from .saved import CONFIG_FILE, SAVED_FILES

if TYPE_CHECKING:
    import pandas as pd


def push_run(
    run_dir: str | os.PathLike,
    repo_id: str,
    *,
    private: bool = False,
    revision: str | None = None,
    message: str | None = None,
    token: str | None = None,
) -> PushResult:
    """Upload a saved metanet run or weight generator (checked first) as the model repo ``repo_id``
    with a model card."""
    from huggingface_hub import HfApi

    model = _load_saved(run_dir)
    what = f"{model.config['model']} metanet" if isinstance(model, MetanetRun) else "weight generator"
    token = require_token(token, "push", repo_id)
    branch = revision or "main"
    with hub_errors("push", repo_id, revision):
        api = HfApi(token=token)
        ensure_repo(api, repo_id, "model", private, revision)
        before = _head(api, repo_id, branch)
        info = model.push_to_hub(
            repo_id, commit_message=message or f"weightzoo: push {what}", private=private, token=token,
            branch=branch, model_card_kwargs={"repo_id": repo_id},
        )  # fmt: skip
    changed = info.oid != before
    return PushResult(repo_id, branch, commits=[info.oid] if changed else [], uploaded=SAVED_FILES if changed else [],
                      url=info.commit_url)  # fmt: skip


push_generator = push_run  # the same upload: the folder's config.json says what it holds


def _load_saved(folder: str | os.PathLike) -> MetanetRun | WeightGenerator:
    """The metanet run or generator saved in ``folder``, by its config's format (checked on loading)."""
    try:
        fmt = json.loads((Path(folder) / CONFIG_FILE).read_text()).get("format")
    except (OSError, ValueError, AttributeError):
        fmt = None
    return load_generator(folder) if fmt == GENERATOR_FORMAT else load_run(folder)


def _head(api, repo_id: str, branch: str) -> str | None:
    """The branch's head commit (one repo-info request, not the history)."""
    return api.repo_info(repo_id, repo_type="model", revision=branch).sha


def import_predictions(
    source: str,
    zoo: ZooStore | str | os.PathLike,
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

    out = Path(out)
    if out.suffix.lower() != ".csv":
        raise SpecError(f"{out}: predictions are written as CSV; name the file *.csv")
    ensure_writable(out)
    run = MetanetRun.from_pretrained(source, revision=revision, token=token, device=device)
    with opened(zoo, open_zoo) as store:
        prediction = run.predict(store, split="all")
        table = pd.DataFrame({"member": np.arange(len(store)), "prediction": prediction})
        column = run.task.column
        if column in store.hparam_names or column in store.metric_names:
            table[column] = store.values(column, None, run.task.epoch, what="target")
    with staged(out, overwrite=True) as tmp:
        table.to_csv(tmp, index=False)
    return table
