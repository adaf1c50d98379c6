"""Diffusion weight generation (D2NWG, p-diff): weights tokenized per layer, a weight
autoencoder, and a latent diffusion model over its latents (the dataset encoder is to come)."""

from .autoencoder import AutoencoderConfig, WeightAutoencoder
from .latent import DiffusionConfig, LatentDenoiser, LatentDiffusion, timestep_embedding
from .tokens import TokenLayer, WeightTokenizer, layer_slices
from .training import FitHistory, FitOptions, fit_autoencoder, fit_diffusion

__all__ = [
    "AutoencoderConfig",
    "DiffusionConfig",
    "FitHistory",
    "FitOptions",
    "LatentDenoiser",
    "LatentDiffusion",
    "TokenLayer",
    "WeightAutoencoder",
    "WeightTokenizer",
    "fit_autoencoder",
    "fit_diffusion",
    "layer_slices",
    "timestep_embedding",
]
