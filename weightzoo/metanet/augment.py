"""Weight-space augmentation: batched, seeded transforms of networks of one architecture.

Each transform maps named parameters ``{name: [B, *shape]}`` and a ``torch.Generator`` to new ones,
drawing its own random parameters per member, and declares ``exact`` (the network's function is
unchanged) or not. The exact ones come from the :class:`~weightzoo.symmetry.PermutationSpec`
(hidden-neuron permutations, sign flips where the activation is odd, positive rescaling where it
is ReLU-like) and from the SIREN's sine (``b += k·π/w0`` with the sign ``(-1)^k`` moved into the next
layer). The others change the function and say how: noise relative to each tensor's spread, weight
dropout, magnitude pruning, moves of an INR's input space through its first layer, and MixUp of two
members, which also mixes their targets. After "Data Augmentations in Deep Weight Spaces"
(Shamsian et al. 2024).

``parse("perm,sign,noise:0.1,mixup-aligned:0.5")`` builds a :class:`Pipeline`; ``Pipeline.bind(zoo)``
(or ``bind_architecture``) checks it against the networks and returns an :class:`Augmenter`, which
datasets and the metanet trainer call per batch (``Augmenter(ws, generator)`` on a WeightSpace,
``Augmenter.flat(flat, targets, generator)`` on flat vectors).
"""

from __future__ import annotations

import functools
import json
import math
from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..errors import SpecError
from ..layout import ParamLayout, module_kind
from ..symmetry import GroupAction, PermGroup, PermutationSpec, scale_axis
from ..weightspace import WeightSpace
from ..zoo import archs

Params = dict[str, Tensor]


class AugmentError(SpecError):
    """An augmentation string that cannot be parsed, or an augmentation the networks cannot take."""


@dataclass(frozen=True)
class Networks:
    """What a transform may need to know of the networks it changes."""

    layout: ParamLayout
    spec: PermutationSpec | None
    architecture: Mapping[str, Any] | None = None
    target_kind: str | None = None  # "classification", "regression" or None (no targets)
    num_classes: int | None = None

    @property
    def groups(self) -> tuple[PermGroup, ...]:
        return () if self.spec is None else self.spec.groups


class Transform(ABC):
    """One augmentation; ``arg`` is its number in the augmentation string (None: the default).
    Subclasses say what a batch becomes (``__call__``) and which networks can take it (``check``)."""

    name: ClassVar[str]
    exact: ClassVar[bool]
    default: ClassVar[float | None] = None
    changes: ClassVar[str] = ""  # for non-exact transforms: what they change
    bounds: ClassVar[tuple[str, float, float] | None] = None  # (symbol, lo, hi): the argument in (lo, hi)

    def __init__(self, arg: float | None = None) -> None:
        self.written = self.name if arg is None else f"{self.name}:{arg:g}"  # as the user wrote it
        if arg is not None and self.default is None:
            raise self.fail(f"{self.name} takes no argument; write {self.name}")
        if arg is not None and not math.isfinite(arg):
            raise self.fail(f"the argument must be a finite number, got {arg}")
        self.arg = self.default if arg is None else float(arg)
        self.validate()

    def validate(self) -> None:
        """Check the argument against ``bounds`` (AugmentError naming the transform)."""
        if self.bounds is not None:
            symbol, lo, hi = self.bounds
            if not lo < self.arg < hi:
                shown = f"> {lo:g}" if math.isinf(hi) else f"in ({lo:g}, {hi:g})"
                raise self.fail(f"{symbol} must be {shown}, got {self.arg:g}")

    def check(self, nets: Networks) -> None:
        """Raise AugmentError if the networks cannot take this transform (default: any can)."""
        return None

    @abstractmethod
    def __call__(self, params: Params, nets: Networks, generator: torch.Generator) -> Params:
        """The batch ``{name: [B, *shape]}`` transformed, a random draw per member."""

    def fail(self, why: str) -> AugmentError:
        return AugmentError(f"augmentation {self.written!r}: {why}")

    @property
    def text(self) -> str:
        return self.name if self.arg is None else f"{self.name}:{self.arg:g}"

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.text})"


def _batch(params: Params) -> int:
    return next(iter(params.values())).shape[0]


# ----------------------------------------------------------------------------- exact symmetries


class _GroupActionTransform(Transform):
    """A random element of the PermutationSpec's group, one per member."""

    exact = True
    symmetry: ClassVar[str]

    def usable(self, nets: Networks) -> list[PermGroup]:
        return [g for g in nets.groups if self.symmetry in g.symmetries]

    def check(self, nets: Networks) -> None:
        if nets.spec is None or not nets.groups:
            raise self.fail("the layout has no PermutationSpec (no hidden neurons whose symmetries are known)")
        if not self.usable(nets):
            raise self.fail(self.missing)

    missing: ClassVar[str] = ""

    @abstractmethod
    def action(self, groups: list[PermGroup], b: int, generator: torch.Generator) -> GroupAction:
        """A random action of ``groups`` for each of ``b`` members."""

    def __call__(self, params: Params, nets: Networks, generator: torch.Generator) -> Params:
        action = self.action(self.usable(nets), _batch(params), generator)
        return nets.spec.apply(params, action, batch_dims=1)


class Permute(_GroupActionTransform):
    """Random hidden-neuron permutations of every group (residual streams included)."""

    name, symmetry = "perm", "permute"

    def action(self, groups, b, generator):
        return GroupAction({g.name: torch.rand(b, g.size, generator=generator).argsort(-1) for g in groups})


class SignFlip(_GroupActionTransform):
    """Random sign flips of hidden neurons whose activation is odd (tanh, sine)."""

    name, symmetry = "sign", "sign"
    missing = "sign flips keep the function only after odd activations (tanh, sine); this network has none"

    def action(self, groups, b, generator):
        return GroupAction(
            scales={g.name: torch.rand(b, g.size, generator=generator).lt(0.5) * -2.0 + 1.0 for g in groups}
        )


class Rescale(_GroupActionTransform):
    """Positive per-neuron scales, log-uniform in [1/r, r] (default r = 2), where the activation is
    positively homogeneous (ReLU, LeakyReLU): the neuron's inputs scale by s, its outputs by 1/s."""

    name, symmetry, default = "scale", "scale", 2.0
    missing = "positive rescaling keeps the function only after ReLU-like activations; this network has none"

    bounds = ("r", 1.0, math.inf)

    def action(self, groups, b, generator):
        r = math.log(self.arg)
        return GroupAction(
            scales={g.name: torch.exp(r * (2 * torch.rand(b, g.size, generator=generator) - 1)) for g in groups}
        )


class SirenShift(Transform):
    """SIREN bias shift: ``sin(w0 (z + kπ/w0)) = (-1)^k sin(w0 z)``, so a hidden neuron's bias moves
    by ``kπ/w0`` (k uniform in ``-K..K``, default K = 1) and the next layer's weights reading it get
    the sign ``(-1)^k``."""

    name, exact, default = "siren-shift", True, 1.0

    def validate(self) -> None:
        if self.arg < 1 or self.arg != int(self.arg):
            raise self.fail(f"K must be a whole number >= 1 (k drawn from -K..K), got {self.arg:g}")

    def sites(self, nets: Networks) -> list[tuple[PermGroup, str, float]]:
        """(group, its bias parameter, w0) for every hidden layer followed by a sine."""
        if nets.architecture is None or nets.spec is None:
            return []
        found = _sine_sites(json.dumps(nets.architecture, sort_keys=True))
        return [(nets.spec[name], bias, w0) for name, bias, w0 in found]

    def check(self, nets: Networks) -> None:
        if not self.sites(nets):
            raise self.fail("the bias shift needs a SIREN: hidden layers with a bias followed by a sine activation")

    def __call__(self, params: Params, nets: Networks, generator: torch.Generator) -> Params:
        out, b, k_max = dict(params), _batch(params), int(self.arg)
        for g, bias, w0 in self.sites(nets):
            k = torch.randint(-k_max, k_max + 1, (b, g.size), generator=generator)
            out[bias] = out[bias] + (k * (math.pi / w0)).to(out[bias])
            sign = 1.0 - 2.0 * (k % 2).float()
            for ref in g.in_axes:
                out[ref.param] = scale_axis(out[ref.param], ref, sign, 1)
        return out


@functools.lru_cache(maxsize=64)
def _sine_sites(architecture: str) -> tuple[tuple[str, str, float], ...]:
    """(group name, bias parameter, w0) of each hidden layer of a JSON architecture that a sine
    activation follows (found once per architecture: it builds the module)."""
    module, _, spec = archs.describe(json.loads(architecture))
    leaves = [(n, m) for n, m in module.named_modules() if next(m.children(), None) is None]
    names = [n for n, _ in leaves]
    out = []
    for g in spec.groups:
        biases = [r.param for r in g.out_axes if r.param.endswith(".bias")]
        producer = g.out_axes[0].param.rpartition(".")[0] if g.out_axes else None
        if not biases or producer not in names:
            continue
        later = leaves[names.index(producer) + 1 :]
        after = next((m for _, m in later if module_kind(m) is None and not isinstance(m, nn.Dropout)), None)
        if isinstance(after, archs.Sine):
            out.append((g.name, biases[0], after.w0))
    return tuple(out)


# ----------------------------------------------------------------------------- inexact transforms


class Noise(Transform):
    """Gaussian noise of ``sigma`` times each tensor's standard deviation (per member)."""

    name, exact, default = "noise", False, 0.1
    changes = "weights, biases and norm parameters: adds N(0, (sigma * std of its tensor)^2)"

    bounds = ("sigma", 0.0, math.inf)

    def __call__(self, params, nets, generator):
        out = {}
        for k, t in params.items():
            if nets.layout[k].role == "other":  # running statistics are not weights (a variance must stay > 0)
                out[k] = t
                continue
            spread = t.reshape(len(t), -1).std(1).reshape(-1, *([1] * (t.dim() - 1))) if t[0].numel() > 1 else 1.0
            out[k] = t + self.arg * spread * torch.randn(t.shape, generator=generator).to(t)
        return out


class WeightDropout(Transform):
    """Each weight and bias zeroed with probability p (DropConnect on the network; no rescaling)."""

    name, exact, default = "dropout", False, 0.1
    changes = "weights and biases: each set to 0 with probability p"

    bounds = ("p", 0.0, 1.0)

    def __call__(self, params, nets, generator):
        return {
            k: t * (torch.rand(t.shape, generator=generator) >= self.arg).to(t) if _dense(nets, k) else t
            for k, t in params.items()
        }


class Prune(Transform):
    """Magnitude pruning: per member and tensor, the entries below the q-quantile of |w| zeroed."""

    name, exact, default = "prune", False, 0.2
    changes = "weights and biases: the fraction q of smallest magnitude in each tensor set to 0"

    bounds = ("q", 0.0, 1.0)

    def __call__(self, params, nets, generator):
        out = {}
        for k, t in params.items():
            if not _dense(nets, k) or t[0].numel() < 2:
                out[k] = t
                continue
            flat = t.reshape(len(t), -1).abs()
            cut = torch.quantile(flat, self.arg, dim=1, keepdim=True)
            out[k] = (t.reshape(len(t), -1) * (flat >= cut)).reshape(t.shape)
        return out


def _dense(nets: Networks, name: str) -> bool:
    return nets.layout[name].role in ("weight", "bias")


class _InputMove(Transform):
    """An affine move ``x -> A x + t`` of a 2-D INR's input space, applied through the first layer:
    the INR ``f`` becomes ``f(A^{-1}(x - t))``, so it draws the moved image."""

    exact = False
    changes = "the first layer's weights and bias: the INR draws its image moved"

    translates: ClassVar[bool] = False

    def check(self, nets: Networks) -> None:
        first, bias = nets.layout.dense_layers()[0]
        if self.translates and bias is None:
            raise self.fail(f"a translation needs the first layer's bias; {first.name} has none")
        if len(first.shape) != 2 or first.shape[1] != 2:
            raise self.fail(
                f"input-space moves need a 2-D INR (a first Linear layer reading (x, y)); "
                f"{first.name} is {list(first.shape)}"
            )

    @abstractmethod
    def affine(self, b: int, generator: torch.Generator) -> tuple[Tensor, Tensor]:
        """The moves ``x -> A x + t`` of ``b`` members: ``A [b, 2, 2]`` and ``t [b, 2]``."""

    def __call__(self, params, nets, generator):
        weight, bias = nets.layout.dense_layers()[0]
        a, t = self.affine(_batch(params), generator)
        w = params[weight.name]
        a_inv = torch.linalg.inv(a).to(w)
        out = dict(params)
        out[weight.name] = w @ a_inv
        if bias is not None:
            out[bias.name] = params[bias.name] - (out[weight.name] @ t.to(w)[..., None])[..., 0]
        return out


class Translate(_InputMove):
    """Translation by t ~ U[-a, a]^2 (default a = 0.1, in the INR's input units)."""

    name, default, translates = "translate", 0.1, True

    bounds = ("a", 0.0, math.inf)

    def affine(self, b, generator):
        return torch.eye(2).expand(b, 2, 2), (2 * torch.rand(b, 2, generator=generator) - 1) * self.arg


class Rotate(_InputMove):
    """Rotation by an angle ~ U[-d, d] degrees (default 15) about the origin, counter-clockwise."""

    name, default = "rotate", 15.0

    def validate(self) -> None:
        if not 0 < self.arg <= 180:
            raise self.fail(f"the angle range must be in (0, 180] degrees, got {self.arg:g}")

    def affine(self, b, generator):
        theta = torch.deg2rad((2 * torch.rand(b, generator=generator) - 1) * self.arg)
        c, s = torch.cos(theta), torch.sin(theta)
        return torch.stack([torch.stack([c, -s], -1), torch.stack([s, c], -1)], -2), torch.zeros(b, 2)


class Zoom(_InputMove):
    """Scaling about the origin by s, log-uniform in [1/r, r] (default r = 1.2)."""

    name, default = "zoom", 1.2

    bounds = ("r", 1.0, math.inf)

    def affine(self, b, generator):
        s = torch.exp(math.log(self.arg) * (2 * torch.rand(b, generator=generator) - 1))
        return s[:, None, None] * torch.eye(2), torch.zeros(b, 2)


# ----------------------------------------------------------------------------- mixup


class MixUp(Transform):
    """MixUp of two members: ``λθ_i + (1-λ)θ_j`` with λ ~ Beta(α, α) per member and j a random
    partner in the batch; targets mix the same way (soft labels for classes, interpolated values for
    regression). ``mixup-hard`` keeps the hard label of the dominant member; ``mixup-perm`` permutes
    the partner's hidden neurons at random first; ``mixup-aligned`` weight-matches it to θ_i first."""

    name, exact, default = "mixup", False, 0.5
    changes = "weights and targets: a convex mix of two members"
    labels: ClassVar[str] = "soft"
    partner: ClassVar[str] = "plain"

    bounds = ("alpha", 0.0, math.inf)

    def check(self, nets: Networks) -> None:
        if nets.target_kind is None:
            raise self.fail("MixUp mixes targets too; train with a target (--task predict:... or classify:...)")
        if nets.target_kind == "classification" and not nets.num_classes:
            raise self.fail("soft labels need the number of classes")
        if self.partner != "plain" and (nets.spec is None or not nets.groups):
            raise self.fail("the partner is permuted first, which needs a PermutationSpec")

    def __call__(self, params, nets, generator):
        raise self.fail("MixUp needs the targets; call Augmenter, not the transform alone")

    def mix(self, params: Params, y: Tensor, nets: Networks, generator: torch.Generator) -> tuple[Params, Tensor]:
        if y is None:
            raise self.fail("MixUp mixes targets too; give the batch's targets (a dataset with a target)")
        b = _batch(params)
        partner = torch.randperm(b, generator=generator)
        lam = _beta(self.arg, b, generator)
        other = {k: v[partner] for k, v in params.items()}
        if self.partner == "perm":
            other = Permute()(other, nets, generator)
        elif self.partner == "aligned":
            from .align import weight_matching

            found = weight_matching(nets.spec, params, other, batched=True)
            other = nets.spec.apply(other, found.action, batch_dims=1)
        mixed = {k: _lerp(params[k], other[k], lam) for k in params}
        return mixed, self.mix_targets(y, partner, lam, nets)

    def mix_targets(self, y: Tensor, partner: Tensor, lam: Tensor, nets: Networks) -> Tensor:
        if nets.target_kind == "regression":
            return _lerp(y.float(), y.float()[partner], lam)
        if self.labels == "hard":
            return torch.where(lam.to(y.device) >= 0.5, y, y[partner])
        soft = F.one_hot(y, nets.num_classes).float() if y.dim() == 1 else y.float()
        return _lerp(soft, soft[partner], lam)


def _beta(alpha: float, b: int, generator: torch.Generator) -> Tensor:
    """λ ~ Beta(α, α) ``[b]``, reproducible from ``generator`` (torch's Beta sampler takes none, so
    numpy's draws it from a seed taken from the generator)."""
    seed = int(torch.randint(2**62, (1,), generator=generator))
    return torch.from_numpy(np.random.default_rng(seed).beta(alpha, alpha, b)).float()


def _lerp(a: Tensor, b: Tensor, lam: Tensor) -> Tensor:
    w = lam.to(a).reshape(-1, *([1] * (a.dim() - 1)))
    return w * a + (1 - w) * b


class MixUpHard(MixUp):
    name, labels = "mixup-hard", "hard"


class MixUpPermuted(MixUp):
    name, partner = "mixup-perm", "perm"


class MixUpAligned(MixUp):
    name, partner = "mixup-aligned", "aligned"


TRANSFORMS: dict[str, type[Transform]] = {
    t.name: t
    for t in (
        Permute, SignFlip, Rescale, SirenShift, Noise, WeightDropout, Prune, Translate, Rotate, Zoom,
        MixUp, MixUpHard, MixUpPermuted, MixUpAligned,
    )
}  # fmt: skip


# ----------------------------------------------------------------------------- pipelines


@dataclass(frozen=True)
class Pipeline:
    """Transforms applied in order; parsed from ``"perm,sign,noise:0.1"``, not yet checked against
    any networks (``bind`` does that)."""

    transforms: tuple[Transform, ...]

    @property
    def text(self) -> str:
        return ",".join(t.text for t in self.transforms)

    @property
    def exact(self) -> bool:
        return all(t.exact for t in self.transforms)

    def to_dict(self) -> dict:
        return {
            "spec": self.text,
            "transforms": [{"name": t.name, "arg": t.arg, "exact": t.exact} for t in self.transforms],
        }

    def bind(
        self, zoo: Any, target_kind: str | None = None, num_classes: int | None = None, *, seed: int = 0
    ) -> Augmenter:
        """An :class:`Augmenter` for the members of ``zoo``: one set of networks per distinct member
        architecture (members differing only in activation differ in their symmetries), checked."""
        indices = list(range(len(zoo)))
        keys = [json.dumps(a, sort_keys=True) for a in zoo.member_architectures(indices)]
        order = list(dict.fromkeys(keys))
        nets = [_networks(json.loads(k), target_kind, num_classes) for k in order]
        position = {k: g for g, k in enumerate(order)}
        return Augmenter(self, nets, seed, member_groups=np.array([position[k] for k in keys], dtype=np.int64))

    def bind_architecture(
        self,
        architecture: Mapping[str, Any],
        target_kind: str | None = None,
        num_classes: int | None = None,
        *,
        seed: int = 0,
    ) -> Augmenter:
        """An :class:`Augmenter` for networks of one architecture (a JSON layer list)."""
        return Augmenter(self, [_networks(architecture, target_kind, num_classes)], seed)


def _networks(architecture: Mapping[str, Any], target_kind: str | None, num_classes: int | None) -> Networks:
    _, layout, spec = archs.describe(architecture)
    return Networks(layout, spec, dict(architecture), target_kind, num_classes)


@dataclass
class Augmenter:
    """A pipeline bound to networks: applied per batch, seeded by ``seed``, the epoch and the batch.

    ``nets`` holds one entry per distinct architecture, ``member_groups`` each zoo member's entry. A
    transform applies to the architectures that can take it (a sign flip to the tanh members of a
    zoo that also has ReLU ones) and leaves the others as they are; one that no architecture can take
    is an AugmentError. ``seeded = True`` tells datasets to pass a generator from :meth:`generator`,
    which depends on the batch's positions only, so batches do not depend on the loader's workers."""

    pipeline: Pipeline
    nets: list[Networks]
    seed: int = 0
    member_groups: np.ndarray | None = None
    epoch: int = 0
    seeded: ClassVar[bool] = True
    _applies: list[list[bool]] = field(default_factory=list, repr=False)

    def __post_init__(self) -> None:
        for t in self.pipeline.transforms:
            problems = []
            for nets in self.nets:
                try:
                    t.check(nets)
                    problems.append(None)
                except AugmentError as exc:
                    problems.append(exc)
            if all(problems):
                raise problems[0]
            self._applies.append([p is None for p in problems])

    @property
    def mixes_targets(self) -> bool:
        return any(isinstance(t, MixUp) for t in self.pipeline.transforms)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def generator(self, positions: Sequence[int]) -> torch.Generator:
        """The generator of one batch: from the seed, the epoch and the batch's member positions."""
        seq = np.random.SeedSequence([self.seed, self.epoch, len(positions), *map(int, positions)])
        return torch.Generator().manual_seed(int(seq.generate_state(1, np.uint64)[0] >> 1))

    def groups(self, members: Sequence[int]) -> np.ndarray:
        """The architecture entry of each zoo member index."""
        if self.member_groups is None:
            return np.zeros(len(members), dtype=np.int64)
        return self.member_groups[np.asarray(members, dtype=np.int64)]

    def params(
        self, params: Params, group: int, y: Tensor | None, generator: torch.Generator
    ) -> tuple[Params, Tensor | None]:
        """Named parameters ``[B, *shape]`` of architecture ``group`` (and targets) through the pipeline."""
        nets = self.nets[group]
        for t, applies in zip(self.pipeline.transforms, self._applies):
            if not applies[group]:
                continue
            if isinstance(t, MixUp):
                params, y = t.mix(params, y, nets, generator)
            else:
                params = t(params, nets, generator)
        return params, y

    def __call__(self, ws: WeightSpace, generator: torch.Generator, y: Tensor | None = None):
        """A WeightSpace of one architecture through the pipeline (``(ws, y)`` when ``y`` is given)."""
        if len(self.nets) != 1:
            raise AugmentError(
                f"augmentation {self.pipeline.text!r}: bound to {len(self.nets)} architectures; use "
                "Augmenter.flat with each row's architecture group"
            )
        params, y = self.params(ws.named_params(), 0, y, generator)
        out = WeightSpace.from_params(params, ws.layout)
        return out if y is None else (out, y)

    def flat(
        self, flat: Tensor, y: Tensor | None, generator: torch.Generator, groups: Sequence[int] | None = None
    ) -> tuple[Tensor, Tensor | None]:
        """Flat parameters ``[B, P]`` (a mixed zoo's rows padded) through the pipeline, each row as the
        architecture ``groups[row]`` (default 0; see :meth:`groups`), one vectorized call per
        architecture; MixUp pairs members of one architecture."""
        groups = np.zeros(len(flat), dtype=np.int64) if groups is None else np.asarray(groups, dtype=np.int64)
        out, targets = flat.clone(), None
        for g in np.unique(groups):
            size = self.nets[g].layout.size
            idx = torch.from_numpy(np.flatnonzero(groups == g))
            part = None if y is None else y[idx]
            params, part = self.params(self.nets[g].layout.unflatten(flat[idx, :size]), int(g), part, generator)
            out[idx, :size] = torch.cat([params[e.name].reshape(len(idx), -1) for e in self.nets[g].layout], 1)
            if part is not None:
                targets = part.new_zeros(len(flat), *part.shape[1:]) if targets is None else targets
                targets[idx] = part
        return out, targets


def parse(text: str) -> Pipeline:
    """``"perm,sign,noise:0.1,mixup-aligned:0.5"`` -> a Pipeline (AugmentError for anything else)."""
    transforms = []
    for item in (p.strip() for p in str(text).split(",")):
        if not item:
            raise AugmentError(
                f"augmentation {text!r}: empty item; write names separated by commas, e.g. perm,noise:0.1"
            )
        name, sep, value = item.partition(":")
        if name not in TRANSFORMS:
            raise AugmentError(f"augmentation {item!r}: unknown name {name!r}; known: {', '.join(TRANSFORMS)}")
        try:
            arg = float(value) if sep else None
        except ValueError:
            raise AugmentError(
                f"augmentation {item!r}: {value!r} is not a number; write NAME:NUMBER, e.g. noise:0.1"
            ) from None
        transforms.append(TRANSFORMS[name](arg))
    mixes = [t for t in transforms if isinstance(t, MixUp)]
    if len(mixes) > 1 or (mixes and transforms[-1] is not mixes[0]):
        raise AugmentError(f"augmentation {text!r}: at most one MixUp, and last (it mixes the transformed members)")
    return Pipeline(tuple(transforms))
