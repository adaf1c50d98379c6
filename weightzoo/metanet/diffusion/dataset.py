"""Dataset encoder: a few labeled samples per class of a task -> one embedding (D2NWG's condition).

A conditioning set is ``per_class`` samples of every class of a task, drawn from the task's
training data (``zoo.task_data(i)``). The encoder is a set transformer (Lee et al. 2019): each
sample's inputs and its label (the output it is mapped to) become one token, self-attention blocks
mix the tokens and a learned query pools them (PMA), so the embedding does not depend on the order
of the samples. D2NWG aligns the dataset embeddings with the weight latents contrastively before
training the diffusion model: :func:`contrastive_loss` is that objective (CLIP's symmetric
InfoNCE).

With ``pool="label"`` the encoder gives one token per network output instead: the mean of the
mixed tokens of the samples labeled with that output, plus the output's embedding (a learned
"unused" vector where the task maps no class to it), and the denoiser attends to them. Measured on
mnist1d-conflict-ft (200 diffusion epochs, held-out class -> output pairings): held-in 0.91 and
held-out 0.33 of the zoo median, against 0.98 and 0.41 for one pooled embedding, so "set" stays
the default.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass

import torch
from torch import Tensor, nn

from ...errors import SpecError

POOLS = ("set", "label")


@dataclass(frozen=True)
class EncoderConfig:
    """Sizes of a :class:`DatasetEncoder` and of the conditioning sets it reads."""

    d_model: int = 64
    depth: int = 2
    heads: int = 4
    embed_dim: int = 64  # the condition's size (the diffusion model's cond_dim)
    per_class: int = 10  # samples of each class in a conditioning set
    pool: str = "set"  # "set": one embedding (PMA) | "label": one token per network output

    def __post_init__(self) -> None:
        sizes = (self.d_model, self.depth, self.heads, self.embed_dim, self.per_class)
        if min(sizes) < 1 or self.d_model % self.heads:
            raise SpecError(f"dataset encoder: bad sizes {asdict(self)} (all >= 1, d_model divisible by heads)")
        if self.pool not in POOLS:
            raise SpecError(f"dataset encoder: pool {self.pool!r} is unknown; use one of {list(POOLS)}")


class DatasetEncoder(nn.Module):
    """Conditioning sets ``x [B, S, F]``, labels ``y [B, S]`` -> embeddings ``[B, embed_dim]``
    (``pool="set"``) or ``[B, num_outputs, embed_dim]`` (``pool="label"``).

    Args:
        in_features: features of one sample (flattened).
        num_outputs: the networks' outputs: labels are output ids ``0..num_outputs-1``.
        config: sizes.
    """

    def __init__(self, in_features: int, num_outputs: int, config: EncoderConfig | None = None) -> None:
        super().__init__()
        self.config = config or EncoderConfig()
        self.in_features, self.num_outputs = int(in_features), int(num_outputs)
        d = self.config.d_model
        self.sample = nn.Sequential(nn.Linear(self.in_features, d), nn.GELU(), nn.Linear(d, d))
        self.label = nn.Embedding(self.num_outputs, d)
        layer = nn.TransformerEncoderLayer(d, self.config.heads, 2 * d, dropout=0.0, batch_first=True, norm_first=True)
        self.blocks = nn.TransformerEncoder(layer, self.config.depth, enable_nested_tensor=False)
        if self.config.pool == "set":
            self.query = nn.Parameter(torch.randn(1, 1, d) * 0.02)
            self.pool = nn.MultiheadAttention(d, self.config.heads, batch_first=True)
        else:
            self.output = nn.Embedding(self.num_outputs, d)  # which output a token stands for
            self.unused = nn.Parameter(torch.zeros(d))  # an output the task maps no class to
        self.out = nn.Sequential(nn.LayerNorm(d), nn.Linear(d, self.config.embed_dim))

    @property
    def tokens(self) -> int:
        """Condition tokens per set: 0 for one embedding vector, else one per output."""
        return self.num_outputs if self.config.pool == "label" else 0

    def forward(self, x: Tensor, y: Tensor) -> Tensor:
        if x.dim() != 3 or x.shape[-1] != self.in_features or y.shape != x.shape[:2]:
            raise SpecError(
                f"dataset encoder: expected x [B, S, {self.in_features}] and y [B, S], "
                f"got {list(x.shape)} and {list(y.shape)}"
            )
        h = self.blocks(self.sample(x) + self.label(y))
        if self.config.pool == "label":
            return self.out(self._per_output(h, y))
        pooled, _ = self.pool(self.query.expand(len(h), -1, -1), h, h, need_weights=False)
        return self.out(pooled[:, 0])

    def _per_output(self, h: Tensor, y: Tensor) -> Tensor:
        """``[B, num_outputs, d]``: the mean token of each output's samples and the output's embedding."""
        onehot = nn.functional.one_hot(y, self.num_outputs).to(h.dtype)  # [B, S, K]
        counts = onehot.sum(1)  # [B, K]
        means = onehot.transpose(1, 2) @ h / counts.clamp(min=1)[..., None]
        means = torch.where(counts[..., None] > 0, means, self.unused.expand_as(means))
        return means + self.output.weight

    def __repr__(self) -> str:
        c = self.config
        return (
            f"{self.__class__.__name__}(in_features={self.in_features}, outputs={self.num_outputs}, "
            f"d_model={c.d_model}, depth={c.depth}, embed_dim={c.embed_dim})"
        )


@dataclass(frozen=True)
class TaskSamples:
    """One task's labeled training samples, split by class: ``by_class[c]`` holds the inputs
    ``[n_c, F]`` labeled ``labels[c]`` (an output id)."""

    labels: tuple[int, ...]
    by_class: tuple[Tensor, ...]

    @classmethod
    def from_data(cls, x: Tensor, y: Tensor, labels: Sequence[int], where: str = "task") -> TaskSamples:
        """Split ``x [n, ...]``, ``y [n]`` by label; every one of ``labels`` must have a sample."""
        x = x.reshape(len(x), -1).float()
        present = set(torch.unique(y).tolist())
        missing = sorted(set(int(c) for c in labels) - present)
        if missing:
            raise SpecError(
                f"{where}: the conditioning set has no samples of label(s) {missing}; "
                f"give samples of every class the task has ({sorted(int(c) for c in labels)})"
            )
        labels = tuple(sorted(int(c) for c in labels))
        return cls(labels, tuple(x[y == c] for c in labels))

    def draw(self, per_class: int, generator: torch.Generator | None = None) -> tuple[Tensor, Tensor]:
        """``per_class`` samples of every class (without replacement where a class has enough):
        inputs ``[C * per_class, F]`` and labels ``[C * per_class]``."""
        xs, ys = [], []
        for label, x in zip(self.labels, self.by_class):
            n = len(x)
            pick = torch.randperm(n, generator=generator)[:per_class]
            if n < per_class:
                pick = torch.cat([pick, torch.randint(n, (per_class - n,), generator=generator)])
            xs.append(x[pick])
            ys.append(torch.full((per_class,), label, dtype=torch.long))
        return torch.cat(xs), torch.cat(ys)


def draw_sets(
    tasks: Sequence[TaskSamples], per_class: int, generator: torch.Generator | None = None
) -> tuple[Tensor, Tensor]:
    """One conditioning set per task (tasks of one number of classes): ``x [B, S, F]``, ``y [B, S]``."""
    sizes = {len(t.labels) for t in tasks}
    if len(sizes) != 1:
        raise SpecError(f"conditioning sets in one batch must have one number of classes, got {sorted(sizes)}")
    drawn = [t.draw(per_class, generator) for t in tasks]
    return torch.stack([x for x, _ in drawn]), torch.stack([y for _, y in drawn])


def contrastive_loss(a: Tensor, b: Tensor, temperature: float = 0.1) -> Tensor:
    """CLIP's symmetric InfoNCE between paired embeddings ``a [B, D]`` and ``b [B, D]``: row ``i``
    of ``a`` should be most similar (cosine) to row ``i`` of ``b``. Rows of one task are positives
    for each other only through their own pair; callers batch one member per task."""
    a, b = nn.functional.normalize(a, dim=-1), nn.functional.normalize(b, dim=-1)
    logits = a @ b.T / temperature
    target = torch.arange(len(a), device=a.device)
    return 0.5 * (nn.functional.cross_entropy(logits, target) + nn.functional.cross_entropy(logits.T, target))
