"""A trained metanetwork as a saved run: ``model.safetensors`` + ``config.json``, predicting and
scoring on any zoo of the kind it was trained on, and a Hugging Face Hub model.

``MetanetRun.save`` writes the weights and the config (architecture, input description,
normalization statistics, task, split, scores and the weights' sha256); :func:`load_run` reads
them back without unpickling anything. Through huggingface_hub's ``ModelHubMixin`` a run is also
``save_pretrained`` / ``from_pretrained`` / ``push_to_hub``; :meth:`MetanetRun.save`,
:func:`load_run` and :func:`~weightzoo.metanet.hub.push_run` are the canonical names, the mixin
methods wrap them (adding a model card).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from ..zoo.opener import open_zoo
from ..zoo.store import ZooStore
from .card import model_card
from .data import MetanetTask, Normalizer, SplitSpec, ZooMembers, load_members
from .models import Metanet, build_metanet
from .saved import SAVED_FILES, SavedOnHub, load_state, read_folder, save_folder

RUN_FORMAT = "weightzoo-metanet"
RUN_VERSION = 1
RUN_FILES = SAVED_FILES


def score(task: MetanetTask, pred: np.ndarray, target: np.ndarray) -> dict[str, float]:
    """Kendall tau, R^2 and MSE for regression; accuracy for classification."""
    if task.kind == "classification":
        return {"accuracy": float(np.mean(pred == target))}
    from scipy.stats import kendalltau

    pred, target = pred.astype(np.float64), target.astype(np.float64)
    sst = float(np.sum((target - target.mean()) ** 2))
    sse = float(np.sum((target - pred) ** 2))
    tau = kendalltau(pred, target).statistic if len(pred) > 1 else float("nan")
    return {"kendall_tau": float(tau), "r2": 1.0 - sse / sst if sst > 0 else float("nan"), "mse": sse / len(pred)}


class MetanetRun(
    SavedOnHub,
    library_name="weightzoo",
    tags=["weight-space-learning", "metanetwork", "weightzoo"],
):
    """A trained metanetwork with everything needed to use it on another zoo of its kind.

    Through huggingface_hub's ModelHubMixin a run is a Hub model: ``save_pretrained(dir)`` writes
    what :meth:`save` writes plus a model card, ``push_to_hub(repo_id)`` uploads it and
    ``MetanetRun.from_pretrained(repo_id_or_dir)`` reads it back (checksum-verified).
    """

    hub_what = "metanet"

    def __init__(self, model: Metanet, config: dict[str, Any]) -> None:
        self.model, self.config = model, config

    def __repr__(self) -> str:
        task = self.config.get("task", {})
        return f"MetanetRun(model={self.config.get('model')!r}, {task.get('kind')}={task.get('column')!r})"

    @property
    def task(self) -> MetanetTask:
        return MetanetTask.from_dict(self.config["task"])

    @property
    def normalizer(self) -> Normalizer:
        return Normalizer.from_dict(self.config["normalization"])

    @property
    def split(self) -> SplitSpec:
        return SplitSpec.from_dict(self.config["split"])

    # -- prediction
    def members(
        self, zoo: ZooStore | str | os.PathLike, split: str | None = "test", targets: bool = True
    ) -> ZooMembers:
        """Members of ``split`` (the run's split rule; None or "all" for every member), normalized,
        with their targets unless ``targets`` is False (a zoo without the task's column)."""
        zoo = open_zoo(zoo)
        indices = self.split.select(zoo, split)
        members = load_members(zoo, indices, self.task if targets else None, self.task.epoch)
        self.model.check(members, str(zoo.path))
        return self.model.prepare(self.normalizer.apply(members))

    @torch.no_grad()
    def predict_members(self, members: ZooMembers, batch_size: int = 256) -> Tensor:
        """Raw model outputs ``[n, out]`` for normalized members, de-standardized for regression."""
        self.model.eval()
        device = next(self.model.parameters()).device
        outs = [
            self.model(members.subset(torch.arange(s, min(s + batch_size, len(members)))).to(device)).cpu()
            for s in range(0, len(members), batch_size)
        ]
        out = torch.cat(outs)
        if self.task.kind == "regression":
            out = out[:, 0] * self.config["target"]["std"] + self.config["target"]["mean"]
        return out

    def predict(self, zoo: ZooStore | str | os.PathLike, split: str | None = None) -> np.ndarray:
        """Predicted values (regression) or class names (classification) for a zoo's members."""
        out = self.predict_members(self.members(zoo, split, targets=False))
        if self.task.kind == "classification":
            return np.array(self.task.classes, dtype=object)[out.argmax(1).numpy()]
        return out.numpy()

    def evaluate(self, zoo: ZooStore | str | os.PathLike, split: str | None = "test") -> dict[str, float]:
        """Scores (see :func:`score`) on a split of ``zoo``."""
        members = self.members(zoo, split)
        return score_members(self, members) | {"members": len(members)}

    # -- persistence
    def save(self, run_dir: str | os.PathLike) -> Path:
        """Write ``model.safetensors`` and ``config.json`` (with the weights' sha256) into ``run_dir``,
        staged beside it and moved in with the config last; other files in ``run_dir`` are kept."""
        return save_folder(run_dir, self.model.state_dict(), self.config, RUN_FORMAT)

    @classmethod
    def load(cls, run_dir: str | os.PathLike, device: str = "cpu") -> MetanetRun:
        """The run saved in ``run_dir`` (see :func:`load_run`)."""
        return load_run(run_dir, device=device)

    def generate_model_card(self, *args: Any, **kwargs: Any):
        return model_card(self.config, repo_id=kwargs.get("repo_id"))


def load_run(run_dir: str | os.PathLike, device: str = "cpu") -> MetanetRun:
    """Read a run saved by :meth:`MetanetRun.save`; tampered or missing files raise StoreError."""
    config, state = read_folder(run_dir, RUN_FORMAT, "metanet run")
    task = MetanetTask.from_dict(config["task"])
    model = build_metanet(config["model"], config["model_args"], config["input"], task.out_features)
    load_state(model, state, run_dir)
    return MetanetRun(model.to(device).eval(), config)


def score_members(run: MetanetRun, members: ZooMembers) -> dict[str, float]:
    """Scores of ``run`` on normalized members with targets."""
    out = run.predict_members(members)
    pred = out.argmax(1).numpy() if run.task.kind == "classification" else out.numpy()
    return score(run.task, pred, members.targets.numpy())
