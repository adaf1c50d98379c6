"""The saved weight generator: tokenizer, autoencoder, dataset encoder and latent diffusion of one
layout, trained together on a zoo and saved as ``model.safetensors`` + ``config.json``.

:func:`train_generator` is D2NWG's recipe on a zoo's members: optionally align every member to one
reference member (weight matching; generation is then in that member's neuron order), fit the
weight autoencoder, encode the members, and train the latent diffusion model conditioned on a
dataset embedding of each member's task (a conditioning set drawn afresh every step), or without
a condition (p-diff). :meth:`WeightGenerator.sample` draws members for a conditioning set.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from ..._fs import ensure_writable
from ...errors import SpecError, StoreError
from ...layout import ParamLayout
from ...symmetry import PermutationSpec
from ...zoo.evaluate import MemberData, hparams_data, stored_hparams, zoo_task
from ...zoo.opener import open_zoo
from ...zoo.store import ZooStore, opened
from ..align import Aligner
from ..functional import Functional
from ..saved import SavedOnHub, hub_folder, load_state, read_folder, save_folder
from .autoencoder import AutoencoderConfig, WeightAutoencoder
from .dataset import DatasetEncoder, EncoderConfig, TaskSamples, contrastive_loss, draw_sets
from .latent import DiffusionConfig, LatentDiffusion
from .tokens import WeightTokenizer
from .training import FitHistory, FitOptions, fit_autoencoder, fit_diffusion, fit_loop

GENERATOR_FORMAT = "weightzoo-generator"
CONDITIONS = ("dataset", "none")
TASK_PREFIX = "task."


@dataclass(frozen=True)
class GeneratorConfig:
    """What a generator is and how it is trained.

    Args:
        condition: ``"dataset"`` (D2NWG: conditioned on a few samples per class of a task) or
            ``"none"`` (p-diff: members like the training members, unconditioned).
        layers: module names to generate (partial generation; the rest come from a base member),
            None for all.
        chunk: values per weight token.
        align: weight-match every training member to the first one before the autoencoder.
        autoencoder, diffusion, encoder: the parts' sizes (``diffusion.cond_dim`` is set from the
            encoder). The latents default to as many values per token as the chunk has: measured on
            mnist1d-conflict, independently trained members do not compress (2x: relative error 0.54,
            reconstructed accuracy 69% of the original's; 1x: 0.03 and 100%). The denoiser predicts
            the clean latents by default: on 16 members of one mnist1d-conflict task, 3,000 steps,
            generated median accuracy was 0.46 predicting them, 0.33 the velocity, 0.20 the noise.
        autoencoder_fit, diffusion_fit: the two training budgets.
        contrastive_epochs: epochs of contrastive alignment of dataset embeddings to weight latents
            before the diffusion model is trained (0: none; the encoder then learns with the denoiser).
        steps: DDIM steps when sampling.
        guidance: classifier-free guidance scale when sampling (1: none).
    """

    condition: str = "dataset"
    layers: tuple[str, ...] | None = None
    chunk: int = 64
    normalize: str = "parameter"
    align: bool = True
    autoencoder: AutoencoderConfig = field(default_factory=lambda: AutoencoderConfig(d_model=128, latent_dim=64))
    diffusion: DiffusionConfig = field(default_factory=lambda: DiffusionConfig(prediction_type="sample"))
    encoder: EncoderConfig = field(default_factory=EncoderConfig)
    autoencoder_fit: FitOptions = field(default_factory=lambda: FitOptions(epochs=300))
    diffusion_fit: FitOptions = field(default_factory=lambda: FitOptions(epochs=500))
    contrastive_epochs: int = 0
    steps: int = 50
    guidance: float = 1.0

    def __post_init__(self) -> None:
        if self.condition not in CONDITIONS:
            raise SpecError(f"generator: --condition {self.condition!r} is unknown; use one of {list(CONDITIONS)}")
        if self.layers is not None:
            object.__setattr__(self, "layers", tuple(self.layers))
        if self.contrastive_epochs < 0 or self.steps < 1 or self.guidance < 0:
            raise SpecError(f"generator: contrastive_epochs >= 0, steps >= 1 and guidance >= 0, got {self}")
        cond_dim = self.encoder.embed_dim if self.condition == "dataset" else 0
        if self.diffusion.cond_dim != cond_dim:
            object.__setattr__(self, "diffusion", replace(self.diffusion, cond_dim=cond_dim))

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["layers"] = list(self.layers) if self.layers is not None else None
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> GeneratorConfig:
        parts = {
            "autoencoder": AutoencoderConfig, "diffusion": DiffusionConfig, "encoder": EncoderConfig,
            "autoencoder_fit": FitOptions, "diffusion_fit": FitOptions,
        }  # fmt: skip
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise SpecError(f"generator config: unknown field {unknown[0]!r}; valid: {sorted(known)}")
        values = {k: (parts[k](**v) if k in parts and isinstance(v, dict) else v) for k, v in data.items()}
        return cls(**values)


def task_key(hparams: dict[str, Any]) -> str:
    """A member's task as text: its ``task.*`` hyperparameters, sorted (``""``: the plain task)."""
    items = {k: hparams[k] for k in sorted(hparams) if k.startswith(TASK_PREFIX)}
    return json.dumps(items, sort_keys=True, default=str)


def task_labels(data: MemberData) -> list[int]:
    """The output ids a task's labels take (its classes after its label map)."""
    return sorted(set(torch.unique(data.y_train).tolist()) | set(torch.unique(data.y_test).tolist()))


class WeightGenerator(
    nn.Module,
    SavedOnHub,
    library_name="weightzoo",
    tags=["weight-space-learning", "weight-generation", "weightzoo"],
):
    """A trained generator of one layout's weights.

    Args:
        config: the generator's :class:`GeneratorConfig`.
        layout: the generated networks' layout.
        meta: what it was trained on (zoo, architecture, tasks, classes per task, history).
    """

    hub_what = "generator"

    def __init__(self, config: GeneratorConfig, layout: ParamLayout, meta: dict[str, Any]) -> None:
        super().__init__()
        self.config, self.layout, self.meta = config, layout, meta
        tokenizer = WeightTokenizer(layout, config.chunk, config.layers, config.normalize)
        self.autoencoder = WeightAutoencoder(tokenizer, config.autoencoder)
        self.diffusion = LatentDiffusion(self.autoencoder.latent_shape, config.diffusion)
        self.encoder = (
            DatasetEncoder(meta["in_features"], meta["num_outputs"], config.encoder)
            if config.condition == "dataset"
            else None
        )
        self.register_buffer("base", torch.zeros(layout.size))  # the reference member (fixed layers)

    @property
    def tokenizer(self) -> WeightTokenizer:
        return self.autoencoder.tokenizer

    @property
    def conditional(self) -> bool:
        return self.encoder is not None

    @property
    def partial(self) -> bool:
        return self.config.layers is not None

    def embed(self, x: Tensor, y: Tensor) -> Tensor:
        """Dataset embeddings ``[B, embed_dim]`` (``[B, num_outputs, embed_dim]`` with the encoder's
        ``pool="label"``) of conditioning sets ``x [B, S, F]``, ``y [B, S]``."""
        if self.encoder is None:
            raise SpecError("generator: this generator is unconditional (--condition none); it takes no dataset")
        return self.encoder(x, y)

    def check_labels(self, labels: list[int], where: str) -> None:
        """Refuse a task of another number of classes, or labels outside the networks' outputs."""
        want, outputs = self.meta["num_classes"], self.meta["num_outputs"]
        if len(labels) != want:
            raise SpecError(
                f"{where}: the task has {len(labels)} classes; this generator was built for tasks of {want} classes"
            )
        if labels and (min(labels) < 0 or max(labels) >= outputs):
            raise SpecError(f"{where}: labels {labels} fall outside the networks' {outputs} outputs")

    def check_candidates(self, n: int, candidates: int | None) -> None:
        """Refuse ``candidates`` (see :meth:`sample`) below ``n`` or for an unconditional generator."""
        if candidates is None:
            return
        if not self.conditional:
            raise SpecError("generator: --candidates ranks members on the conditioning set; "
                            "this generator is unconditional (--condition none)")  # fmt: skip
        if candidates < n:
            raise SpecError(f"generator: --candidates must be at least --n ({n}), got {candidates}")

    @torch.no_grad()
    def sample(
        self,
        n: int,
        conditioning: tuple[Tensor, Tensor] | None = None,
        *,
        base: Tensor | None = None,
        seed: int = 0,
        steps: int | None = None,
        guidance: float | None = None,
        candidates: int | None = None,
    ) -> Tensor:
        """``n`` generated members ``[n, P]``: for a conditioning set ``(x [S, F], y [S])`` (one
        task's samples, each class present), or unconditioned. ``base [P]`` gives the layers a
        partial generator does not generate (default: its reference member). With ``candidates``
        (conditioned only), that many are drawn and the ``n`` of lowest loss on the conditioning
        set are returned, best first (:func:`select_on_conditioning`): still no gradient step, but
        the conditioning samples are then read twice, by the encoder and by the ranking."""
        if n < 1:
            raise SpecError(f"generator: --n must be >= 1, got {n}")
        if candidates is not None:
            self.check_candidates(n, candidates)
            drawn = self.sample(candidates, conditioning, base=base, seed=seed, steps=steps, guidance=guidance)
            return select_on_conditioning(self.meta["architecture"], drawn, conditioning, n)
        self.eval()
        device = self.base.device
        gen = torch.Generator(device=device).manual_seed(int(seed))
        cond = None
        if self.conditional:
            if conditioning is None:
                raise SpecError("generator: this generator is conditioned on a dataset; give --task or --like-member")
            x, y = conditioning
            self.check_labels(sorted(set(y.tolist())), "conditioning set")
            embedding = self.embed(x[None].to(device).float(), y[None].to(device))
            cond = embedding.expand(n, *embedding.shape[1:])
        latents = self.diffusion.sample(
            n, cond, steps=steps or self.config.steps,
            guidance=self.config.guidance if guidance is None else guidance, generator=gen,
        )  # fmt: skip
        fixed = (self.base if base is None else base.to(device))[None]
        return self.autoencoder.decode(latents, fixed).float()

    # -- persistence
    def save(self, folder: str | os.PathLike) -> Path:
        """Write ``model.safetensors`` and ``config.json`` into ``folder`` (staged, config last)."""
        config = {"generator": self.config.to_dict(), "layout": self.layout.to_dict(), "meta": self.meta}
        return save_folder(folder, self.state_dict(), config, GENERATOR_FORMAT)

    @classmethod
    def load(cls, folder: str | os.PathLike, device: str = "cpu") -> WeightGenerator:
        """The generator saved in ``folder`` (see :func:`load_generator`)."""
        return load_generator(folder, device=device)

    def __repr__(self) -> str:
        c = self.config
        return (
            f"{self.__class__.__name__}(condition={c.condition!r}, tokens={self.tokenizer.num_tokens}, "
            f"layers={self.tokenizer.layer_names if self.partial else 'all'}, zoo={self.meta.get('zoo')!r})"
        )


def select_on_conditioning(
    architecture: dict[str, Any], flat: Tensor, conditioning: tuple[Tensor, Tensor], n: int
) -> Tensor:
    """The ``n`` rows of ``flat [K, P]`` with the lowest mean cross-entropy on the conditioning set
    ``(x, y)`` (labels are output ids), lowest first; ties keep their draw order."""
    x, y = conditioning
    loss = Functional(architecture, device=flat.device).scores(flat, x, y, "classification")["loss"]
    return flat[torch.sort(loss, stable=True).indices[:n].to(flat.device)]


def load_generator(source: str | os.PathLike, device: str = "cpu", revision: str | None = None) -> WeightGenerator:
    """A generator saved by :meth:`WeightGenerator.save`: a folder, or a Hub model repo id.
    Missing, changed or damaged files raise StoreError."""
    folder = hub_folder(str(source), revision, what="generator")
    config, state = read_folder(folder, GENERATOR_FORMAT, "weight generator")
    try:
        gen_config = GeneratorConfig.from_dict(config["generator"])
        layout = ParamLayout.from_dict(config["layout"])
        meta = dict(config["meta"])
    except (KeyError, TypeError, ValueError, SpecError) as exc:
        raise StoreError(f"{folder}/config.json: not a readable generator config ({exc})") from None
    model = WeightGenerator(gen_config, layout, meta)
    load_state(model, state, folder)
    return model.to(device).eval()


# ---------------------------------------------------------------------------------- training
@dataclass
class TrainedGenerator:
    """A trained generator and its training record."""

    generator: WeightGenerator
    autoencoder: FitHistory
    diffusion: FitHistory
    seconds: float


def _members(zoo: ZooStore, members: list[int] | None) -> list[int]:
    if zoo.mixed:
        raise SpecError(
            f"{zoo.path}: members of mixed layouts; a generator is built for one layout "
            "(build it on a zoo of one architecture, or select members of one with --members)"
        )
    chosen = [int(i) for i in (members if members is not None else range(len(zoo)))]
    if len(chosen) < 2:
        raise SpecError(f"{zoo.path}: a generator needs at least 2 training members, got {len(chosen)}")
    return chosen


def task_samples(zoo: ZooStore, hparams: list[dict[str, Any]], members: list[int]) -> dict[str, TaskSamples]:
    """The labeled training samples of every distinct task among ``members`` (by :func:`task_key`)."""
    out: dict[str, TaskSamples] = {}
    for i, hp in zip(members, hparams):
        key = task_key(hp)
        if key not in out:
            data = hparams_data(zoo, hp, zoo.member_architecture(i))
            if data.kind != "classification":
                raise SpecError(f"{zoo.path}: --condition dataset needs a classification task; use --condition none")
            out[key] = TaskSamples.from_data(data.x_train, data.y_train, task_labels(data), f"{zoo.path} member {i}")
    return out


def train_generator(
    zoo: ZooStore | str | os.PathLike,
    out: str | os.PathLike | None = None,
    *,
    members: list[int] | None = None,
    config: GeneratorConfig | None = None,
    epoch: int = -1,
    device: str = "cpu",
    progress: bool = False,
) -> TrainedGenerator:
    """Train a generator on ``members`` of ``zoo`` (default all) at checkpoint ``epoch``; saved to
    ``out`` when given, with progress bars per stage if ``progress``. See the module docstring for
    the recipe."""
    config = config or GeneratorConfig()
    if out is not None:
        ensure_writable(out)  # before any long work
    start = time.perf_counter()
    with opened(zoo, open_zoo) as z:
        chosen = _members(z, members)
        hparams = stored_hparams(z, chosen)
        flat = z.params(chosen, epoch=epoch).float()
        samples = task_samples(z, hparams, chosen) if config.condition == "dataset" else {}
        meta = _meta(z, chosen, hparams, samples, epoch)
        if config.align:
            flat = member_aligner(z.layout, z.perm_spec, z.path).align(flat[0], flat)[0]
    with torch.random.fork_rng(devices=[]):  # the initialization follows the config's seed, not the caller's state
        torch.manual_seed(config.autoencoder_fit.seed)
        model = WeightGenerator(config, z.layout, meta).to(device)
    flat = flat.to(device)
    model.base.copy_(flat[0])
    bars = _Bars(progress)
    ae_hist = fit_autoencoder(model.autoencoder, flat, config.autoencoder_fit, bars("autoencoder"))
    with torch.no_grad():
        latents = torch.cat([model.autoencoder.encode(part) for part in flat.split(256)])
    keys = [task_key(hp) for hp in hparams]
    if model.conditional:
        stages = _Conditioning(model, latents, keys, samples, config)
        if config.contrastive_epochs:
            stages.align_embeddings(bars("contrastive"))
        diff_hist = stages.fit_diffusion(bars("diffusion"))
    else:
        diff_hist = fit_diffusion(model.diffusion, latents, None, config.diffusion_fit, bars("diffusion"))
    seconds = time.perf_counter() - start
    model.meta["history"] = {
        "autoencoder_loss": ae_hist.loss[-1], "diffusion_loss": diff_hist.loss[-1], "seconds": seconds,
    }  # fmt: skip
    model.eval()
    if out is not None:
        model.save(out)
    return TrainedGenerator(model, ae_hist, diff_hist, seconds)


def member_aligner(layout: ParamLayout, spec: PermutationSpec | None, where: Any) -> Aligner:
    """Weight matching of members of ``layout`` (what ``align=True`` trains and samples with)."""
    if spec is None:
        raise SpecError(f"{where}: the zoo has no permutation spec, so its members cannot be aligned; use --no-align")
    return Aligner(layout, spec, "weight")


def _meta(zoo: ZooStore, members: list[int], hparams: list[dict], samples: dict[str, TaskSamples], epoch: int) -> dict:
    """What the generator records about its training zoo (enough to sample for its tasks)."""
    classes = {len(s.labels) for s in samples.values()}
    if len(classes) > 1:
        raise SpecError(f"{zoo.path}: the members' tasks have {sorted(classes)} classes; a generator takes one number")
    first = next(iter(samples.values()), None)
    return {
        "zoo": zoo.name,
        "zoo_path": str(zoo.path),
        "members": members,
        "epoch": epoch,
        "architecture": zoo.member_architecture(members[0]),
        "spec": zoo.attrs.get("spec"),
        "tasks": sorted({task_key(hp) for hp in hparams}),
        "num_classes": classes.pop() if classes else 0,
        "num_outputs": zoo_task(zoo).out_features if samples else 0,
        "in_features": int(first.by_class[0].shape[1]) if first is not None else 0,
    }


@dataclass
class _Conditioning:
    """The conditional stages' inputs: training latents ``[N, T, L]``, each member's task key, and
    every task's samples (conditioning sets are drawn from them by a seeded CPU generator)."""

    model: WeightGenerator
    latents: Tensor
    keys: list[str]
    samples: dict[str, TaskSamples]
    config: GeneratorConfig

    def _sets(self, tasks: list[TaskSamples], draws: torch.Generator) -> Tensor:
        x, y = draw_sets(tasks, self.config.encoder.per_class, draws)
        return self.model.embed(x.to(self.latents.device), y.to(self.latents.device))

    def fit_diffusion(self, progress: str | None) -> FitHistory:
        """The denoiser and the dataset encoder trained together: every step draws a fresh
        conditioning set for each member of the batch from its task's samples."""
        model, latents, options = self.model, self.latents, self.config.diffusion_fit
        tasks, draws = [self.samples[k] for k in self.keys], _set_generator(options.seed)

        def loss(batch: Tensor, gen: torch.Generator) -> tuple[Tensor, dict[str, float]]:
            value = model.diffusion.loss(latents[batch], self._sets([tasks[i] for i in batch.tolist()], draws), gen)
            return value, {"mse": float(value.detach())}

        model.diffusion.fit_scale(latents)
        parts = nn.ModuleDict({"diffusion": model.diffusion, "encoder": model.encoder})
        return fit_loop(parts, loss, len(latents), latents.device, options, progress)

    def align_embeddings(self, progress: str | None) -> None:
        """D2NWG's contrastive stage: dataset embeddings pulled towards their members' latents (one
        member per task in a batch, so the other rows are other tasks)."""
        draws = _set_generator(self.config.diffusion_fit.seed + 1)
        pooled = self.latents.mean(1)
        width = self.config.encoder.embed_dim * max(1, self.model.encoder.tokens)  # a flattened embedding
        project = nn.Linear(pooled.shape[-1], width).to(pooled.device)
        by_task: dict[str, list[int]] = {}
        for i, k in enumerate(self.keys):
            by_task.setdefault(k, []).append(i)
        task_list = list(by_task)

        def loss(batch: Tensor, gen: torch.Generator) -> tuple[Tensor, dict[str, float]]:
            names = [task_list[t] for t in batch.tolist()]
            rows = [by_task[k][int(torch.randint(len(by_task[k]), (1,), generator=draws))] for k in names]
            embedding = self._sets([self.samples[k] for k in names], draws)
            value = contrastive_loss(embedding.flatten(1), project(pooled[rows]))
            return value, {"infonce": float(value.detach())}

        options = replace(self.config.diffusion_fit, epochs=self.config.contrastive_epochs)
        parts = nn.ModuleDict({"encoder": self.model.encoder, "project": project})
        fit_loop(parts, loss, len(task_list), pooled.device, options, progress)


@dataclass(frozen=True)
class _Bars:
    """Progress bar names per training stage, or None for every stage when progress is off."""

    on: bool

    def __call__(self, stage: str) -> str | None:
        return f"generator {stage}" if self.on else None


def _set_generator(seed: int) -> torch.Generator:
    """The CPU generator that draws conditioning sets (the task samples live on the CPU)."""
    return torch.Generator().manual_seed(int(seed))
