"""Diffusion weight generation (D2NWG, p-diff): weights tokenized per layer, a weight
autoencoder, and (to come) a dataset encoder and a latent diffusion model over its latents."""

from .autoencoder import AutoencoderConfig, WeightAutoencoder
from .tokens import TokenLayer, WeightTokenizer, layer_slices
from .training import FitHistory, FitOptions, fit_autoencoder

__all__ = [
    "AutoencoderConfig",
    "FitHistory",
    "FitOptions",
    "TokenLayer",
    "WeightAutoencoder",
    "WeightTokenizer",
    "fit_autoencoder",
    "layer_slices",
]
