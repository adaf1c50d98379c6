"""Per-member task variants: what each does to a member's data, the group trainer against the loop
with variants, specs that vary the task, and one-line errors for variants that do not fit."""

import math

import numpy as np
import pytest
import torch

from weightzoo.errors import SpecError
from weightzoo.zoo import archs
from weightzoo.zoo.build import build_zoo, plan_groups
from weightzoo.zoo.opener import open_zoo
from weightzoo.zoo.spec import parse_spec
from weightzoo.zoo.tasks import Task, load_task
from weightzoo.zoo.train import train_group, train_member
from weightzoo.zoo.train.variants import NOISE_SEED, TaskVariant, member_variant
from weightzoo.zoo.train.variants import resolve as resolve_variant

RUN = {"epochs": 2, "checkpoint_epochs": [0, 1, 2], "batch_size": 64}


@pytest.fixture(scope="module")
def digits():
    return load_task("digits")


@pytest.fixture(scope="module")
def mnist():
    return load_task("mnist5k")


def test_classes_pick_the_samples_of_those_classes(digits):
    variant = member_variant({"task.classes": [7, 3]}, digits)
    stored = resolve_variant({"task.classes": [7, 3]}, np.random.default_rng(0), 10)["task.classes"]
    assert variant.classes == (3, 7) and stored == "3,7"
    train, test = variant.train_pool(digits), variant.test_pool(digits)
    assert set(digits.y_train[train].tolist()) == {3, 7} and set(digits.y_test[test].tolist()) == {3, 7}
    assert len(train) == int(((digits.y_train == 3) | (digits.y_train == 7)).sum())
    assert torch.equal(train, train.sort().values)


def test_label_permutation_is_the_seeded_permutation_of_the_class_ids(digits):
    variant = member_variant({"task.label_perm": 11}, digits)
    expected = np.random.default_rng(11).permutation(10)
    assert variant.label_map(10).tolist() == expected.tolist() and sorted(expected) == list(range(10))
    assert member_variant({}, digits).label_map(10) is None


def test_input_permutation_moves_every_feature_the_same_way(digits):
    shuffled = member_variant({"task.input_perm": 5}, digits).inputs(digits)
    perm = np.random.default_rng(5).permutation(64)
    assert torch.equal(shuffled.x_train, digits.x_train[:, perm])
    assert torch.equal(shuffled.x_test, digits.x_test[:, perm])
    assert torch.equal(shuffled.y_train, digits.y_train)


def test_rotations_and_flips_turn_the_images(mnist):
    images = mnist.x_train[:5]
    turned = member_variant({"task.rotate": 90}, mnist).inputs(mnist).x_train[:5]
    assert torch.equal(turned, torch.rot90(images, 1, dims=(-2, -1)))  # counter-clockwise, exact
    flipped = member_variant({"task.flip": "hv"}, mnist).inputs(mnist).x_train[:5]
    assert torch.equal(flipped, images.flip(-1).flip(-2))


@pytest.mark.parametrize("degrees", [45.0, 90.0, 150.0, -60.0])
def test_an_arbitrary_rotation_renders_a_point_where_geometry_puts_it(degrees):
    """A bright dot 10 pixels above the centre of a 29x29 image lands at its position turned by
    ``degrees`` counter-clockwise (its centre of mass, to a tenth of a pixel)."""
    image = torch.zeros(1, 1, 29, 29)
    image[0, 0, 4, 14] = 1.0  # row 4 (up is smaller rows), column 14: straight above the centre (14, 14)
    task = Task("dot", "classification", image, torch.zeros(1, dtype=torch.int64), image, torch.zeros(1), 1,
                sample_shape=(1, 29, 29))  # fmt: skip
    picture = member_variant({"task.rotate": degrees}, task).inputs(task).x_train[0, 0]
    rows, cols = torch.meshgrid(torch.arange(29.0), torch.arange(29.0), indexing="ij")
    mass = picture.clamp(min=0)
    centre = ((mass * rows).sum() / mass.sum(), (mass * cols).sum() / mass.sum())
    angle = math.radians(90 + degrees)  # the dot starts at 90 degrees (up)
    expected = (14 - 10 * math.sin(angle), 14 + 10 * math.cos(angle))
    assert abs(float(centre[0]) - expected[0]) < 0.1 and abs(float(centre[1]) - expected[1]) < 0.1


def test_noise_is_one_fixed_field_per_level(mnist):
    a = member_variant({"task.noise": 0.5}, mnist).inputs(mnist)
    b = member_variant({"task.noise": 0.5}, mnist).inputs(mnist)
    assert torch.equal(a.x_train, b.x_train) and NOISE_SEED == 0
    diff = a.x_train - mnist.x_train
    assert abs(float(diff.std()) - 0.5) < 0.01 and abs(float(diff.mean())) < 0.01
    assert not torch.equal(a.x_test - mnist.x_test, diff[: len(mnist.x_test)])  # the test split has its own


def test_the_group_trainer_follows_the_loop_with_variants(digits):
    arch = archs.mlp(64, [16, 16], 10)
    hps = [
        {"seed": 1, "optimizer": "adam", "lr": 3e-3, "task.classes": "0,3,7"},
        {"seed": 2, "optimizer": "adam", "lr": 3e-3, "task.label_perm": 5, "dropout": 0.2},
        {"seed": 3, "optimizer": "sgd", "lr": 0.05, "task.classes": "1,2", "task.label_perm": 9,
         "task.train_samples": 50},
        {"seed": 4, "optimizer": "adam", "lr": 3e-3, "train_fraction": 0.5},
    ]
    group = train_group(arch, digits, hps, **RUN)
    for g, hp in enumerate(hps):
        member = train_member(arch, digits, hp, **RUN)
        np.testing.assert_allclose(group.params[g], member.params[0], atol=1e-5, rtol=0)
        for k, v in member.metrics.items():
            np.testing.assert_allclose(group.metrics[k][g], v[0], atol=1e-5, rtol=1e-5)
    assert group.metrics["test_acc"][0, -1] > 0.5  # three classes learn quickly; chance is 1/3 at best


def test_members_sharing_an_input_variant_train_together(mnist):
    arch = archs.small_cnn_zoo("relu", 1, 10)
    shared = {"task.rotate": 90, "task.input_perm": 3, "train_fraction": 0.05, "optimizer": "adam", "lr": 1e-2}
    hps = [{**shared, "seed": s, "task.classes": c} for s, c in ((0, "0,1"), (1, None))]
    run = {"epochs": 1, "checkpoint_epochs": [1], "batch_size": 32}
    group = train_group(arch, mnist, hps, **run)
    for g, hp in enumerate(hps):
        np.testing.assert_allclose(group.params[g], train_member(arch, mnist, hp, **run).params[0], atol=1e-4, rtol=0)
    with pytest.raises(SpecError, match="must share their input variants"):
        train_group(arch, mnist, [hps[0], {**hps[1], "task.rotate": 0}], **run)


MULTI = {
    "name": "multi",
    "task": "digits",
    "architecture": {"family": "mlp", "args": {"in_features": 64, "hidden": [8], "out_features": 10}},
    "members": 12,
    "epochs": 1,
    "checkpoint_epochs": [0, 1],
    "batch_size": 64,
    "hparams": {"optimizer": "adam", "lr": 1e-2, "task.classes": 3, "task.label_perm": {"choice": [True, False]}},
    "grid": {"task.input_perm": [0, 7]},
}


def test_a_spec_varies_the_task_and_stores_each_members_variant(tmp_path):
    spec = parse_spec(MULTI)
    assert spec.variant_hparams == ["task.classes", "task.input_perm", "task.label_perm"] and spec.arch_hparams == []
    groups = plan_groups(spec)
    assert {TaskVariant.from_hparams(h).input_perm for g in groups for h in g.hparams} == {0, 7}
    assert all(len({TaskVariant.from_hparams(h).input_key for h in g.hparams}) == 1 for g in groups)
    build_zoo(MULTI, tmp_path / "multi.zarr")
    with open_zoo(tmp_path / "multi.zarr") as zoo:
        table = zoo.table()
        subsets = [tuple(map(int, c.split(","))) for c in table["task.classes"]]
        assert all(len(set(c)) == 3 for c in subsets) and len(set(subsets)) > 3  # drawn per member
        perms = table["task.label_perm"].tolist()
        assert 0 in perms and any(p > 0 for p in perms)
        assert table["task.input_perm"].tolist() == [0, 7] * 6
        assert spec.member_hparams(4)["task.classes"] == table["task.classes"][4]  # the same draw again
        data = zoo.task_data(4)
        labels = TaskVariant.from_hparams({"task.label_perm": perms[4]}).label_map(10)
        allowed = set(subsets[4]) if labels is None else {int(labels[c]) for c in subsets[4]}
        assert set(data.y_train.tolist()) == allowed and set(data.y_test.tolist()) == allowed


@pytest.mark.parametrize(
    "hparams,match",
    [
        ({"task.colour": 1}, r"unknown task variant 'task.colour'; valid: task.classes, task.label_perm"),
        ({"task.classes": 11}, "draws 11 classes, but the task has 10"),
        ({"task.classes": {"choice": [[0, 12]]}}, r"names a class >= 10; task 'digits' has classes 0..9"),
        ({"task.train_samples": 5000}, "only 1437 training samples"),
        ({"task.flip": "x"}, r"flip must be one of \['', 'h', 'v', 'hv'\]"),
    ],
)
def test_variants_that_do_not_fit_are_one_line(hparams, match):
    with pytest.raises(SpecError, match=match) as info:
        parse_spec({**MULTI, "hparams": {"optimizer": "adam", **hparams}, "grid": {}})
    assert "\n" not in str(info.value) and str(info.value).startswith("spec: ")


def test_rotations_need_an_image_task():
    sequences = {**MULTI, "task": "mnist1d", "hparams": {"task.rotate": 10}, "grid": {},
                 "architecture": {"family": "mlp", "args": {"in_features": 40, "hidden": [8], "out_features": 10}}}
    with pytest.raises(SpecError, match=r"need an image task \(C x H x W\); task 'mnist1d' is not"):
        parse_spec(sequences)


def test_label_variants_need_a_classification_task():
    inr = {"name": "i", "task": {"name": "digits-inr", "count": 2}, "members": "all", "epochs": 1,
           "architecture": {"family": "siren", "args": {}}, "hparams": {"task.label_perm": 3}}  # fmt: skip
    with pytest.raises(SpecError, match="need a classification task, not task 'digits-inr'"):
        parse_spec(inr)


def test_the_shipped_multi_task_spec_builds(tmp_path):
    build_zoo("tiny-mnist1d-tasks", tmp_path / "tasks.zarr")
    with open_zoo(tmp_path / "tasks.zarr") as zoo:
        subsets = zoo.column("task.classes").tolist()
        assert len(zoo) == 16 and len(set(subsets)) >= 10 and all(len(s.split(",")) == 5 for s in subsets)
        assert zoo.summary()["variants"] == {"task.classes": len(set(subsets))}
        assert set(zoo.task_data(3).y_test.tolist()) == set(map(int, subsets[3].split(",")))
