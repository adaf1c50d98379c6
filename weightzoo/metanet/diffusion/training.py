"""Training loops of the generator's parts (seeded, one generator for batches and noise)."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import Tensor
from tqdm.auto import tqdm

from ...errors import SpecError
from .autoencoder import WeightAutoencoder
from .latent import LatentDiffusion


@dataclass(frozen=True)
class FitOptions:
    """Budget of one training loop."""

    epochs: int = 200
    batch_size: int = 64
    lr: float = 1e-3
    weight_decay: float = 0.0
    seed: int = 0
    schedule: str = "constant"  # the learning rate: constant, or cosine (annealed to 0 over the epochs)

    def __post_init__(self) -> None:
        if self.epochs < 1 or self.batch_size < 1 or self.lr <= 0:
            raise SpecError(f"fit options: epochs, batch_size and lr must be positive, got {self}")
        if self.schedule not in ("constant", "cosine"):
            raise SpecError(f"fit options: schedule {self.schedule!r} is unknown; use constant or cosine")


@dataclass
class FitHistory:
    """Mean training loss per epoch, and its parts."""

    loss: list[float] = field(default_factory=list)
    parts: list[dict[str, float]] = field(default_factory=list)


def fit_autoencoder(
    ae: WeightAutoencoder, flat: Tensor, options: FitOptions | None = None, progress: str | None = None
) -> FitHistory:
    """Fit the tokenizer's statistics on ``flat [N, P]`` (training members), then train the
    autoencoder on shuffled batches of them; returns the loss history."""
    if flat.dim() != 2 or flat.shape[0] < 1:
        raise SpecError(f"autoencoder: needs training members [N >= 1, P], got {tuple(flat.shape)}")
    ae.tokenizer.fit(flat)
    return fit_loop(ae, lambda batch, gen: ae.loss(flat[batch], gen), flat.shape[0], flat.device, options, progress)


def fit_diffusion(
    model: LatentDiffusion,
    latents: Tensor,
    cond: Tensor | None = None,
    options: FitOptions | None = None,
    progress: str | None = None,
) -> FitHistory:
    """Fit the latent scale on ``latents [N, T, L]`` (with conditions ``cond [N, cond_dim]``), then
    train the denoiser; returns the loss history."""
    if latents.dim() != 3 or latents.shape[0] < 1:
        raise SpecError(f"diffusion: needs training latents [N >= 1, T, L], got {tuple(latents.shape)}")
    model.fit_scale(latents)

    def loss(batch: Tensor, gen: torch.Generator) -> tuple[Tensor, dict[str, float]]:
        value = model.loss(latents[batch], None if cond is None else cond[batch], gen)
        return value, {"mse": float(value.detach())}

    return fit_loop(model, loss, latents.shape[0], latents.device, options, progress)


def fit_loop(
    module: torch.nn.Module, loss_fn, count: int, device, options: FitOptions | None, progress: str | None = None
) -> FitHistory:
    """AdamW over shuffled batches of ``count`` examples, ``loss_fn(batch_indices, generator)`` giving
    the loss and its parts; one seeded generator draws batches and noise. ``progress`` names a
    progress bar over the epochs (None: no bar)."""
    options = options or FitOptions()
    generator = torch.Generator(device=device).manual_seed(options.seed)
    torch.manual_seed(options.seed)
    opt = torch.optim.AdamW(module.parameters(), lr=options.lr, weight_decay=options.weight_decay)
    cosine = options.schedule == "cosine"
    steps = options.epochs * -(-count // options.batch_size)
    lr_schedule = torch.optim.lr_scheduler.CosineAnnealingLR(opt, steps) if cosine else None
    history = FitHistory()
    module.train()
    bar = tqdm(range(options.epochs), desc=progress, unit="epoch", disable=progress is None, leave=False)
    for _ in bar:
        order = torch.randperm(count, generator=generator, device=device)
        total, parts, batches = 0.0, {}, 0
        for batch in order.split(options.batch_size):
            loss, info = loss_fn(batch, generator)
            opt.zero_grad()
            loss.backward()
            opt.step()
            if lr_schedule is not None:
                lr_schedule.step()
            total, batches = total + float(loss.detach()), batches + 1
            parts = {k: parts.get(k, 0.0) + v for k, v in info.items()}
        history.loss.append(total / batches)
        history.parts.append({k: v / batches for k, v in parts.items()})
        bar.set_postfix(loss=f"{history.loss[-1]:.4f}", refresh=False)
    module.eval()
    return history
