"""Training and evaluation of metanetworks on a zoo, and runs saved as safetensors + JSON.

``train_metanet`` fits any model of :data:`~weightzoo.metanet.models.MODEL_KINDS` on a task
(``predict:<column>`` or ``classify:<column>``) with validation-based early stopping and
returns a :class:`MetanetRun`; ``MetanetRun.save`` writes ``model.safetensors`` and
``config.json`` (architecture, input description, normalization statistics, task, split,
scores) and ``load_run`` reads them back without unpickling anything.
"""

from __future__ import annotations

import copy
import json
import math
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from huggingface_hub import ModelHubMixin
from torch import Tensor
from torch.nn import functional as F

from ..errors import SpecError, StoreError
from ..zoo.hub import digest
from ..zoo.store import ZooStore, open_zoo
from .data import MetanetTask, Normalizer, SplitSpec, ZooMembers, load_members
from .models import Metanet, build_metanet, model_kind

RUN_FORMAT = "weightzoo-metanet"
RUN_VERSION = 1
WEIGHTS_FILE = "model.safetensors"
CONFIG_FILE = "config.json"


@dataclass
class TrainOptions:
    """Optimization budget and early stopping (validation loss, ``patience`` epochs)."""

    epochs: int = 100
    batch_size: int = 64
    lr: float = 1e-3
    weight_decay: float = 1e-5
    patience: int = 20
    seed: int = 0
    clip_grad: float = 10.0
    device: str = "cpu"


@dataclass
class History:
    """What happened during training (kept in ``config.json``)."""

    epochs_run: int = 0
    best_epoch: int = 0
    best_val_loss: float = math.inf
    seconds: float = 0.0
    members_per_s: float = 0.0  # training throughput, forward + backward
    val_loss: list[float] = field(default_factory=list)


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
    ModelHubMixin,
    library_name="weightzoo",
    tags=["weight-space-learning", "metanetwork", "weightzoo"],
):
    """A trained metanetwork with everything needed to use it on another zoo of its kind.

    Through huggingface_hub's ModelHubMixin a run is a Hub model: ``save_pretrained(dir)`` writes
    what :meth:`save` writes plus a model card, ``push_to_hub(repo_id)`` uploads it and
    ``MetanetRun.from_pretrained(repo_id_or_dir)`` reads it back (checksum-verified).
    """

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
        zoo = _open(zoo)
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
            self.model(_to(members.subset(torch.arange(s, min(s + batch_size, len(members)))), device)).cpu()
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
        """Write ``model.safetensors`` and ``config.json`` (with the weights' sha256) into ``run_dir``."""
        from safetensors.torch import save_file

        run_dir = Path(run_dir)
        run_dir.mkdir(parents=True, exist_ok=True)
        weights = run_dir / WEIGHTS_FILE
        state = {k: v.detach().cpu().contiguous() for k, v in self.model.state_dict().items()}
        save_file(state, str(weights), metadata={"format": RUN_FORMAT})
        self.config["weights_sha256"] = digest(weights).sha256
        tmp = run_dir / (CONFIG_FILE + ".tmp")
        tmp.write_text(json.dumps(_json_safe(self.config), indent=2, allow_nan=False))
        tmp.replace(run_dir / CONFIG_FILE)
        return run_dir

    # -- the Hub (huggingface_hub.ModelHubMixin)
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
    ) -> MetanetRun:
        from .hub import run_folder

        folder = run_folder(model_id, revision, cache_dir, force_download, local_files_only, token)
        return load_run(folder, device=device)

    def generate_model_card(self, *args: Any, **kwargs: Any):
        from .hub import model_card

        return model_card(self, repo_id=kwargs.get("repo_id"))


def load_run(run_dir: str | os.PathLike, device: str = "cpu") -> MetanetRun:
    """Read a run saved by :meth:`MetanetRun.save`; tampered or missing files raise StoreError."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    run_dir = Path(run_dir)
    config_path, weights = run_dir / CONFIG_FILE, run_dir / WEIGHTS_FILE
    for path in (config_path, weights):
        if not path.is_file():
            raise StoreError(f"{path}: missing; a metanet run directory holds {CONFIG_FILE} and {WEIGHTS_FILE}")
    try:
        config = json.loads(config_path.read_text())
    except json.JSONDecodeError as exc:
        raise StoreError(f"{config_path}: not valid JSON ({exc.msg} at line {exc.lineno})") from None
    if not isinstance(config, dict) or config.get("format") != RUN_FORMAT:
        raise StoreError(f"{config_path}: not a weightzoo metanet run (format should be {RUN_FORMAT!r})")
    if config.get("weights_sha256") != digest(weights).sha256:
        raise StoreError(f"{weights}: checksum differs from {CONFIG_FILE}; the weights were changed or damaged")
    task = MetanetTask.from_dict(config["task"])
    model = build_metanet(config["model"], config["model_args"], config["input"], task.out_features)
    try:
        state = load_file(str(weights))
        model.load_state_dict(state, strict=True)
    except (SafetensorError, RuntimeError) as exc:
        first = str(exc).strip().splitlines()[0]
        raise StoreError(f"{weights}: does not fit the model in {CONFIG_FILE} ({first})") from None
    return MetanetRun(model.to(device).eval(), config)


# --------------------------------------------------------------------------- training


def train_metanet(
    zoo: ZooStore | str | os.PathLike,
    task: str | MetanetTask,
    model: str,
    out: str | os.PathLike | None = None,
    *,
    model_args: dict[str, Any] | None = None,
    options: TrainOptions | None = None,
    split: SplitSpec | None = None,
    epoch: int = -1,
    progress: bool = False,
) -> MetanetRun:
    """Train a metanetwork of kind ``model`` on ``task`` and score it on val and test.

    The best epoch by validation loss is kept. With ``out`` the run is saved there.
    """
    zoo = _open(zoo)
    options, split, model_args = options or TrainOptions(), split or SplitSpec(), dict(model_args or {})
    kind = model_kind(model)
    task = (MetanetTask.parse(task, epoch) if isinstance(task, str) else task).with_classes(zoo)
    parts = split.indices(zoo)
    for name in ("train", "val"):
        if len(parts[name]) == 0:
            raise SpecError(f"{zoo.path}: the {name} split is empty ({len(zoo)} members); use a bigger zoo")
    raw = {name: load_members(zoo, idx, task, task.epoch) for name, idx in parts.items() if len(idx)}
    info = kind.describe(raw["train"], str(zoo.path))
    normalizer = Normalizer.fit(raw["train"])
    target = _target_stats(task, raw["train"].targets)

    torch.manual_seed(options.seed)
    net = build_metanet(model, model_args, info, task.out_features)
    data = {name: net.prepare(normalizer.apply(m)) for name, m in raw.items()}
    net.fit_inputs(data["train"])
    net.to(options.device)
    history = _fit(net, task, target, data["train"], data["val"], options, progress)

    config = {
        "format": RUN_FORMAT,
        "version": RUN_VERSION,
        "model": model,
        "model_args": {**kind.defaults, **model_args},
        "input": info,
        "task": task.to_dict(),
        "split": split.to_dict(),
        "normalization": normalizer.to_dict(),
        "target": target,
        "options": asdict(options),
        "history": asdict(history),
        "zoo": {
            "path": str(zoo.path),
            "members": len(zoo),
            "name": zoo.name,
            "architecture": zoo.architecture,
        },
    }
    run = MetanetRun(net.eval(), config)
    config["scores"] = {name: score_members(run, m) for name, m in data.items()}
    if out is not None:
        run.save(out)
    return run


def score_members(run: MetanetRun, members: ZooMembers) -> dict[str, float]:
    """Scores of ``run`` on normalized members with targets."""
    out = run.predict_members(members)
    pred = out.argmax(1).numpy() if run.task.kind == "classification" else out.numpy()
    return score(run.task, pred, members.targets.numpy())


def _fit(
    net: Metanet,
    task: MetanetTask,
    target: dict[str, float],
    train: ZooMembers,
    val: ZooMembers,
    options: TrainOptions,
    progress: bool,
) -> History:
    from tqdm.auto import tqdm

    device = torch.device(options.device)
    opt = torch.optim.AdamW(net.parameters(), lr=options.lr, weight_decay=options.weight_decay)
    gen = torch.Generator().manual_seed(options.seed)
    history, best_state, seen, busy = History(), copy.deepcopy(net.state_dict()), 0, 0.0
    start = time.perf_counter()
    bar = tqdm(range(1, options.epochs + 1), desc=f"train {net.kind}", disable=not progress, unit="epoch")
    for epoch in bar:
        net.train()
        t0 = time.perf_counter()
        for pos in torch.randperm(len(train), generator=gen).split(options.batch_size):
            batch = _to(train.subset(pos), device)
            loss = _loss(task, target, net(batch), batch.targets)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            if options.clip_grad:
                torch.nn.utils.clip_grad_norm_(net.parameters(), options.clip_grad)
            opt.step()
            seen += len(pos)
        busy += time.perf_counter() - t0
        val_loss = _evaluate_loss(net, task, target, val, options.batch_size, device)
        history.val_loss.append(val_loss)
        history.epochs_run = epoch
        if val_loss < history.best_val_loss:
            history.best_val_loss, history.best_epoch = val_loss, epoch
            best_state = copy.deepcopy(net.state_dict())
        bar.set_postfix(val_loss=f"{val_loss:.4f}", best=history.best_epoch)
        if epoch - history.best_epoch >= options.patience:
            break
    net.load_state_dict(best_state)
    history.seconds = time.perf_counter() - start
    history.members_per_s = seen / busy if busy > 0 else 0.0
    return history


def _loss(task: MetanetTask, target: dict[str, float], out: Tensor, y: Tensor) -> Tensor:
    if task.kind == "classification":
        return F.cross_entropy(out, y)
    return F.mse_loss(out[:, 0], (y - target["mean"]) / target["std"])


@torch.no_grad()
def _evaluate_loss(net, task, target, members: ZooMembers, batch_size: int, device) -> float:
    net.eval()
    total = 0.0
    for pos in torch.arange(len(members)).split(batch_size):
        batch = _to(members.subset(pos), device)
        total += _loss(task, target, net(batch), batch.targets).item() * len(pos)
    return total / len(members)


def _target_stats(task: MetanetTask, y: Tensor) -> dict[str, float]:
    if task.kind == "classification":
        return {"mean": 0.0, "std": 1.0}
    std = float(y.std(unbiased=False))
    return {"mean": float(y.mean()), "std": std if std > 1e-8 else 1.0}


def _to(members: ZooMembers, device) -> ZooMembers:
    return members.map(lambda t: t.to(device))


def check_device(device: str) -> str:
    """``device`` if torch can use it, else SpecError saying what is available."""
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise SpecError(f"--device {device}: no CUDA device is available here; use --device cpu")
    try:
        torch.device(device)
    except RuntimeError:
        raise SpecError(f"--device {device!r} is not a torch device (cpu, cuda, cuda:1, ...)") from None
    return device


def _json_safe(value: Any) -> Any:
    """NaN/inf become None so config.json stays standard JSON."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_json_safe(v) for v in value]
    return value


def _open(zoo: ZooStore | str | os.PathLike) -> ZooStore:
    return zoo if isinstance(zoo, ZooStore) else open_zoo(zoo)
