"""Diffusion weight generation (D2NWG, p-diff): weights tokenized per layer, a weight autoencoder, a
dataset encoder, a latent diffusion model over the autoencoder's latents, the saved generator that
bundles them, and generated members written as a zoo."""

from .autoencoder import AutoencoderConfig, WeightAutoencoder
from .dataset import DatasetEncoder, EncoderConfig, TaskSamples, contrastive_loss, draw_sets
from .generator import (
    GeneratorConfig,
    TrainedGenerator,
    WeightGenerator,
    load_generator,
    select_on_conditioning,
    task_key,
    train_generator,
)
from .latent import DiffusionConfig, LatentDenoiser, LatentDiffusion, timestep_embedding
from .sampling import GeneratedMembers, conditioning_set, generate_members, parse_task, write_members
from .tokens import TokenLayer, WeightTokenizer, layer_slices
from .training import FitHistory, FitOptions, fit_autoencoder, fit_diffusion, fit_loop

__all__ = [
    "AutoencoderConfig",
    "DatasetEncoder",
    "DiffusionConfig",
    "EncoderConfig",
    "FitHistory",
    "FitOptions",
    "GeneratedMembers",
    "GeneratorConfig",
    "LatentDenoiser",
    "LatentDiffusion",
    "TaskSamples",
    "TokenLayer",
    "TrainedGenerator",
    "WeightAutoencoder",
    "WeightGenerator",
    "WeightTokenizer",
    "conditioning_set",
    "contrastive_loss",
    "draw_sets",
    "fit_autoencoder",
    "fit_diffusion",
    "fit_loop",
    "generate_members",
    "layer_slices",
    "load_generator",
    "parse_task",
    "select_on_conditioning",
    "task_key",
    "timestep_embedding",
    "train_generator",
    "write_members",
]
