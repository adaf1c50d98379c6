"""ZooSpec: what a zoo is, as YAML — task, architecture, training budget and hyperparameter space.

```yaml
name: mnist1d-mlp
seed: 0
task: mnist1d                     # or {name: digits-inr, views: 2}
architecture: {family: mlp, args: {in_features: 40, hidden: [32, 32], out_features: 10}}
members: 2048                     # "all": one member per target (x views) of a per-member task
epochs: 20
checkpoint_epochs: [0, 1, 5, 20]
batch_size: 128
hparams:                          # drawn per member; a bare value is a constant
  lr: {loguniform: [1.0e-4, 1.0e-1]}
  optimizer: {choice: [sgd, adam]}
  dropout: {uniform: [0.0, 0.3]}
  init_scale: 1.0
grid:                             # optional: every combination, members cycle through them
  activation: [relu, tanh]
  task.classes: [[0, 1], [2, 3]]  # task variants (task.*, see zoo.train.variants) vary like the rest
pretrain: {epochs: 20, hparams: {lr: 1.0e-3}}   # optional: fine-tune every member from one base,
# or base: {zoo: base.zarr, member: 0}           # or from members of another zoo (see zoo.finetune)
```

Members are drawn deterministically: member ``i`` uses a generator seeded with
``(seed, i)``, so its hyperparameters do not depend on how many members the zoo has.
"""

from __future__ import annotations

import hashlib
import inspect
import itertools
import json
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from ..errors import SpecError
from . import archs
from .tasks import TASKS
from .train.config import BASE_MEMBER, member_config
from .train.variants import PREFIX as VARIANT_PREFIX
from .train.variants import VARIANT_KEYS, is_variant_key, member_variant
from .train.variants import resolve as resolve_variant

TRAIN_HPARAMS = ("seed", "optimizer", "lr", "weight_decay", "dropout", "init", "init_scale", "train_fraction")
DISTRIBUTIONS = ("choice", "uniform", "loguniform", "int")
SPEC_KEYS = (
    "name",
    "description",
    "seed",
    "task",
    "architecture",
    "members",
    "epochs",
    "checkpoint_epochs",
    "batch_size",
    "hparams",
    "grid",
    "group_size",
    "base",
    "pretrain",
)
CONFIG_DIR = Path(__file__).resolve().parent.parent / "configs"


@dataclass(frozen=True)
class Distribution:
    """One hyperparameter's space: a constant, a choice, (log-)uniform floats or integers."""

    kind: str  # "const" | one of DISTRIBUTIONS
    values: tuple

    def draw(self, rng: np.random.Generator) -> Any:
        if self.kind == "const":
            return self.values[0]
        if self.kind == "choice":
            return self.values[int(rng.integers(len(self.values)))]
        lo, hi = self.values
        if self.kind == "uniform":
            return float(rng.uniform(lo, hi))
        if self.kind == "loguniform":
            return float(np.exp(rng.uniform(np.log(lo), np.log(hi))))
        return int(rng.integers(lo, hi + 1))  # "int": inclusive bounds


@dataclass(frozen=True)
class BaseSpec:
    """Members start from a trained member of another zoo (path or ``hf://`` URL) at checkpoint
    ``epoch``: ``member`` for all of them, or each its own (the hyperparameter ``base.member``)."""

    zoo: str
    member: int | None = None
    epoch: int = -1


@dataclass(frozen=True)
class PretrainSpec:
    """One base member trained first, with the spec's architecture, then every member fine-tunes it."""

    task: str
    task_options: dict
    epochs: int
    batch_size: int
    hparams: dict


@dataclass(frozen=True)
class ZooSpec:
    """A validated zoo specification (see the module docstring for the YAML form)."""

    name: str
    task: str
    architecture: dict
    members: int
    epochs: int
    checkpoint_epochs: tuple[int, ...]
    seed: int = 0
    batch_size: int = 128
    hparams: dict[str, Distribution] = field(default_factory=dict)
    grid: dict[str, tuple] = field(default_factory=dict)
    task_options: dict = field(default_factory=dict)
    views: int = 1
    group_size: int | None = None
    description: str = ""
    base: BaseSpec | None = None
    pretrain: PretrainSpec | None = None

    @property
    def fine_tuned(self) -> bool:
        """Whether members start from trained weights (``base`` or ``pretrain``) instead of an init."""
        return self.base is not None or self.pretrain is not None

    # ------------------------------------------------------------ members
    @property
    def arch_hparams(self) -> list[str]:
        """Hyperparameters that change the architecture (arguments of its family)."""
        names = set(self.hparams) | set(self.grid)
        return sorted(n for n in names if n not in (*TRAIN_HPARAMS, BASE_MEMBER) and not is_variant_key(n))

    @property
    def variant_hparams(self) -> list[str]:
        """Hyperparameters that vary the task per member (``task.*``, see ``zoo.train.variants``)."""
        return sorted(n for n in set(self.hparams) | set(self.grid) if is_variant_key(n))

    def load_task(self):
        """The spec's task (cached per process)."""
        from .tasks import load_task

        return load_task(self.task, **self.task_options)

    def member_hparams(self, i: int) -> dict[str, Any]:
        """Hyperparameters of member ``i``: grid cell, then draws from a ``(seed, i)`` generator."""
        rng = np.random.default_rng([self.seed, i])
        hp: dict[str, Any] = {"seed": int(rng.integers(2**31 - 1))}
        for name in sorted(self.hparams):
            hp[name] = self.hparams[name].draw(rng)
        if self.grid:
            cells = list(itertools.product(*(self.grid[k] for k in sorted(self.grid))))
            hp.update(zip(sorted(self.grid), cells[i % len(cells)]))
        if self.views > 1 or self.per_member_task:
            hp["target"] = i // self.views
        if self.variant_hparams:
            hp = resolve_variant(hp, rng, self.load_task().out_features)
        return hp

    @property
    def per_member_task(self) -> bool:
        return self.load_task().per_member

    def member_architecture(self, hp: Mapping[str, Any]) -> dict:
        overrides = {k: hp[k] for k in self.arch_hparams}
        return archs.with_overrides(self.architecture, **overrides) if overrides else self.architecture

    # ------------------------------------------------------------ identity
    def to_dict(self) -> dict:
        """The normalized spec (what is stored in the zoo and compared on resume)."""
        d = asdict(self)
        d["hparams"] = {k: {v.kind: list(v.values)} for k, v in self.hparams.items()}
        d["grid"] = {k: list(v) for k, v in self.grid.items()}
        d["checkpoint_epochs"] = list(self.checkpoint_epochs)
        for key in ("base", "pretrain"):  # absent, not null: fingerprints of other specs stay as they were
            if d[key] is None:
                del d[key]
        return json.loads(json.dumps(d))

    def fingerprint(self) -> str:
        """A short hash of everything that determines the stored parameters."""
        d = self.to_dict()
        d.pop("description")
        d.pop("group_size")  # grouping never changes results (members train independently)
        return hashlib.sha256(json.dumps(d, sort_keys=True).encode()).hexdigest()[:16]

    def with_members(self, members: int) -> ZooSpec:
        from dataclasses import replace

        if members < 1:
            raise SpecError(f"spec {self.name!r}: --members must be at least 1, got {members}")
        return replace(self, members=int(members))


# ----------------------------------------------------------------- parsing


def load_spec(spec: str | Path | Mapping[str, Any]) -> ZooSpec:
    """A ZooSpec from a mapping, a YAML file, or the name of a shipped config."""
    if isinstance(spec, Mapping):
        return parse_spec(spec, source="spec")
    path = Path(spec)
    if not path.exists():
        shipped = CONFIG_DIR / f"{spec}.yaml"
        if not shipped.exists():
            raise SpecError(f"{spec}: no such spec file or shipped config; shipped configs: {shipped_configs()}")
        path = shipped
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark is not None else ""
        raise SpecError(f"{path}: not valid YAML{where}; fix the syntax") from None
    if not isinstance(data, Mapping):
        raise SpecError(f"{path}: expected a mapping of spec fields at the top level")
    return parse_spec(data, source=str(path))


def shipped_configs() -> list[str]:
    """Names of the specs shipped with weightzoo (``weightzoo zoo configs``)."""
    return sorted(p.stem for p in CONFIG_DIR.glob("*.yaml"))


def _fail(source: str, fld: str, problem: str) -> SpecError:
    return SpecError(f"{source}: field {fld!r} {problem}")


def _int(source: str, data: Mapping, fld: str, default: Any = None, minimum: int = 1) -> int:
    value = data.get(fld, default)
    if isinstance(value, bool) or not isinstance(value, int):
        raise _fail(source, fld, f"must be an integer, got {value!r}")
    if value < minimum:
        raise _fail(source, fld, f"must be at least {minimum}, got {value}")
    return value


def parse_spec(data: Mapping[str, Any], source: str = "spec") -> ZooSpec:
    """Validate a spec mapping; every problem is one SpecError naming the source and field."""
    unknown = sorted(set(data) - set(SPEC_KEYS))
    if unknown:
        raise SpecError(f"{source}: unknown field(s) {unknown}; valid fields: {list(SPEC_KEYS)}")
    for required in ("name", "task", "architecture", "members", "epochs"):
        if required not in data:
            raise _fail(source, required, "is required")
    name = data["name"]
    if not isinstance(name, str) or not name:
        raise _fail(source, "name", "must be a non-empty string")
    task, task_options, views = _parse_task(source, data["task"])
    architecture = _parse_architecture(source, data["architecture"])
    epochs = _int(source, data, "epochs")
    checkpoints = data.get("checkpoint_epochs", [0, epochs])
    if (
        not isinstance(checkpoints, list)
        or not checkpoints
        or not all(isinstance(e, int) and not isinstance(e, bool) for e in checkpoints)
    ):
        raise _fail(source, "checkpoint_epochs", f"must be a non-empty list of integers, got {checkpoints!r}")
    outside = [e for e in checkpoints if not 0 <= e <= epochs]
    if outside:
        raise _fail(source, "checkpoint_epochs", f"has {outside} outside the run (0..{epochs} epochs)")
    hparams = {k: _parse_distribution(source, k, v) for k, v in (data.get("hparams") or {}).items()}
    grid = _parse_grid(source, data.get("grid") or {})
    spec = ZooSpec(
        name=name,
        task=task,
        architecture=architecture,
        members=0,
        epochs=epochs,
        checkpoint_epochs=tuple(sorted(set(checkpoints))),
        seed=_int(source, data, "seed", 0, minimum=0),
        batch_size=_int(source, data, "batch_size", 128),
        hparams=hparams,
        grid=grid,
        task_options=task_options,
        views=views,
        group_size=None if data.get("group_size") is None else _int(source, data, "group_size"),
        description=str(data.get("description", "")),
        base=_parse_base(source, data.get("base")),
        pretrain=_parse_pretrain(source, data.get("pretrain"), task, task_options, data),
    )
    _check_fine_tuning(source, spec)
    _check_hparam_names(source, spec)
    members = _parse_members(source, data["members"], task, task_options, views)
    spec = spec.with_members(members)
    _check_variants(source, spec)  # first: member draws below resolve the variants
    _check_architectures(source, spec)
    return spec


def _parse_task(source: str, value: Any) -> tuple[str, dict, int]:
    if isinstance(value, str):
        name, options = value, {}
    elif isinstance(value, Mapping) and isinstance(value.get("name"), str):
        options = {k: v for k, v in value.items() if k != "name"}
        name = value["name"]
    else:
        raise _fail(source, "task", f"must be a task name or a mapping with 'name', got {value!r}")
    if name not in TASKS:
        raise _fail(source, "task", f"names unknown task {name!r}; valid: {sorted(TASKS)}")
    views = options.pop("views", 1)
    if isinstance(views, bool) or not isinstance(views, int) or views < 1:
        raise _fail(source, "task.views", f"must be a positive integer, got {views!r}")
    return name, options, views


def _parse_base(source: str, value: Any) -> BaseSpec | None:
    if value is None:
        return None
    if not isinstance(value, Mapping) or not isinstance(value.get("zoo"), str) or not value["zoo"]:
        raise _fail(source, "base", f"must be a mapping with 'zoo' (a path or hf:// URL), got {value!r}")
    extra = sorted(set(value) - {"zoo", "member", "epoch"})
    if extra:
        raise _fail(source, "base", f"has unknown field(s) {extra}; valid: zoo, member, epoch")
    member = value.get("member")
    if member is not None and (isinstance(member, bool) or not isinstance(member, int) or member < 0):
        raise _fail(source, "base.member", f"must be a member index >= 0, got {member!r}")
    epoch = value.get("epoch", -1)
    if isinstance(epoch, bool) or not isinstance(epoch, int):
        raise _fail(source, "base.epoch", f"must be a checkpoint epoch (negative: from the last), got {epoch!r}")
    return BaseSpec(value["zoo"], member, epoch)


def _parse_pretrain(source: str, value: Any, task: str, options: dict, data: Mapping) -> PretrainSpec | None:
    if value is None:
        return None
    if not isinstance(value, Mapping):
        raise _fail(source, "pretrain", f"must be a mapping (task, epochs, batch_size, hparams), got {value!r}")
    extra = sorted(set(value) - {"task", "epochs", "batch_size", "hparams"})
    if extra:
        raise _fail(source, "pretrain", f"has unknown field(s) {extra}; valid: task, epochs, batch_size, hparams")
    if "task" in value:
        task, options, _ = _parse_task(f"{source} pretrain", value["task"])
    hparams = value.get("hparams") or {}
    if not isinstance(hparams, Mapping) or any(isinstance(v, Mapping | list) for v in hparams.values()):
        raise _fail(source, "pretrain.hparams", "must map hyperparameters to single values (one base is trained)")
    hparams = {"seed": _int(source, data, "seed", 0, minimum=0), **hparams}
    try:
        member_config(hparams)
    except SpecError as exc:
        raise _fail(source, "pretrain.hparams", str(exc).removeprefix("hparams: ")) from None
    batch = _int(source, value, "batch_size", data.get("batch_size", 128))
    return PretrainSpec(task, dict(options), _int(source, value, "epochs"), batch, dict(hparams))


def _check_fine_tuning(source: str, spec: ZooSpec) -> None:
    """``base`` or ``pretrain``, not both; a base member for all, or ``base.member`` per member."""
    per_member = BASE_MEMBER in spec.hparams or BASE_MEMBER in spec.grid
    if spec.base is not None and spec.pretrain is not None:
        raise _fail(source, "pretrain", "and 'base' both give the members' starting point; keep one")
    if spec.base is None and per_member:
        raise _fail(source, f"hparams.{BASE_MEMBER}", "needs a 'base' zoo to pick members from")
    if spec.base is not None and (spec.base.member is None) == (not per_member):
        one_of = f"base.member (one for all) or the hyperparameter {BASE_MEMBER}"
        raise _fail(source, "base", f"needs exactly one of {one_of}")


def _parse_architecture(source: str, value: Any) -> dict:
    if not isinstance(value, Mapping) or "family" not in value:
        raise _fail(source, "architecture", "must be a mapping with 'family' and 'args'")
    fam = value["family"]
    if fam not in archs.FAMILIES:
        raise _fail(source, "architecture.family", f"names unknown family {fam!r}; valid: {sorted(archs.FAMILIES)}")
    args = value.get("args") or {}
    extra = sorted(set(value) - {"family", "args"})
    if extra or not isinstance(args, Mapping):
        raise _fail(source, "architecture", f"takes only 'family' and 'args' (a mapping), got {sorted(value)}")
    try:
        return archs.FAMILIES[fam](**args)
    except TypeError as exc:
        raise _fail(source, "architecture.args", f"do not fit family {fam!r}: {exc}") from None


def _parse_distribution(source: str, name: str, value: Any) -> Distribution:
    fld = f"hparams.{name}"
    if not isinstance(value, Mapping):
        if isinstance(value, list) and not is_variant_key(name):  # a variant's value may be a list (classes)
            raise _fail(source, fld, "is a list; write {choice: [...]} for a choice or put it under 'grid'")
        return Distribution("const", (value,))
    if len(value) != 1 or next(iter(value)) not in DISTRIBUTIONS:
        raise _fail(source, fld, f"must be one of {{{', '.join(f'{d}: ...' for d in DISTRIBUTIONS)}}}, got {value!r}")
    kind, args = next(iter(value.items()))
    if not isinstance(args, list) or not args:
        raise _fail(source, fld, f"{kind} needs a non-empty list, got {args!r}")
    if kind == "choice":
        return Distribution(kind, tuple(args))
    if len(args) != 2 or not all(isinstance(a, (int, float)) and not isinstance(a, bool) for a in args):
        raise _fail(source, fld, f"{kind} needs [low, high] numbers, got {args!r}")
    lo, hi = args
    if lo > hi or (kind == "loguniform" and lo <= 0):
        raise _fail(source, fld, f"{kind} bounds {args} are empty or not positive; use low <= high (> 0 for log)")
    if kind == "int" and not all(isinstance(a, int) for a in args):
        raise _fail(source, fld, f"int needs integer bounds, got {args!r}")
    return Distribution(kind, (lo, hi))


def _parse_grid(source: str, grid: Any) -> dict[str, tuple]:
    if not isinstance(grid, Mapping):
        raise _fail(source, "grid", f"must map hyperparameters to lists of values, got {grid!r}")
    out = {}
    for k, v in grid.items():
        if not isinstance(v, list) or not v:
            raise _fail(source, f"grid.{k}", f"must be a non-empty list, got {v!r}")
        out[k] = tuple(v)
    return out


def _check_hparam_names(source: str, spec: ZooSpec) -> None:
    both = sorted(set(spec.hparams) & set(spec.grid))
    if both:
        raise _fail(source, "grid", f"repeats {both} from 'hparams'; give each hyperparameter one place")
    if "target" in spec.hparams or "target" in spec.grid:
        raise _fail(source, "hparams.target", "is set by the task (one member per target); remove it")
    family_args = set(inspect.signature(archs.FAMILIES[spec.architecture["family"]]).parameters)
    valid = sorted(set(TRAIN_HPARAMS) | family_args | {BASE_MEMBER})
    variants = [VARIANT_PREFIX + k for k in VARIANT_KEYS]
    for name in [*spec.hparams, *spec.grid]:
        if is_variant_key(name) and name not in variants:
            raise SpecError(f"{source}: unknown task variant {name!r}; valid: {', '.join(variants)}")
        if name not in valid and not is_variant_key(name):
            raise SpecError(f"{source}: unknown hyperparameter {name!r}; valid: {valid} (and task.* variants)")


def _parse_members(source: str, value: Any, task: str, options: dict, views: int) -> int:
    if value == "all":
        from .tasks import load_task

        loaded = load_task(task, **options)
        if not loaded.per_member:
            raise _fail(source, "members", f"'all' needs a per-member task (an INR task), not {task!r}")
        return loaded.num_targets * views
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise _fail(source, "members", f"must be a positive integer or 'all', got {value!r}")
    from .tasks import load_task

    loaded = load_task(task, **options)
    if loaded.per_member and value > loaded.num_targets * views:
        raise _fail(
            source,
            "members",
            f"is {value} but task {task!r} has {loaded.num_targets} targets x {views} views; use 'all' or fewer",
        )
    return value


def _candidate_values(dist: Distribution | tuple) -> tuple:
    """Values worth trying when checking an architecture hyperparameter: every choice, or the bounds."""
    if isinstance(dist, tuple):
        return dist  # a grid
    return dist.values


def _check_variants(source: str, spec: ZooSpec) -> None:
    """Every task variant the space can produce must fit the task (classes it has, an image shape
    for rotations, a classification task for label changes, ...)."""
    if not spec.variant_hparams:
        return
    task = spec.load_task()
    spaces = {**spec.hparams, **spec.grid}
    for name in spec.variant_hparams:
        for value in _candidate_values(spaces[name]):
            try:
                hp = resolve_variant({name: value}, np.random.default_rng(0), task.out_features)
                member_variant(hp, task)
            except SpecError as exc:
                raise SpecError(f"{source}: {str(exc).removeprefix('hparams: ')}") from None


def _check_architectures(source: str, spec: ZooSpec) -> None:
    """Every architecture the space can produce must build (bad activation names, widths, ...)."""
    base = spec.member_hparams(0)
    spaces = {**spec.hparams, **spec.grid}
    for name in spec.arch_hparams:
        for value in _candidate_values(spaces[name]):
            try:
                archs.describe(spec.member_architecture({**base, name: value}))
            except SpecError as exc:
                raise SpecError(f"{source}: hyperparameter {name}={value!r}: {exc}") from None
            except (TypeError, ValueError) as exc:
                raise SpecError(
                    f"{source}: hyperparameter {name}={value!r} does not fit the architecture: {exc}"
                ) from None
