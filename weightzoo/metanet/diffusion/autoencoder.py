"""Weight autoencoder: tokens of a member's parameters <-> a grid of latent tokens.

Like p-diff and D2NWG's per-layer VAE, it is trained with noise on its input and on its latents
(p-diff found both necessary: without them the decoder only works on latents it has seen). Each
token gets its layer's and its position's embedding, a small transformer mixes tokens, and a
linear map gives every token ``latent_dim`` latent values. With ``kl > 0`` it is a VAE: the
encoder gives a mean and a log-variance and the loss adds ``kl`` times their KL divergence.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
from torch import Tensor, nn

from ...errors import SpecError
from .tokens import WeightTokenizer


@dataclass(frozen=True)
class AutoencoderConfig:
    """Sizes and training noise of a :class:`WeightAutoencoder`."""

    d_model: int = 64
    latent_dim: int = 8
    depth: int = 2
    heads: int = 4
    input_noise: float = 0.001  # p-diff's input noise, on standardized values
    latent_noise: float = 0.1  # p-diff's latent noise
    kl: float = 0.0  # > 0: a VAE with this KL weight

    def __post_init__(self) -> None:
        if min(self.d_model, self.latent_dim, self.depth, self.heads) < 1 or self.d_model % self.heads:
            raise SpecError(f"autoencoder: bad sizes {asdict(self)} (all >= 1, d_model divisible by heads)")
        if min(self.input_noise, self.latent_noise, self.kl) < 0:
            raise SpecError(f"autoencoder: noise and kl must be >= 0, got {asdict(self)}")


def _transformer(d_model: int, heads: int, depth: int) -> nn.TransformerEncoder:
    layer = nn.TransformerEncoderLayer(d_model, heads, 2 * d_model, dropout=0.0, batch_first=True, norm_first=True)
    return nn.TransformerEncoder(layer, depth, enable_nested_tensor=False)


class _TokenEmbedding(nn.Module):
    """A token's layer and position within its layer, as one learned vector."""

    def __init__(self, tokenizer: WeightTokenizer, d_model: int) -> None:
        super().__init__()
        self.layer = nn.Embedding(len(tokenizer.layers), d_model)
        self.pos = nn.Embedding(int(tokenizer.token_pos.max()) + 1, d_model)

    def forward(self, tokenizer: WeightTokenizer) -> Tensor:
        return self.layer(tokenizer.token_layer) + self.pos(tokenizer.token_pos)


class WeightAutoencoder(nn.Module):
    """Flat parameters ``[B, P]`` <-> latents ``[B, T, latent_dim]`` (``T`` tokens).

    Args:
        tokenizer: a fitted :class:`WeightTokenizer` (its statistics travel with the model).
        config: sizes and training noise.
    """

    def __init__(self, tokenizer: WeightTokenizer, config: AutoencoderConfig | None = None) -> None:
        super().__init__()
        self.tokenizer, self.config = tokenizer, config or AutoencoderConfig()
        c, chunk = self.config, tokenizer.chunk
        self.enc_in, self.enc_embed = nn.Linear(chunk, c.d_model), _TokenEmbedding(tokenizer, c.d_model)
        self.encoder = _transformer(c.d_model, c.heads, c.depth)
        self.to_latent = nn.Linear(c.d_model, c.latent_dim * (2 if c.kl > 0 else 1))
        self.dec_in, self.dec_embed = nn.Linear(c.latent_dim, c.d_model), _TokenEmbedding(tokenizer, c.d_model)
        self.decoder = _transformer(c.d_model, c.heads, c.depth)
        self.to_tokens = nn.Linear(c.d_model, chunk)

    @property
    def latent_shape(self) -> tuple[int, int]:
        return self.tokenizer.num_tokens, self.config.latent_dim

    def _moments(self, tokens: Tensor) -> tuple[Tensor, Tensor | None]:
        h = self.encoder(self.enc_in(tokens) + self.enc_embed(self.tokenizer))
        out = self.to_latent(h)
        if self.config.kl > 0:
            mean, logvar = out.chunk(2, dim=-1)
            return mean, logvar.clamp(-20, 10)
        return out, None

    def encode(self, flat: Tensor) -> Tensor:
        """Latents of members ``flat [B, P]`` (the VAE's mean)."""
        return self._moments(self.tokenizer.encode(flat))[0]

    def decode_tokens(self, latents: Tensor) -> Tensor:
        return self.to_tokens(self.decoder(self.dec_in(latents) + self.dec_embed(self.tokenizer)))

    def decode(self, latents: Tensor, base: Tensor | None = None) -> Tensor:
        """Flat parameters from latents; ``base`` fills the layers the tokenizer does not keep."""
        return self.tokenizer.decode(self.decode_tokens(latents), base)

    def reconstruct(self, flat: Tensor) -> Tensor:
        """Decode(encode(flat)), without noise; layers not kept stay as in ``flat``."""
        return self.decode(self.encode(flat), flat)

    def loss(self, flat: Tensor, generator: torch.Generator | None = None) -> tuple[Tensor, dict[str, float]]:
        """Training loss on a batch: MSE of the standardized values (padding excluded) after input
        and latent noise, plus ``kl`` times the KL divergence for a VAE."""
        tokens = self.tokenizer.encode(flat)
        c = self.config
        noisy = tokens + c.input_noise * _noise(tokens, generator)
        mean, logvar = self._moments(noisy)
        z = mean if logvar is None else mean + (0.5 * logvar).exp() * _noise(mean, generator)
        z = z + c.latent_noise * _noise(z, generator)
        mask = self.tokenizer.mask
        mse = (self.decode_tokens(z) - tokens).square()[:, mask].mean()
        parts = {"mse": float(mse.detach())}
        loss = mse
        if logvar is not None:
            kl = 0.5 * (mean.square() + logvar.exp() - 1 - logvar).mean()
            loss, parts["kl"] = loss + c.kl * kl, float(kl.detach())
        return loss, parts

    def __repr__(self) -> str:
        c = self.config
        return (
            f"{self.__class__.__name__}(tokens={self.tokenizer.num_tokens}, chunk={self.tokenizer.chunk}, "
            f"latent={c.latent_dim}, d_model={c.d_model}, depth={c.depth}, vae={c.kl > 0})"
        )


def _noise(like: Tensor, generator: torch.Generator | None) -> Tensor:
    return torch.randn(like.shape, generator=generator, dtype=like.dtype, device=like.device)
