"""Weight generation so far: per-layer tokens, the weight autoencoder and latent diffusion."""

import pytest
import torch

from weightzoo.errors import LayoutError, SpecError
from weightzoo.metanet.diffusion import (
    AutoencoderConfig,
    DiffusionConfig,
    FitOptions,
    LatentDiffusion,
    WeightAutoencoder,
    WeightTokenizer,
    fit_autoencoder,
    fit_diffusion,
    layer_slices,
)
from weightzoo.zoo import archs

LAYOUTS = {
    "mlp": archs.mlp(4, [6, 5], 3),
    "mlp-layernorm": archs.mlp(4, [6, 5], 3, norm="layernorm"),
    "cnn": archs.cnn(1, [3, 4], 2, kernel=3),
}


def _layout(name):
    return archs.describe(LAYOUTS[name])[1]


@pytest.mark.parametrize("name", list(LAYOUTS))
def test_tokens_round_trip_and_standardize_each_layer(name):
    layout = _layout(name)
    flat = 3.0 + 2.0 * torch.randn(20, layout.size, dtype=torch.float64)
    tok = WeightTokenizer(layout, chunk=8).double().fit(flat)
    tokens = tok.encode(flat)
    assert tokens.shape == (20, tok.num_tokens, 8)
    assert int(tok.mask.sum()) == layout.size and torch.all(tokens[:, ~tok.mask] == 0)  # padding is zero
    torch.testing.assert_close(tok.decode(tokens), flat, atol=1e-12, rtol=0)
    for i, lay in enumerate(tok.layers):  # standardized per layer on the members it was fitted on
        values = tokens[:, lay.first_token : lay.first_token + lay.tokens][:, tok.mask[tok.token_layer == i]]
        torch.testing.assert_close(values.mean(), torch.tensor(0.0, dtype=torch.float64), atol=1e-9, rtol=0)
        torch.testing.assert_close(values.std(correction=0), torch.tensor(1.0, dtype=torch.float64), atol=1e-9, rtol=0)


@pytest.mark.parametrize("name", list(LAYOUTS))
def test_per_parameter_tokens_round_trip_and_standardize_each_parameter(name):
    layout = _layout(name)
    base = torch.randn(layout.size, dtype=torch.float64)
    flat = base + 0.01 * torch.randn(20, layout.size, dtype=torch.float64)  # members close to one base
    tok = WeightTokenizer(layout, chunk=8, normalize="parameter").double().fit(flat)
    tokens = tok.encode(flat)
    torch.testing.assert_close(tok.decode(tokens), flat, atol=1e-12, rtol=0)
    values = torch.zeros_like(flat)
    values[:, tok.index[tok.mask]] = tokens[:, tok.mask]  # back to parameter order, still standardized
    zeros = torch.zeros(layout.size, dtype=torch.float64)
    torch.testing.assert_close(values.mean(0), zeros, atol=1e-9, rtol=0)
    torch.testing.assert_close(values.std(0, correction=0), zeros + 1, atol=1e-9, rtol=0)
    with pytest.raises(SpecError, match="normalize='tensor' is unknown"):
        WeightTokenizer(layout, normalize="tensor")


def test_layers_are_modules_in_layout_order():
    layout = _layout("mlp-layernorm")
    names = [n for n, _, _ in layer_slices(layout)]
    assert names == sorted({e.name.rsplit(".", 1)[0] for e in layout}, key=names.index)
    assert [s[1] for s in layer_slices(layout)][0] == 0 and layer_slices(layout)[-1][2] == layout.size
    first = layout.names[0].rsplit(".", 1)[0]
    assert layer_slices(layout)[0][2] == layout[f"{first}.weight"].numel + layout[f"{first}.bias"].numel


def test_partial_tokens_keep_the_other_layers_from_a_base_member():
    layout = _layout("mlp")
    head = layer_slices(layout)[-1]
    tok = WeightTokenizer(layout, chunk=4, layers=[head[0]])
    flat, base = torch.randn(3, layout.size), torch.randn(1, layout.size)
    tok.fit(flat)
    out = tok.decode(tok.encode(flat), base)
    torch.testing.assert_close(out[:, head[1] : head[2]], flat[:, head[1] : head[2]], atol=1e-6, rtol=0)
    assert torch.equal(out[:, : head[1]], base[:, : head[1]].expand(3, -1))
    with pytest.raises(SpecError, match="decode needs base="):
        tok.decode(tok.encode(flat))


def test_tokenizer_bad_input():
    layout = _layout("mlp")
    with pytest.raises(LayoutError, match=r"layers \['fc9'\] not in this layout"):
        WeightTokenizer(layout, layers=["fc9"])
    with pytest.raises(SpecError, match="chunk=0 must be >= 1"):
        WeightTokenizer(layout, chunk=0)
    with pytest.raises(LayoutError, match=rf"expected flat parameters \[B, {layout.size}\], got \(2, 5\)"):
        WeightTokenizer(layout).encode(torch.zeros(2, 5))
    with pytest.raises(SpecError, match="d_model divisible by heads"):
        AutoencoderConfig(d_model=10, heads=4)


def _members(n=24, seed=0):
    layout = _layout("mlp")
    g = torch.Generator().manual_seed(seed)
    return layout, torch.randn(n, layout.size, generator=g) * torch.linspace(0.2, 2.0, layout.size)


def test_autoencoder_reconstructs_its_training_members():
    """Tolerance: mean relative L2 error below 0.25 after 150 epochs on 24 members of a 65-parameter
    MLP, 8 latent values per 8-value token (no compression) and no latent noise; untrained it is ~1."""
    layout, flat = _members()
    torch.manual_seed(0)
    ae = WeightAutoencoder(WeightTokenizer(layout, chunk=8), AutoencoderConfig(d_model=32, latent_noise=0.0))
    with torch.no_grad():
        before = ((ae.reconstruct(flat) - flat).norm(dim=1) / flat.norm(dim=1)).mean()
    history = fit_autoencoder(ae, flat, FitOptions(epochs=150, batch_size=8, lr=3e-3))
    with torch.no_grad():
        err = ((ae.reconstruct(flat) - flat).norm(dim=1) / flat.norm(dim=1)).mean()
    assert err < 0.25 < before and history.loss[-1] < 0.2 * history.loss[0]
    assert ae.encode(flat).shape == (24, *ae.latent_shape)


def test_training_is_seeded_and_the_vae_adds_its_kl():
    layout, flat = _members(8)
    states = []
    for _ in range(2):
        torch.manual_seed(0)
        ae = WeightAutoencoder(WeightTokenizer(layout, chunk=8), AutoencoderConfig(d_model=16, heads=2, kl=1e-3))
        history = fit_autoencoder(ae, flat, FitOptions(epochs=2, batch_size=4))
        states.append(ae.state_dict())
    assert all(torch.equal(a, b) for a, b in zip(states[0].values(), states[1].values()))
    assert set(history.parts[-1]) == {"mse", "kl"} and history.parts[-1]["kl"] > 0
    assert "vae=True" in repr(ae)
    assert {"tokenizer.mean", "tokenizer.std"} <= set(states[0])  # the statistics travel with the weights


def _clusters(n=128, seed=0):
    """Latents ``[n, 3, 2]`` around one of two centres, and the one-hot centre as the condition."""
    g = torch.Generator().manual_seed(seed)
    label = torch.arange(n) % 2
    centres = torch.tensor([[2.0, -1.0], [-2.0, 1.0]])
    latents = centres[label][:, None, :].expand(n, 3, 2) + 0.1 * torch.randn(n, 3, 2, generator=g)
    return latents, torch.nn.functional.one_hot(label, 2).float()


def _diffusion(cond_dim=2):
    torch.manual_seed(0)
    config = DiffusionConfig(d_model=32, depth=2, heads=2, cond_dim=cond_dim, train_steps=100)
    return LatentDiffusion((3, 2), config)


def _as_tokens(cond: torch.Tensor) -> torch.Tensor:
    """A one-hot condition ``[B, 2]`` as two condition tokens ``[B, 2, 2]``: token ``k`` is
    ``cond[:, k]`` times the k-th unit vector."""
    return torch.diag_embed(cond)


@pytest.mark.parametrize("tokens", [False, True], ids=["vector", "tokens"])
def test_conditional_diffusion_samples_the_condition_and_unconditional_both(tokens):
    """DDPM training on two clusters of latents, DDIM sampling in 20 steps: at least 90% of the
    samples for a condition fall on its cluster's side; unconditional samples cover both. The
    condition is one vector, or condition tokens the latent tokens attend to."""
    latents, cond = _clusters()
    shape = _as_tokens if tokens else (lambda c: c)
    cond = shape(cond)
    model = _diffusion()
    history = fit_diffusion(model, latents, cond, FitOptions(epochs=40, batch_size=32, lr=2e-3))
    assert history.loss[-1] < 0.5 * history.loss[0]
    for c, sign in ((0, 1.0), (1, -1.0)):
        want = shape(torch.nn.functional.one_hot(torch.full((64,), c), 2).float())
        samples = model.sample(64, want, steps=20, guidance=2.0, generator=torch.Generator().manual_seed(1))
        assert (torch.sign(samples[..., 0]) == sign).float().mean() >= 0.9
    free = model.sample(64, steps=20, generator=torch.Generator().manual_seed(1))
    assert 0.2 < (free[..., 0] > 0).float().mean() < 0.8


def test_sampling_is_seeded_and_conditions_are_checked():
    latents, cond = _clusters(16)
    model = _diffusion()
    fit_diffusion(model, latents, cond, FitOptions(epochs=1, batch_size=8))
    a, b, c = (model.sample(4, cond[:4], steps=5, generator=torch.Generator().manual_seed(s)) for s in (3, 3, 4))
    assert torch.equal(a, b) and not torch.equal(a, c) and a.shape == (4, 3, 2)
    with pytest.raises(SpecError, match=r"condition must have shape \[4, 2\] or \[4, K, 2\], got \[4, 3\]"):
        model.sample(4, torch.zeros(4, 3))
    with pytest.raises(SpecError, match="n and steps must be >= 1, got n=0"):
        model.sample(0)
    with pytest.raises(SpecError, match="this model is unconditional"):
        _diffusion(cond_dim=0).sample(2, torch.zeros(2, 2))


def test_sampling_does_not_clip_standardized_latents():
    """Latents 0 (condition 0, 3 in 4 examples) or 4 (condition 1): standardized, the 4s lie at
    +1.73 spreads. diffusers' default would clip predicted clean latents to [-1, 1] and return about
    1 + 1.73 = 2.7 for condition 1; unclipped, DDIM lands near 4."""
    label = (torch.arange(128) % 4 == 0).long()
    latents = 4.0 * label[:, None, None].float().expand(128, 3, 2)
    latents = latents + 0.05 * torch.randn(latents.shape, generator=torch.Generator().manual_seed(0))
    cond = torch.nn.functional.one_hot(label, 2).float()
    model = _diffusion()
    fit_diffusion(model, latents, cond, FitOptions(epochs=40, batch_size=32, lr=2e-3))
    want = torch.tensor([[0.0, 1.0]]).expand(32, 2)
    samples = model.sample(32, want, steps=20, guidance=2.0, generator=torch.Generator().manual_seed(1))
    assert abs(float(samples.median()) - 4.0) < 0.5


def test_a_dropped_condition_is_the_null_condition_for_vectors_and_tokens():
    """Classifier-free guidance's null branch: with ``drop`` set the prediction does not depend on
    the condition; for a condition vector it equals the prediction without one."""
    model = _diffusion()
    noisy, t, drop = torch.randn(3, 3, 2), torch.tensor([5, 50, 90]), torch.ones(3, dtype=torch.bool)
    d = model.denoiser
    with torch.no_grad():
        torch.testing.assert_close(d(noisy, t, torch.randn(3, 2), drop), d(noisy, t, None))
        a, b = d(noisy, t, torch.randn(3, 4, 2), drop), d(noisy, t, torch.randn(3, 4, 2), drop)
        torch.testing.assert_close(a, b)
        assert not torch.allclose(d(noisy, t, torch.randn(3, 4, 2)), a)


@pytest.mark.parametrize("kind", ["epsilon", "sample", "v_prediction"])
def test_the_loss_targets_what_the_denoiser_predicts(kind, monkeypatch):
    """A denoiser that outputs zeros: the loss is the mean square of its target, the noise, the
    clean (standardized) latents, or the velocity sqrt(a_t) * noise - sqrt(1 - a_t) * x0 (DDPM's
    cumulative alpha a_t at each example's timestep), drawn with the same generator."""
    latents, _ = _clusters(8)
    config = DiffusionConfig(d_model=8, depth=1, heads=2, train_steps=100, prediction_type=kind)
    model = LatentDiffusion((3, 2), config)
    monkeypatch.setattr(model.denoiser, "forward", lambda noisy, t, cond, drop: torch.zeros_like(noisy))
    loss = model.loss(latents, generator=torch.Generator().manual_seed(5))
    gen = torch.Generator().manual_seed(5)
    noise = torch.randn(latents.shape, generator=gen)
    t = torch.randint(0, 100, (8,), generator=gen)
    alpha = model.scheduler.alphas_cumprod[t][:, None, None]
    target = {"epsilon": noise, "sample": latents, "v_prediction": alpha.sqrt() * noise - (1 - alpha).sqrt() * latents}
    torch.testing.assert_close(loss, target[kind].square().mean(), rtol=1e-5, atol=1e-6)


def test_bad_prediction_type_and_lr_schedule_are_refused():
    with pytest.raises(SpecError, match="prediction_type 'x0' is unknown"):
        DiffusionConfig(prediction_type="x0")
    with pytest.raises(SpecError, match="schedule 'linear' is unknown; use constant or cosine"):
        FitOptions(schedule="linear")
    layout, flat = _members(8)
    histories = []
    for schedule in ("constant", "cosine"):
        torch.manual_seed(0)
        ae = WeightAutoencoder(WeightTokenizer(layout, chunk=8), AutoencoderConfig(d_model=16, heads=2))
        histories.append(fit_autoencoder(ae, flat, FitOptions(epochs=3, batch_size=4, schedule=schedule)).loss)
    assert histories[0][0] == histories[1][0] and histories[0][-1] != histories[1][-1]  # the lr changes after step 1
