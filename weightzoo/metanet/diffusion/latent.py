"""Latent diffusion over the weight autoencoder's latents (DDPM training, DDIM sampling).

The noise schedules are diffusers' ``DDPMScheduler`` and ``DDIMScheduler``. The denoiser is a
small transformer over latent tokens that predicts the added noise from the noisy latents, the
timestep and, optionally, a condition: a vector ``[B, cond_dim]`` added to every token, or condition
tokens ``[B, K, cond_dim]`` (one per network output) put before the latent tokens, so every latent
token attends to them. For classifier-free guidance the condition is replaced by a learned null
vector on a fraction ``cond_dropout`` of training examples, and sampling mixes
``eps(null) + guidance * (eps(cond) - eps(null))``.
"""

from __future__ import annotations

import functools
import math
from dataclasses import asdict, dataclass

import torch
from diffusers import DDIMScheduler, DDPMScheduler
from torch import Tensor, nn

from ...errors import SpecError

PREDICTION_TYPES = ("epsilon", "sample", "v_prediction")


@dataclass(frozen=True)
class DiffusionConfig:
    """Sizes, noise schedule and conditioning of a :class:`LatentDiffusion`."""

    d_model: int = 128
    depth: int = 3
    heads: int = 4
    train_steps: int = 1000  # DDPM timesteps
    beta_schedule: str = "linear"  # a diffusers schedule name
    prediction_type: str = "epsilon"  # what the denoiser predicts: epsilon | sample | v_prediction (diffusers)
    cond_dim: int = 0  # 0: unconditional (p-diff)
    cond_dropout: float = 0.1  # classifier-free guidance: training examples with the null condition

    def __post_init__(self) -> None:
        if min(self.d_model, self.depth, self.heads, self.train_steps) < 1 or self.d_model % self.heads:
            raise SpecError(f"diffusion: bad sizes {asdict(self)} (all >= 1, d_model divisible by heads)")
        if self.prediction_type not in PREDICTION_TYPES:
            raise SpecError(f"diffusion: prediction_type {self.prediction_type!r} is unknown; use {PREDICTION_TYPES}")
        if self.cond_dim < 0 or not 0.0 <= self.cond_dropout < 1.0:
            raise SpecError(f"diffusion: cond_dim must be >= 0 and cond_dropout in [0, 1), got {asdict(self)}")


def timestep_embedding(t: Tensor, dim: int) -> Tensor:
    """Sinusoidal embedding ``[B, dim]`` of integer timesteps ``t [B]`` (Vaswani et al.; DDPM)."""
    half = dim // 2
    freqs = torch.exp(-math.log(10_000.0) * torch.arange(half, device=t.device, dtype=torch.float32) / half)
    angles = t.float()[:, None] * freqs[None]
    emb = torch.cat([angles.sin(), angles.cos()], dim=-1)
    return nn.functional.pad(emb, (0, dim - 2 * half))


class LatentDenoiser(nn.Module):
    """Noise prediction ``[B, T, L]`` for noisy latents ``[B, T, L]`` at timesteps ``t [B]``.

    Args:
        latent_shape: ``(T, L)``, the autoencoder's latent grid.
        config: sizes and conditioning.
    """

    def __init__(self, latent_shape: tuple[int, int], config: DiffusionConfig) -> None:
        super().__init__()
        tokens, latent_dim = latent_shape
        d = config.d_model
        self.config, self.latent_shape = config, (tokens, latent_dim)
        self.inp, self.out = nn.Linear(latent_dim, d), nn.Linear(d, latent_dim)
        self.position = nn.Parameter(torch.randn(tokens, d) * 0.02)
        self.time = nn.Sequential(nn.Linear(d, d), nn.SiLU(), nn.Linear(d, d))
        self.cond = nn.Linear(config.cond_dim, d) if config.cond_dim else None
        self.null = nn.Parameter(torch.zeros(d))  # the "no condition" embedding
        layer = nn.TransformerEncoderLayer(d, config.heads, 2 * d, dropout=0.0, batch_first=True, norm_first=True)
        self.blocks = nn.TransformerEncoder(layer, config.depth, enable_nested_tensor=False)

    def forward(self, noisy: Tensor, t: Tensor, cond: Tensor | None = None, drop: Tensor | None = None) -> Tensor:
        """``cond [B, cond_dim]`` or ``[B, K, cond_dim]`` (None: the null condition); ``drop [B]``
        True where it is replaced by the null condition."""
        context = self.time(timestep_embedding(t, self.config.d_model))
        h = self.inp(noisy) + self.position
        if cond is None or self.cond is None:
            c = self.null.expand(len(h), -1)
        else:
            c = self.cond(cond)
            if drop is not None:
                c = torch.where(drop.view(-1, *[1] * (c.dim() - 1)), self.null.expand_as(c), c)
        k = c.shape[1] if c.dim() == 3 else 0  # condition tokens go before the latent tokens
        h = torch.cat([c, h], 1) + context[:, None] if k else h + (context + c)[:, None]
        return self.out(self.blocks(h)[:, k:])


class LatentDiffusion(nn.Module):
    """DDPM over standardized latents, sampled with DDIM (deterministic for ``eta=0``)."""

    def __init__(self, latent_shape: tuple[int, int], config: DiffusionConfig | None = None) -> None:
        super().__init__()
        self.config = config or DiffusionConfig()
        self.denoiser = LatentDenoiser(latent_shape, self.config)
        self.register_buffer("latent_mean", torch.zeros(latent_shape[1]))
        self.register_buffer("latent_std", torch.ones(latent_shape[1]))

    @functools.cached_property
    def scheduler(self) -> DDPMScheduler:
        """The training noise schedule (built once; DDIM sampling reuses its config)."""
        c = self.config
        # clip_sample off: diffusers clips predicted clean samples to [-1, 1] by default (images);
        # standardized latents have unit spread, so clipping would cut about a third of their values
        return DDPMScheduler(
            num_train_timesteps=c.train_steps, beta_schedule=c.beta_schedule, prediction_type=c.prediction_type,
            clip_sample=False,
        )  # fmt: skip

    def fit_scale(self, latents: Tensor) -> None:
        """Per-channel mean and spread of the training latents ``[N, T, L]`` (diffusion runs on
        standardized latents, like Stable Diffusion's scaling factor)."""
        flat = latents.reshape(-1, latents.shape[-1]).double()
        self.latent_mean.copy_(flat.mean(0))
        self.latent_std.copy_(flat.std(0, correction=0).clamp(min=1e-6))

    def _check_cond(self, cond: Tensor | None, batch: int) -> None:
        want = self.config.cond_dim
        if cond is None:
            return
        if not want:
            raise SpecError("diffusion: this model is unconditional (cond_dim=0) but got a condition")
        if cond.dim() not in (2, 3) or cond.shape[0] != batch or cond.shape[-1] != want:
            raise SpecError(
                f"diffusion: condition must have shape [{batch}, {want}] or [{batch}, K, {want}], "
                f"got {list(cond.shape)}"
            )

    def loss(self, latents: Tensor, cond: Tensor | None = None, generator: torch.Generator | None = None) -> Tensor:
        """The denoiser's MSE on a batch of clean latents ``[B, T, L]`` (against the noise, the clean
        latents or the velocity, as ``prediction_type`` says)."""
        B = latents.shape[0]
        self._check_cond(cond, B)
        sched = self.scheduler
        x0 = (latents - self.latent_mean) / self.latent_std
        noise = torch.randn(x0.shape, generator=generator, device=x0.device, dtype=x0.dtype)
        t = torch.randint(0, self.config.train_steps, (B,), generator=generator, device=x0.device)
        drop = None
        if cond is not None and self.config.cond_dropout > 0:
            drop = torch.rand(B, generator=generator, device=x0.device) < self.config.cond_dropout
        pred = self.denoiser(sched.add_noise(x0, noise, t), t, cond, drop)
        kind = self.config.prediction_type
        target = noise if kind == "epsilon" else x0 if kind == "sample" else sched.get_velocity(x0, noise, t)
        return (pred - target).square().mean()

    @torch.no_grad()
    def sample(
        self,
        n: int,
        cond: Tensor | None = None,
        *,
        steps: int = 50,
        guidance: float = 1.0,
        generator: torch.Generator | None = None,
    ) -> Tensor:
        """``n`` latents ``[n, T, L]`` by DDIM in ``steps`` steps; ``cond [n, cond_dim]`` or None;
        ``guidance`` > 1 strengthens the condition (classifier-free guidance)."""
        if n < 1 or steps < 1:
            raise SpecError(f"diffusion: n and steps must be >= 1, got n={n}, steps={steps}")
        self._check_cond(cond, n)
        ddim = DDIMScheduler.from_config(self.scheduler.config)
        ddim.set_timesteps(steps)
        device = self.latent_mean.device
        x = torch.randn((n, *self.denoiser.latent_shape), generator=generator, device=device)
        for t in ddim.timesteps:
            ts = torch.full((n,), int(t), device=device)
            eps = self.denoiser(x, ts, cond)
            if cond is not None and guidance != 1.0:
                null = self.denoiser(x, ts, cond, drop=torch.ones(n, dtype=torch.bool, device=device))
                eps = null + guidance * (eps - null)
            x = ddim.step(eps, t, x, eta=0.0).prev_sample
        return x * self.latent_std + self.latent_mean
