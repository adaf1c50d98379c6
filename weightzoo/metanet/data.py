"""What a metanetwork learns from: a task on a zoo, members in memory, input normalization.

``MetanetTask`` parses ``predict:<column>`` / ``classify:<column>``. ``ZooMembers`` holds the
flat parameters of a set of members (rows zero-padded in mixed zoos), one layout and
permutation spec per member, and targets. ``Normalizer`` standardizes parameters per
(role, layer), which scales whole tensors and so keeps every permutation symmetry.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, replace

import numpy as np
import torch
from torch import Tensor

from ..datasets.splits import member_splits, select_members
from ..errors import SpecError
from ..layout import ParamLayout
from ..symmetry import PermutationSpec
from ..zoo.store import ZooStore

TASK_KINDS = {"predict": "regression", "classify": "classification"}


@dataclass(frozen=True)
class MetanetTask:
    """Regression of a numeric column or classification of a column, read at one checkpoint."""

    kind: str  # "regression" | "classification"
    column: str
    epoch: int = -1
    classes: tuple[str, ...] = ()

    @classmethod
    def parse(cls, text: str, epoch: int = -1) -> MetanetTask:
        """``predict:<metric or numeric hparam>`` or ``classify:<column>``."""
        verb, sep, column = text.partition(":")
        if not sep or verb not in TASK_KINDS or not column:
            raise SpecError(f"--task {text!r}: write predict:<metric> (e.g. predict:test_acc) or classify:<column>")
        return cls(TASK_KINDS[verb], column, epoch)

    @property
    def spec(self) -> str:
        verb = "predict" if self.kind == "regression" else "classify"
        return f"{verb}:{self.column}"

    @property
    def out_features(self) -> int:
        return len(self.classes) if self.kind == "classification" else 1

    def with_classes(self, zoo: ZooStore) -> MetanetTask:
        """Fix the class list from the zoo's column (sorted string values), for classification."""
        if self.kind != "classification":
            return self
        values = zoo.values(self.column, None, self.epoch, what="task column")
        classes = tuple(sorted({_label(v) for v in values}))
        if len(classes) < 2:
            raise SpecError(f"{zoo.path}: column {self.column!r} has {len(classes)} distinct value(s); need >= 2")
        return MetanetTask(self.kind, self.column, self.epoch, classes)

    def targets(self, zoo: ZooStore, indices: np.ndarray) -> Tensor:
        """``[n]`` float targets (regression) or class indices (classification)."""
        values = zoo.values(self.column, indices, self.epoch, what="task column")
        if self.kind == "classification":
            lookup = {c: i for i, c in enumerate(self.classes)}
            unknown = sorted({_label(v) for v in values} - set(lookup))
            if unknown:
                raise SpecError(
                    f"{zoo.path}: column {self.column!r} has classes {unknown[:3]} the run was not trained on "
                    f"(it knows {list(self.classes)[:5]}...)"
                )
            return torch.tensor([lookup[_label(v)] for v in values], dtype=torch.long)
        if values.dtype == object:
            raise SpecError(
                f"{zoo.path}: column {self.column!r} holds strings; use classify:{self.column} instead of predict"
            )
        out = torch.as_tensor(values.astype(np.float32))
        if not torch.isfinite(out).all():
            raise SpecError(f"{zoo.path}: column {self.column!r} has NaN/inf values; it cannot be a target")
        return out

    def to_dict(self) -> dict:
        return asdict(self) | {"classes": list(self.classes)}

    @classmethod
    def from_dict(cls, data: dict) -> MetanetTask:
        return cls(data["kind"], data["column"], int(data.get("epoch", -1)), tuple(data.get("classes", ())))


def _label(v) -> str:
    return str(v.item() if hasattr(v, "item") else v)


@dataclass(frozen=True)
class SplitSpec:
    """How members are split into train/val/test (deterministic; see ``split_indices``).
    ``train_subset < 1`` keeps that seeded fraction of the train split (learning curves; the
    validation and test members stay the same)."""

    fractions: tuple[float, float, float] = (0.8, 0.1, 0.1)
    seed: int = 0
    group_by: tuple[str, ...] = ()
    train_subset: float = 1.0

    def __post_init__(self) -> None:
        if not 0.0 < self.train_subset <= 1.0:
            raise SpecError(f"split: train_subset={self.train_subset} must be in (0, 1]")

    def indices(self, zoo: ZooStore) -> dict[str, np.ndarray]:
        parts = member_splits(zoo, self.fractions, self.seed, self.group_by)
        if self.train_subset < 1.0:
            train = parts["train"]
            keep = max(1, round(self.train_subset * len(train)))
            parts["train"] = np.sort(np.random.default_rng(self.seed).choice(train, keep, replace=False))
        return parts

    def select(self, zoo: ZooStore, split: str | None) -> np.ndarray:
        if split in ("train", "val", "test"):
            return self.indices(zoo)[split]
        return select_members(zoo, split, self.fractions, self.seed, self.group_by)

    def to_dict(self) -> dict:
        out = {"fractions": list(self.fractions), "seed": self.seed, "group_by": list(self.group_by)}
        return out | ({"train_subset": self.train_subset} if self.train_subset < 1.0 else {})

    @classmethod
    def from_dict(cls, data: dict) -> SplitSpec:
        return cls(
            tuple(data["fractions"]),
            int(data["seed"]),
            tuple(data.get("group_by", ())),
            float(data.get("train_subset", 1.0)),
        )


@dataclass
class ZooMembers:
    """Members held in memory: flat parameters ``[n, P]``, per-member layout ids, targets."""

    flat: Tensor
    layout_ids: Tensor  # [n] index into ``layouts``
    layouts: list[ParamLayout]
    specs: list[PermutationSpec | None]
    targets: Tensor | None = None
    indices: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))
    extras: dict[str, Tensor] = field(default_factory=dict)  # per-member model inputs computed once
    architectures: list[dict] = field(default_factory=list)  # distinct architecture descriptions
    architecture_ids: Tensor | None = None  # [n] index into ``architectures`` (None: not read)

    def __len__(self) -> int:
        return self.flat.shape[0]

    @property
    def mixed(self) -> bool:
        return len(self.layouts) > 1

    def subset(self, positions: Tensor) -> ZooMembers:
        targets = None if self.targets is None else self.targets[positions]
        return ZooMembers(
            self.flat[positions],
            self.layout_ids[positions],
            self.layouts,
            self.specs,
            targets,
            self.indices[positions.cpu().numpy()],
            {k: v[positions.to(v.device)] for k, v in self.extras.items()},
            self.architectures,
            None if self.architecture_ids is None else self.architecture_ids[positions.cpu()],
        )

    def map(self, fn) -> ZooMembers:
        """Apply ``fn`` to every tensor that has one row per member (e.g. to move to a device)."""
        return replace(
            self,
            flat=fn(self.flat),
            targets=None if self.targets is None else fn(self.targets),
            extras={k: fn(v) for k, v in self.extras.items()},
        )

    def to(self, device) -> ZooMembers:
        """The members with their tensors on ``device``."""
        return self.map(lambda t: t.to(device))

    def member_layouts(self) -> list[ParamLayout]:
        return [self.layouts[i] for i in self.layout_ids.tolist()]

    def member_specs(self) -> list[PermutationSpec | None]:
        return [self.specs[i] for i in self.layout_ids.tolist()]


def load_members(zoo: ZooStore, indices: np.ndarray, task: MetanetTask | None = None, epoch: int = -1) -> ZooMembers:
    """Read members' parameters (one read), their layouts/specs (one per architecture) and targets."""
    indices = np.asarray(indices, dtype=np.int64)
    if len(indices) == 0:
        raise SpecError(f"{zoo.path}: no members selected (the zoo has {len(zoo)}; is the split empty?)")
    flat = zoo.params(indices, epoch)
    layouts, specs, ids = zoo.architecture_groups(indices)
    targets = None if task is None else task.targets(zoo, indices)
    keys: dict[str, int] = {}
    arch_ids = [keys.setdefault(architecture_key(a), len(keys)) for a in zoo.member_architectures(indices)]
    architectures = [json.loads(k) for k in keys]
    return ZooMembers(
        flat, torch.from_numpy(ids), layouts, specs, targets, indices, {}, architectures, torch.tensor(arch_ids)
    )


def architecture_key(architecture: dict) -> str:
    """A canonical string of an architecture description (equal descriptions, equal keys)."""
    return json.dumps(architecture, sort_keys=True)


@dataclass
class Normalizer:
    """Per-group (role, layer) mean/std of parameters, fit on training members."""

    stats: dict[str, tuple[float, float]] = field(default_factory=dict)

    @classmethod
    def fit(cls, members: ZooMembers) -> Normalizer:
        sums: dict[str, list[float]] = {}
        for lid, layout in enumerate(members.layouts):
            rows = members.flat[members.layout_ids == lid].double()
            for e in layout:
                part = rows[:, e.offset : e.stop]
                acc = sums.setdefault(layout.slot(e), [0.0, 0.0, 0.0])
                acc[0] += part.numel()
                acc[1] += part.sum().item()
                acc[2] += (part**2).sum().item()
        stats = {}
        for key, (n, s, s2) in sums.items():
            mean = s / max(n, 1)
            std = max((s2 / max(n, 1) - mean**2), 0.0) ** 0.5
            stats[key] = (mean, std if std > 1e-8 else 1.0)
        return cls(stats)

    def vectors(self, layout: ParamLayout) -> tuple[Tensor, Tensor]:
        """Per-parameter shift and scale ``[P]`` for one layout (unknown groups pass through)."""
        shift, scale = torch.zeros(layout.size), torch.ones(layout.size)
        for e in layout:
            mean, std = self.stats.get(layout.slot(e), (0.0, 1.0))
            shift[e.offset : e.stop] = mean
            scale[e.offset : e.stop] = std
        return shift, scale

    def apply(self, members: ZooMembers) -> ZooMembers:
        """Standardized copy of ``members`` (padding stays zero)."""
        flat = members.flat.clone()
        for lid, layout in enumerate(members.layouts):
            rows = members.layout_ids == lid
            shift, scale = self.vectors(layout)
            flat[rows, : layout.size] = (flat[rows, : layout.size] - shift) / scale
        return replace(members, flat=flat)

    def to_dict(self) -> dict:
        return {k: list(v) for k, v in self.stats.items()}

    @classmethod
    def from_dict(cls, data: dict) -> Normalizer:
        return cls({k: (float(v[0]), float(v[1])) for k, v in data.items()})


def check_same_layout(members: ZooMembers, layout: ParamLayout, model: str, source: str) -> None:
    """Raise SpecError unless every member has ``layout`` (models that read one fixed layout)."""
    if members.mixed:
        raise SpecError(f"{source}: members have different architectures; {model} reads one layout (use gmn or statnn)")
    if members.layouts[0] != layout:
        raise SpecError(
            f"{source}: layout ({members.layouts[0].size} parameters) differs from the one {model} was built for "
            f"({layout.size} parameters); evaluate on a zoo of the same architecture"
        )
