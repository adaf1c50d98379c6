"""The weight generator: dataset encoder, saved generator, generated zoos and `weightzoo generate`."""

import math
from dataclasses import replace

import numpy as np
import pytest
import torch
from conftest import tamper

from weightzoo import open_zoo
from weightzoo.cli import main
from weightzoo.errors import SpecError, StoreError
from weightzoo.metanet.diffusion import (
    AutoencoderConfig,
    DatasetEncoder,
    DiffusionConfig,
    EncoderConfig,
    FitOptions,
    GeneratorConfig,
    TaskSamples,
    conditioning_set,
    contrastive_loss,
    generate_members,
    load_generator,
    parse_task,
    task_key,
    train_generator,
)
from weightzoo.metanet.functional import Functional
from weightzoo.zoo.evaluate import stored_hparams

TINY = dict(
    chunk=32,
    autoencoder=AutoencoderConfig(d_model=32, latent_dim=8, depth=1),
    diffusion=DiffusionConfig(d_model=32, depth=1, train_steps=100),
    encoder=EncoderConfig(d_model=32, depth=1, embed_dim=16, per_class=4),
    autoencoder_fit=FitOptions(epochs=3, batch_size=8),
    diffusion_fit=FitOptions(epochs=3, batch_size=8),
    steps=5,
)


def run(capsys, *argv):
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture(scope="module")
def tasks_zoo(tmp_path_factory):
    """The shipped tiny-mnist1d-conflict zoo: 4 conflicting 3-class tasks, 6 members each."""
    from weightzoo.zoo.build import build_zoo

    path = tmp_path_factory.mktemp("conflict") / "conflict.zarr"
    build_zoo("tiny-mnist1d-conflict", path)
    return path


@pytest.fixture(scope="module")
def generator_dir(tasks_zoo, tmp_path_factory):
    out = tmp_path_factory.mktemp("gen") / "gen"
    train_generator(tasks_zoo, out, config=GeneratorConfig(**TINY, contrastive_epochs=2))
    return out


# ---------------------------------------------------------------------------- dataset encoder
def test_dataset_encoder_ignores_sample_order_and_reads_labels():
    torch.manual_seed(0)
    enc = DatasetEncoder(5, 4, EncoderConfig(d_model=16, depth=2, heads=2, embed_dim=8)).eval()
    x, y = torch.randn(3, 12, 5), torch.randint(0, 4, (3, 12))
    perm = torch.randperm(12)
    torch.testing.assert_close(enc(x[:, perm], y[:, perm]), enc(x, y), atol=1e-5, rtol=0)
    assert not torch.allclose(enc(x, (y + 1) % 4), enc(x, y), atol=1e-4)  # the labels matter
    with pytest.raises(SpecError, match=r"expected x \[B, S, 5\]"):
        enc(x[:, :, :4], y)


def test_label_pooled_encoder_gives_one_token_per_output():
    """pool="label": token ``o`` is the mean mixed token of the samples labeled ``o`` plus output
    ``o``'s embedding; an output no sample is labeled with gets the learned "unused" vector, so its
    token is the same whatever the set holds."""
    torch.manual_seed(0)
    enc = DatasetEncoder(5, 4, EncoderConfig(d_model=16, depth=2, heads=2, embed_dim=8, pool="label")).eval()
    x, y = torch.randn(2, 12, 5), torch.tensor([[0, 1, 2] * 4, [2, 3, 1] * 4])
    out = enc(x, y)
    assert out.shape == (2, 4, 8) and enc.tokens == 4
    perm = torch.randperm(12)
    torch.testing.assert_close(enc(x[:, perm], y[:, perm]), out, atol=1e-5, rtol=0)
    with torch.no_grad():
        unused = enc.out(enc.unused + enc.output.weight)
    torch.testing.assert_close(out[0, 3], unused[3])
    torch.testing.assert_close(out[1, 0], unused[0])
    assert not torch.allclose(out[0, 1], unused[1], atol=1e-3)  # a used output reads its samples
    with pytest.raises(SpecError, match="pool 'mean' is unknown"):
        EncoderConfig(pool="mean")


def test_a_label_pooled_generator_trains_saves_and_samples(tasks_zoo, tmp_path, capsys):
    sizes = ["--ae-epochs", 2, "--epochs", 2, "--contrastive-epochs", 1, "--chunk", 32, "--latent-dim", 8]
    out = tmp_path / "gen"
    code, _, err = run(capsys, "generate", "train", "--zoo", tasks_zoo, "--out", out, "--pool", "label", *sizes)
    assert code == 0, err
    gen = load_generator(tmp_path / "gen")
    assert gen.config.encoder.pool == "label"
    assert gen.encoder.tokens == gen.meta["num_outputs"] == 10
    a = generate_members(gen, tmp_path / "a.zarr", like_member=2, n=2, seed=0)
    b = generate_members(gen, tmp_path / "b.zarr", like_member=2, n=2, seed=0)
    assert torch.equal(a.params, b.params) and torch.isfinite(a.params).all()


def test_task_samples_draw_every_class_and_refuse_missing_ones():
    x = torch.arange(20, dtype=torch.float32)[:, None]
    y = torch.tensor([3] * 10 + [7] * 8 + [1] * 2)
    samples = TaskSamples.from_data(x, y, [1, 3, 7])
    gen = torch.Generator().manual_seed(0)
    xs, ys = samples.draw(4, gen)
    assert ys.tolist() == [1] * 4 + [3] * 4 + [7] * 4
    assert all(int(y[int(v)]) == int(lab) for v, lab in zip(xs[:, 0], ys))  # each sample keeps its label
    assert len(set(xs[4:8, 0].tolist())) == 4  # without replacement where a class has enough
    with pytest.raises(SpecError, match=r"no samples of label\(s\) \[5\]"):
        TaskSamples.from_data(x, y, [1, 3, 5, 7])


def test_contrastive_loss_matches_infonce_by_hand():
    a = torch.eye(3)
    t = 0.5
    # each row: logits 1/t on its pair, 0 elsewhere -> -log(e^2 / (e^2 + 2)), the same both ways
    expected = -math.log(math.exp(2) / (math.exp(2) + 2))
    torch.testing.assert_close(contrastive_loss(a, a, t), torch.tensor(expected), atol=1e-6, rtol=0)
    swapped = contrastive_loss(a, a[[1, 0, 2]], t)
    assert swapped > contrastive_loss(a, a, t)


def test_parse_task_gives_canonical_variants_and_one_line_errors():
    assert parse_task("classes=7,3,5 label_perm=2") == {"task.classes": "3,5,7", "task.label_perm": 2}
    assert parse_task("classes=1,2;noise=0.5") == {"task.classes": "1,2", "task.noise": 0.5}
    for text, needle in [("colors=1", "unknown key 'colors'"), ("classes", "KEY=VALUE"), ("", "name the task")]:
        with pytest.raises(SpecError, match=needle):
            parse_task(text)


# ---------------------------------------------------------------------------- generator
def test_generator_round_trips_and_samples_reproducibly(generator_dir, tasks_zoo, tmp_path):
    gen = load_generator(generator_dir)
    assert gen.conditional and gen.meta["num_classes"] == 3 and len(gen.meta["tasks"]) == 4
    a = generate_members(gen, tmp_path / "a.zarr", like_member=5, n=3, seed=1)
    b = generate_members(gen, tmp_path / "b.zarr", like_member=5, n=3, seed=1)
    c = generate_members(gen, tmp_path / "c.zarr", like_member=5, n=3, seed=2)
    assert torch.equal(a.params, b.params) and not torch.equal(a.params, c.params)
    with open_zoo(tasks_zoo) as z:
        assert a.task == task_key(stored_hparams(z, [5])[0])
        assert open_zoo(tmp_path / "a.zarr").column("seed").tolist() == [z.column("seed", [5])[0]] * 3


def test_training_twice_with_one_seed_gives_the_same_generator(tasks_zoo):
    """The config's seeds decide the generator, whatever the global random state was before."""
    states = []
    for outside in (1, 2):
        torch.manual_seed(outside)
        trained = train_generator(tasks_zoo, config=GeneratorConfig(**TINY, contrastive_epochs=1))
        states.append(trained.generator.state_dict())
    assert states[0].keys() == states[1].keys()
    assert all(torch.equal(states[0][k], states[1][k]) for k in states[0])
    reseeded = replace(TINY["autoencoder_fit"], seed=1)
    other = train_generator(tasks_zoo, config=GeneratorConfig(**{**TINY, "autoencoder_fit": reseeded}))
    weights = [name for name, _ in other.generator.autoencoder.named_parameters(prefix="autoencoder")]
    assert not any(torch.equal(other.generator.state_dict()[k], states[0][k]) for k in weights)


def test_candidates_keep_the_draws_with_the_lowest_conditioning_loss(generator_dir, tasks_zoo, tmp_path, capsys):
    gen = load_generator(generator_dir)
    with open_zoo(tasks_zoo) as z:
        x, y = conditioning_set(z, stored_hparams(z, [5])[0], 5, gen, seed=0)
    drawn = gen.sample(8, (x, y), seed=3)
    kept = gen.sample(3, (x, y), seed=3, candidates=8)
    logits = Functional(gen.meta["architecture"]).outputs(drawn, x)  # [8, S, outputs]
    loss = torch.stack([torch.nn.functional.cross_entropy(row, y) for row in logits])
    order = torch.argsort(loss)
    assert torch.equal(kept, drawn[order[:3]])  # the 3 lowest, lowest first
    assert loss[order[:3]].max() <= loss[order[3:]].min()
    out = tmp_path / "kept.zarr"
    code, _, err = run(capsys, "generate", "sample", generator_dir, "--like-member", 5, "--n", 3,
                       "--candidates", 8, "--out", out)  # fmt: skip
    assert code == 0, err
    with open_zoo(out) as stored:  # the CLI draws its conditioning set with --seed 0, samples with it too
        assert stored.attrs["source"]["generated"]["candidates"] == 8
        np.testing.assert_array_equal(stored.params().float().numpy(), gen.sample(3, (x, y), candidates=8).numpy())


def test_generated_store_opens_verifies_and_evaluates_like_a_zoo(generator_dir, tasks_zoo, tmp_path, capsys):
    out = tmp_path / "gen.zarr"
    code, text, err = run(capsys, "generate", "sample", generator_dir, "--task", "classes=0,1,2 label_perm=2",
                          "--n", 4, "--out", out)  # fmt: skip
    assert code == 0, err
    assert "4 generated members" in text and "test_acc median" in text
    with open_zoo(out) as z:
        assert len(z) == 4 and z.verify().ok
        assert z.column("task.classes").tolist() == ["0,1,2"] * 4
        assert z.attrs["source"]["generated"]["task"] == '{"task.classes": "0,1,2", "task.label_perm": 2}'
        again = z.evaluate(z.params(), list(range(4)))  # the stored metrics are zoo.evaluate's
        for name, values in again.items():
            np.testing.assert_allclose(z.metric(name), values, rtol=1e-6)
        assert set(z.table().columns) >= {"test_acc", "train_acc", "sample", "seed"}
    for argv in (["zoo", "info", out], ["zoo", "verify", out], ["zoo", "eval", out]):
        code, _, err = run(capsys, *argv)
        assert code == 0, (argv, err)


def test_train_and_sample_end_to_end_through_the_cli(tasks_zoo, tmp_path, capsys):
    gen_dir, out = tmp_path / "gen", tmp_path / "g.zarr"
    code, text, err = run(capsys, "generate", "train", "--zoo", tasks_zoo, "--out", gen_dir, "--members", "0-17",
                          "--ae-epochs", 2, "--epochs", 2, "--chunk", 32, "--latent-dim", 8)  # fmt: skip
    assert code == 0, err
    assert "dataset generator on 18 members" in text
    code, text, err = run(capsys, "generate", "sample", gen_dir, "--like-member", 20, "--n", 2, "--out", out)
    assert code == 0, err
    with open_zoo(out) as z, open_zoo(tasks_zoo) as src:
        assert len(z) == 2 and z.column("task.classes").tolist() == [src.column("task.classes", [20])[0]] * 2
        assert np.all(np.isfinite(z.metric("test_acc")))


def test_unconditional_and_partial_generation_keep_the_other_layers(tasks_zoo, tmp_path):
    with open_zoo(tasks_zoo) as z:
        head = z.layout.names[-1].rsplit(".", 1)[0]
        members = [i for i in range(len(z)) if z.column("task.classes", [i])[0] == "0,1,2"]
        members = [i for i in members if int(z.column("task.label_perm", [i])[0]) == 1]
        config = GeneratorConfig(**{**TINY, "condition": "none", "layers": (head,)})
        gen = train_generator(z, members=members, config=config).generator
        result = generate_members(gen, tmp_path / "p.zarr", zoo=z, like_member=members[1], n=3)
        fixed = z.layout.size - z.layout[f"{head}.weight"].numel - z.layout[f"{head}.bias"].numel
        base = z.params([members[1]])[0]
    assert not gen.conditional and gen.tokenizer.layer_names == [head]
    with pytest.raises(SpecError, match="--candidates ranks members on the conditioning set; this generator is unc"):
        gen.sample(2, candidates=4)
    aligned = result.params[:, :fixed]
    # the member's own hidden layers, aligned to the generator's reference: a permutation of its values
    assert torch.allclose(aligned.sort(dim=1).values, base[:fixed].sort().values.expand(3, -1))
    assert not torch.allclose(result.params[0, fixed:], result.params[1, fixed:])  # generated heads differ


# ---------------------------------------------------------------------------- bad input
@pytest.mark.parametrize(
    "case, needle",
    [
        ("mixed-zoo", "members of mixed layouts"),
        ("other-class-count", "the task has 2 classes; this generator was built for tasks of 3 classes"),
        ("bad-task", "unknown key 'clases'"),
        ("class-out-of-range", "names a class >= 10"),
        ("no-task", "give exactly one of --task VARIANT or --like-member I"),
        ("n-zero", "--n must be >= 1"),
        ("few-candidates", "--candidates must be at least --n (2), got 1"),
        ("tampered", "checksum differs"),
        ("not-a-generator", "config.json: missing"),
        ("out-exists", "already exists; choose another path"),
        ("bad-condition", "--condition 'labels' is unknown"),
        ("bad-pool", "pool 'mean' is unknown"),
    ],
)
def test_bad_input_is_one_line_exit_2_and_writes_nothing(
    case, needle, generator_dir, tasks_zoo, mixed_zoo, tmp_path, capsys
):
    out = tmp_path / "out.zarr"
    sample = ["generate", "sample", generator_dir, "--out", out, "--n", 2]
    argv = {
        "mixed-zoo": ["generate", "train", "--zoo", mixed_zoo, "--out", tmp_path / "g"],
        "other-class-count": [*sample, "--task", "classes=0,1 label_perm=1"],
        "bad-task": [*sample, "--task", "clases=0,1,2"],
        "class-out-of-range": [*sample, "--task", "classes=0,1,12"],
        "no-task": sample,
        "n-zero": ["generate", "sample", generator_dir, "--out", out, "--n", 0, "--like-member", 0],
        "few-candidates": [*sample, "--like-member", 0, "--candidates", 1],
        "not-a-generator": ["generate", "sample", tmp_path, "--out", out, "--like-member", 0],
        "out-exists": ["generate", "sample", generator_dir, "--out", tmp_path / "exists.zarr", "--like-member", 0],
        "bad-condition": ["generate", "train", "--zoo", tasks_zoo, "--out", tmp_path / "g", "--condition", "labels"],
        "bad-pool": ["generate", "train", "--zoo", tasks_zoo, "--out", tmp_path / "g", "--pool", "mean"],
    }.get(case)
    if case == "out-exists":
        (tmp_path / "exists.zarr").mkdir()
    if case == "tampered":
        copy = tmp_path / "copy"
        copy.mkdir()
        for f in generator_dir.iterdir():
            (copy / f.name).write_bytes(f.read_bytes())
        tamper(copy / "model.safetensors")
        argv = ["generate", "sample", copy, "--out", out, "--like-member", 0]
    code, _, err = run(capsys, *argv)
    assert code == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1 and needle in lines[0], err
    assert not out.exists() and not (tmp_path / "g").exists()


def test_a_conditioning_set_with_missing_classes_is_refused(generator_dir, tmp_path):
    gen = load_generator(generator_dir)
    x, y = torch.randn(8, 40), torch.tensor([0, 0, 0, 0, 1, 1, 1, 1])
    with pytest.raises(SpecError, match="the task has 2 classes; this generator was built for tasks of 3"):
        generate_members(gen, tmp_path / "x.zarr", like_member=0, n=2, conditioning=(x, y))
    assert not (tmp_path / "x.zarr").exists()


def test_generator_goes_to_the_hub_and_back(generator_dir, fake_hub, tmp_path, capsys):
    from weightzoo.metanet.diffusion import WeightGenerator

    code, text, err = run(capsys, "generate", "push", generator_dir, "user/gen")
    assert code == 0, err and "pushed" in text
    back = WeightGenerator.from_pretrained("user/gen")
    here = load_generator(generator_dir)
    for (k, v), (k2, v2) in zip(here.state_dict().items(), back.state_dict().items()):
        assert k == k2 and torch.equal(v, v2)
    code, _, err = run(capsys, "generate", "sample", "user/gen", "--out", tmp_path / "h.zarr", "--like-member", 1,
                       "--n", 1)  # fmt: skip
    assert code == 0, err


def test_load_generator_refuses_other_saved_models(tmp_path):
    from weightzoo.metanet.saved import save_folder

    save_folder(tmp_path / "m", {"w": torch.zeros(2)}, {"model": "mlp"}, "weightzoo-metanet")
    with pytest.raises(StoreError, match="not a weightzoo weight generator"):
        load_generator(tmp_path / "m")


def test_autoencoder_round_trips_zoo_members_and_keeps_their_accuracy(tasks_zoo):
    """Tolerance: on the 24 members of tiny-mnist1d-conflict (826 parameters, 32-value tokens, 32
    latent values each), after 150 epochs the median relative L2 error is below 0.1 and the median
    reconstructed member keeps at least 90% of its test accuracy; untrained, the error is about 1."""
    from weightzoo.metanet.diffusion import WeightAutoencoder, WeightTokenizer, fit_autoencoder

    with open_zoo(tasks_zoo) as z:
        flat = z.params().float()
        torch.manual_seed(0)
        ae = WeightAutoencoder(WeightTokenizer(z.layout, chunk=32), AutoencoderConfig(d_model=64, latent_dim=32))
        fit_autoencoder(ae, flat, FitOptions(epochs=150, batch_size=8))
        with torch.no_grad():
            rec = ae.reconstruct(flat)
        err = ((rec - flat).norm(dim=1) / flat.norm(dim=1)).median()
        kept = z.evaluate(rec, list(range(len(z))))["test_acc"] / z.metric("test_acc")
    assert err < 0.1, err
    assert np.median(kept) >= 0.9, kept
