"""WeightDataset, collate, splits and DataLoader integration on both backends."""

import numpy as np
import pytest
import torch
from conftest import make_zoo

from weightzoo.datasets import WeightDataset, collate, split_indices
from weightzoo.errors import SpecError, StoreError
from weightzoo.weightspace import WeightSpace
from weightzoo.zoo.opener import open_zoo


@pytest.fixture
def zoo_path(tmp_path, suffix):
    path = tmp_path / f"zoo{suffix}"
    params = make_zoo(path)
    return path, params


@pytest.mark.parametrize("in_memory", [True, False], ids=["memory", "streaming"])
def test_epoch_covers_every_member_once_with_its_target(zoo_path, in_memory):
    path, params = zoo_path
    ds = WeightDataset(path, target="test_acc", in_memory=in_memory)
    assert ds.in_memory is in_memory and len(ds) == 40
    acc = ds.zoo.metric("test_acc")
    seen = []
    for ws, y in ds.loader(batch_size=7, shuffle=True, seed=3):
        assert isinstance(ws, WeightSpace) and ws.weights[0].shape[1:] == (1, 6, 4)
        flat = ws.to_flat()
        for row, target in zip(flat, y):
            i = int(np.flatnonzero((params[:, -1] == row.numpy()).all(axis=1))[0])
            assert target.item() == pytest.approx(float(acc[i]))
            seen.append(i)
    assert sorted(seen) == list(range(40))


def test_item_and_epoch_selection(zoo_path):
    path, params = zoo_path
    ds = WeightDataset(path, epoch=0)
    assert isinstance(ds[5], WeightSpace)
    assert torch.equal(ds[5].to_flat()[0], torch.from_numpy(params[5, 0]))
    with pytest.raises(StoreError, match="no checkpoint at epoch 7"):
        WeightDataset(path, epoch=7)


def test_string_target_becomes_class_index(zoo_path):
    path, _ = zoo_path
    ds = WeightDataset(path, target="label")
    assert ds.classes == ["cat", "dog", "emu"]
    ws, y = ds[4]
    assert y.dtype == torch.long and y.item() == 1  # member 4 -> "dog"


def test_multiple_targets_stack(zoo_path):
    path, _ = zoo_path
    ds = WeightDataset(path, target=["test_acc", "lr"])
    _, y = ds[0]
    assert y.shape == (2,)


def test_unknown_target_names_the_columns(zoo_path):
    path, _ = zoo_path
    with pytest.raises(StoreError, match="target 'accuracy' is neither a metric"):
        WeightDataset(path, target="accuracy")


def test_splits_are_deterministic_disjoint_and_complete():
    a = split_indices(100, seed=1)
    b = split_indices(100, seed=1)
    assert all(np.array_equal(a[k], b[k]) for k in a)
    assert [len(a[k]) for k in ("train", "val", "test")] == [80, 10, 10]
    assert sorted(np.concatenate(list(a.values())).tolist()) == list(range(100))
    assert not np.array_equal(split_indices(100, seed=2)["test"], a["test"])
    with pytest.raises(SpecError, match="sum"):
        split_indices(10, (0.5, 0.2, 0.2))


def test_group_split_keeps_groups_together(zoo_path):
    path, _ = zoo_path
    parts = {
        s: WeightDataset(path, split=s, group_by="image", fractions=(0.5, 0.25, 0.25)) for s in ("train", "val", "test")
    }
    images = {s: set(ds.zoo.column("image", ds.indices).tolist()) for s, ds in parts.items()}
    assert (
        not (images["train"] & images["val"])
        and not (images["train"] & images["test"])
        and not (images["val"] & images["test"])
    )
    assert sum(len(ds) for ds in parts.values()) == 40
    assert all(len(ds) > 0 for ds in parts.values())
    with pytest.raises(SpecError, match="split 'holdout'"):
        WeightDataset(path, split="holdout")


def test_transform_sees_batches(zoo_path):
    path, _ = zoo_path
    calls = []

    def negate(ws):
        calls.append(len(ws))
        return ws.map(lambda t: -t)

    ds = WeightDataset(path, transform=negate)
    batch = next(iter(ds.loader(batch_size=8, shuffle=False)))
    plain = next(iter(WeightDataset(path).loader(batch_size=8, shuffle=False)))
    assert calls == [8] and torch.equal(batch.to_flat(), -plain.to_flat())


@pytest.mark.parametrize("in_memory", [True, False], ids=["memory", "streaming"])
def test_dataloader_with_workers(zoo_path, in_memory):
    path, params = zoo_path
    ds = WeightDataset(path, target="test_acc", in_memory=in_memory)
    loader = ds.loader(batch_size=6, shuffle=False, num_workers=2)
    flat = torch.cat([ws.to_flat() for ws, _ in loader])
    assert torch.equal(flat, torch.from_numpy(params[:, -1]))


def test_collate_of_single_samples(zoo_path):
    path, _ = zoo_path
    ds = WeightDataset(path, target="test_acc")
    ws, y = collate([ds[0], ds[3]])
    assert len(ws) == 2 and y.shape == (2,)


def test_graph_dataset_serves_a_mixed_zoo(mixed_zoo):
    from weightzoo.datasets import GraphDataset
    from weightzoo.paramgraph import GraphBuilder

    zoo = open_zoo(mixed_zoo)
    ds = GraphDataset(zoo, target="test_acc", split="train")
    assert len(ds) == 19 and len(ds.layouts) > 1
    batch = next(iter(ds.loader(batch_size=8, shuffle=False)))
    assert batch.num_graphs == 8 and batch.y.shape == (8,)
    for g in (0, 5):  # graph g is member ds.indices[g], as its own architecture builds it alone
        i = int(ds.indices[g])
        layout = zoo.member_layout(i)
        alone = GraphBuilder.from_layout(layout, zoo.member_perm_spec(i)).padded(ds.node_dim, ds.edge_dim)
        single = alone.build(zoo.params([i])[:, : layout.size])
        torch.testing.assert_close(batch[g].x, single[0].x)
        torch.testing.assert_close(batch[g].edge_attr, single[0].edge_attr)
        assert torch.equal(batch[g].edge_index, single[0].edge_index)
    assert batch.y[0].item() == pytest.approx(zoo.metric("test_acc", [int(ds.indices[0])])[0])
    labels = GraphDataset(zoo, target="norm")
    assert labels.classes == ["None", "layernorm"] and set(labels.targets.tolist()) == {0, 1}
