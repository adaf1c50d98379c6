"""The fused CPU kernels of the dense path: values against PyTorch, training with and without them,
and the fallback when they cannot be built."""

import platform

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from weightzoo.zoo import archs
from weightzoo.zoo.tasks import load_task
from weightzoo.zoo.train import fused, train_group
from weightzoo.zoo.train.config import member_config
from weightzoo.zoo.train.group import GroupTrainer
from weightzoo.zoo.train.losses import predicted_class
from weightzoo.zoo.train.optim import FusedOptimizer, make_optimizer
from weightzoo.zoo.train.randomness import dropout_factors_, dropout_threshold, hash32

pytestmark = pytest.mark.skipif(not fused.available(), reason="no C compiler with OpenMP on this machine")


@pytest.fixture
def gen():
    return torch.Generator().manual_seed(0)


def test_bias_relu_and_its_gradient(gen):
    z, b = torch.randn(5, 9, 7, generator=gen), torch.randn(5, 7, generator=gen)
    expected = torch.relu(z + b[:, None])
    out = fused.bias_relu_(z.clone(), b)
    torch.testing.assert_close(out, expected, rtol=0, atol=0)

    g = torch.randn(5, 9, 7, generator=gen)
    bias_grad = torch.empty(5, 7)
    got = fused.relu_grad_bias_(g.clone(), out, bias_grad)
    torch.testing.assert_close(got, g * (expected > 0), rtol=0, atol=0)
    torch.testing.assert_close(bias_grad, (g * (expected > 0)).sum(1), rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("weighted", [False, True])
def test_softmax_cross_entropy_gradient_matches_autograd(gen, weighted):
    n, c, batch = 4, 10, 33
    logits = torch.randn(n, c, batch, generator=gen) * 8  # large logits exercise the exp's range
    bias = torch.randn(n, c, generator=gen)
    y = torch.randint(0, c, (50,), generator=gen)
    index = torch.randint(0, 50, (n, batch), generator=gen)
    weights = torch.rand(n, 1, batch, generator=gen) if weighted else 1.0 / batch

    leaf = logits.clone().requires_grad_()
    per_sample = F.cross_entropy(leaf + bias[:, :, None], y[index], reduction="none")
    (per_sample * (weights[:, 0] if weighted else weights)).sum().backward()
    bias_grad = torch.empty(n, c)
    got = fused.softmax_xent_grad_(logits.clone(), bias, y, index, weights, bias_grad)
    torch.testing.assert_close(got, leaf.grad, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(bias_grad, leaf.grad.sum(2), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("kind", ["sgd", "sgd+momentum", "adam", "adamw"])
def test_optimizer_rows_match_torch_optim(gen, kind):
    rows = 6
    params = [torch.randn(rows, 4, 3, generator=gen), torch.randn(rows, 4, generator=gen)]
    grads = [[torch.randn_like(p) for p in params] for _ in range(4)]
    lr = torch.rand(rows, generator=gen, dtype=torch.float64) * 0.05
    wd = torch.rand(rows, generator=gen, dtype=torch.float64) * 0.1
    mine = [p.clone() for p in params]
    live = [torch.empty_like(p) for p in params]
    opt = FusedOptimizer(kind, mine, live, lr, wd)
    for step in grads:
        for buf, g in zip(live, step):
            buf.copy_(g)
        opt.step()
    for r in range(rows):
        ref = [torch.nn.Parameter(p[r].clone()) for p in params]
        cfg = member_config({"optimizer": kind, "lr": float(lr[r]), "weight_decay": float(wd[r])})
        torch_opt = make_optimizer(cfg, ref)
        for step in grads:
            for q, g in zip(ref, step):
                q.grad = g[r].clone()
            torch_opt.step()
        for q, p in zip(ref, mine):
            torch.testing.assert_close(p[r], q.detach(), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("activation", ["relu", "gelu", "silu"])  # silu: no kernel of its own, no whole step
def test_training_with_and_without_the_kernels_agrees(activation):
    """Same members, same steps: the fused path and the PyTorch-only path end at the same weights."""
    arch = archs.mlp(64, [16, 16], 10, activation=activation)
    task = load_task("digits").for_architecture(arch)
    kinds = [("adam", 0.0), ("sgd+momentum", 0.1), ("adamw", 0.0), ("sgd", 0.3)]
    hps = [dict(seed=i, optimizer=o, lr=0.01, weight_decay=1e-3, dropout=d) for i, (o, d) in enumerate(kinds)]
    run = {"epochs": 2, "checkpoint_epochs": [2], "batch_size": 64}
    with_kernels = train_group(arch, task, hps, **run)
    trainer = GroupTrainer(arch, task, [member_config(h) for h in hps], 64, "cpu")
    assert isinstance(trainer.optimizers[0], FusedOptimizer)
    assert any(trainer.path.fused_relu) == (activation == "relu")
    assert trainer.path.whole_step == (activation != "silu" and fused.mlp_step_vectorized())

    with fused.disabled():
        assert not fused.available()
        plain = train_group(arch, task, hps, **run)
    # SGD: the same weights up to float rounding. Adam divides by sqrt(v) + 1e-8, so a gradient that
    # rounds to 1e-9 on one path and to 0 on the other moves a weight by lr / 10: compare what it learned
    sgd = [i for i, (o, _) in enumerate(kinds) if o.startswith("sgd")]
    np.testing.assert_allclose(with_kernels.params[sgd], plain.params[sgd], atol=1e-4, rtol=0)
    np.testing.assert_allclose(with_kernels.metrics["test_acc"], plain.metrics["test_acc"], atol=1e-2)
    np.testing.assert_allclose(with_kernels.metrics["test_loss"], plain.metrics["test_loss"], rtol=1e-2)


def test_a_missing_compiler_falls_back_with_one_warning(monkeypatch, tmp_path):
    monkeypatch.setenv("WEIGHTZOO_CACHE", str(tmp_path))  # nothing built there yet
    monkeypatch.setenv("CC", str(tmp_path / "no-such-compiler"))
    fused.library.cache_clear()
    try:
        with pytest.warns(UserWarning, match="fused CPU kernels unavailable"):
            assert fused.library() is None
        assert list(tmp_path.iterdir()) == []  # nothing half-built left behind
    finally:
        monkeypatch.undo()
        fused.library.cache_clear()
    assert fused.available()


def test_dropout_masks_are_the_pytorch_path_bit_for_bit(gen):
    n, rows, f = 5, 6, 7
    keys = torch.randint(-(2**31), 2**31 - 1, (n,), generator=gen, dtype=torch.int32)
    p = torch.tensor([0.0, 0.1, 0.3, 0.5, 0.9])
    threshold = torch.tensor([dropout_threshold(float(q)) for q in p])
    scale = 1.0 / (1.0 - p)
    counters = torch.arange(rows * f, dtype=torch.int32).view(rows, f)
    expected = dropout_factors_(hash32(counters + keys.view(n, 1, 1)), torch.empty(n, rows, f),
                                threshold.view(n, 1, 1), scale.view(n, 1, 1))  # fmt: skip
    h = torch.randn(n, rows, f, generator=gen)
    out, factors = torch.empty_like(h), torch.empty_like(h)
    fused.dropout_(h, out, factors, keys, threshold, scale)
    assert torch.equal(factors, expected)
    assert torch.equal(out, h * expected)
    assert torch.all(factors[0] == 1) and 0 < (factors[3] == 0).float().mean() < 1


def _mlp_problem(gen, dims, batch, weighted, dropout):
    """Random members, samples, labels, loss weights and dropout of ``mlp_step_``'s arguments."""
    n, pool = 3, 50
    params = []
    for fan_in, fan_out in zip(dims[:-1], dims[1:]):
        params += [torch.randn(n, fan_out, fan_in, generator=gen) / fan_in**0.5, torch.randn(n, fan_out, generator=gen)]
    x = torch.randn(pool, dims[0], generator=gen)
    index = torch.randint(0, pool, (n, batch), generator=gen)
    labels = torch.randint(0, dims[-1], (2 * pool,), generator=gen)
    label_index = index + torch.tensor([0, pool, 0]).view(n, 1)  # per-member targets, as image INR tasks have
    weights = torch.rand(n, 1, batch, generator=gen) if weighted else 1.0 / batch
    drop = None
    if dropout:
        p = torch.tensor([0.0, 0.2, 0.5])
        keys = torch.randint(-(2**31), 2**31 - 1, (n, len(dims) - 2), generator=gen, dtype=torch.int32)
        drop = keys, torch.tensor([dropout_threshold(float(q)) for q in p]), 1.0 / (1.0 - p)
    return params, x, index, labels, label_index, weights, drop


def _mlp_reference(activations, params, x, index, labels, label_index, weights, drop):
    """The same gradients by autograd, with the dropout masks of ``randomness``."""
    leaves = [p.clone().requires_grad_() for p in params]
    n, batch = index.shape
    h = x[index]
    layers = len(leaves) // 2
    for k in range(layers):
        z = torch.bmm(h, leaves[2 * k].transpose(1, 2)) + leaves[2 * k + 1][:, None]
        if k == layers - 1:
            break
        h = {"relu": torch.relu, "tanh": torch.tanh, "sigmoid": torch.sigmoid, "gelu": F.gelu}[activations[k]](z)
        if drop is not None:
            keys, threshold, scale = drop
            counters = torch.arange(batch * z.shape[2], dtype=torch.int32).view(batch, -1)
            hashed = hash32(counters + keys[:, k].view(n, 1, 1))
            h = h * dropout_factors_(hashed, torch.empty_like(h), threshold.view(n, 1, 1), scale.view(n, 1, 1))
    loss = F.cross_entropy(z.reshape(n * batch, -1), labels[label_index].reshape(-1), reduction="none")
    w = weights.reshape(n, batch) if isinstance(weights, torch.Tensor) else weights
    (loss.view(n, batch) * w).sum().backward()
    return [leaf.grad for leaf in leaves]


def _check_mlp_step(gen, dims, batch, weighted, dropout, activations=None):
    activations = activations or ["relu"] * (len(dims) - 2)
    params, *data = _mlp_problem(gen, dims, batch, weighted, dropout)
    grads = [torch.full_like(p, float("nan")) for p in params]  # every entry must be written
    fused.mlp_step_(fused.MlpNet(activations, params, grads), *data)
    for got, expected in zip(grads, _mlp_reference(activations, params, *data)):
        torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-5)


MLP_CASES = [
    ([13, 7, 21, 5], 37, True, True),  # widths and batch off the 16-float vectors and 8-row tiles
    ([40, 32, 32, 10], 128, False, False),  # the benchmark's members
    ([40, 32, 32, 10], 64, True, True),
    ([9, 3], 20, False, False),  # a single linear layer: softmax regression
    ([70, 50, 4], 9, True, False),  # wide enough for tiles of 3 and 4 vectors
]


@pytest.mark.parametrize("dims, batch, weighted, dropout", MLP_CASES)
def test_whole_mlp_step_matches_autograd(gen, dims, batch, weighted, dropout):
    _check_mlp_step(gen, dims, batch, weighted, dropout)


@pytest.mark.parametrize("dropout", [False, True])
def test_whole_mlp_step_with_tanh_sigmoid_and_gelu_matches_autograd(gen, dropout):
    _check_mlp_step(gen, [13, 7, 21, 9, 11, 5], 37, True, dropout, ["tanh", "sigmoid", "gelu", "relu"])


@pytest.mark.skipif(platform.machine() not in ("x86_64", "AMD64"), reason="x86 compiler flags")
@pytest.mark.parametrize("flags", [["-mno-avx512f"], ["-mno-avx512f", "-mno-avx2"]])
def test_whole_mlp_step_on_other_cpus_matches_autograd(gen, tmp_path, monkeypatch, flags):
    """The AVX2 tiles and the plain loops (CPUs with neither AVX-512 nor AVX2) give the same gradients."""
    lib = fused.load(fused.build(tmp_path / "other.so", flags))
    monkeypatch.setattr(fused, "library", lambda: lib)
    cpu = fused._cpu_key().split()
    tiled = "-mno-avx2" not in flags and "avx2" in cpu and "fma" in cpu
    assert fused.mlp_step_vectorized() == tiled  # with plain loops the trainer keeps PyTorch's matmuls
    for case in MLP_CASES[:2]:
        _check_mlp_step(gen, *case)


def test_whole_mlp_step_refuses_memory_it_cannot_read(gen):
    params, x, *rest = _mlp_problem(gen, [6, 4, 3], 5, False, False)
    grads = [torch.empty_like(p) for p in params]
    with pytest.raises(ValueError, match="x must be contiguous torch.float32 CPU tensors"):
        fused.mlp_step_(fused.MlpNet(["relu"], params, grads), x.double(), *rest)
    with pytest.raises(ValueError, match="params must be contiguous"):
        strided = params[0].transpose(1, 2).contiguous().transpose(1, 2)
        fused.mlp_step_(fused.MlpNet(["relu"], [strided, *params[1:]], grads), x, *rest)
    with pytest.raises(ValueError, match=r"activations \['silu'\]; need 1 of \('relu', 'tanh', 'sigmoid', 'gelu'\)"):
        fused.mlp_step_(fused.MlpNet(["silu"], params, grads), x, *rest)
    with pytest.raises(ValueError, match="made without gradient tensors"):
        fused.mlp_step_(fused.MlpNet(["relu"], params), x, *rest)


@pytest.mark.parametrize("shared", [False, True])
def test_mlp_eval_matches_pytorch(gen, shared):
    """Summed cross-entropy and first-maximum accuracy over each member's samples, in chunks of 16."""
    activations, dims = ["tanh", "gelu"], [13, 21, 9, 5]
    params, x, *_ = _mlp_problem(gen, dims, 1, False, False)
    n, pool = params[0].shape[0], len(x)
    params[4][2, 3] = params[4][2, 0]  # member 2 ties classes 0 and 3 ...
    params[5][2, 3] = params[5][2, 0]  # ... in every sample: the first is predicted
    params[0][1, 0, 0] = float("nan")  # member 1 predicts nothing
    counts = torch.tensor([pool, 37, 50]) if shared else torch.tensor([pool, 37, 5])
    rows = torch.arange(pool).expand(n, pool) if shared else torch.randint(0, pool, (n, pool), generator=gen)
    labels = torch.randint(0, dims[-1], (2 * pool,), generator=gen)
    offset = torch.tensor([0, pool, 0])
    loss, hits = fused.mlp_eval(fused.MlpNet(activations, params), x, rows, counts, labels, offset, batch=16)
    for m in range(n):
        h = x[rows[m, : counts[m]]]
        for k, act in enumerate([torch.tanh, F.gelu, None]):
            h = h @ params[2 * k][m].T + params[2 * k + 1][m]
            h = act(h) if act else h
        y = labels[rows[m, : counts[m]] + offset[m]]
        expected = F.cross_entropy(h, y, reduction="sum").double()
        torch.testing.assert_close(loss[m], expected, rtol=1e-5, atol=1e-4, equal_nan=True)
        assert hits[m] == (predicted_class(h) == y).sum().item()  # the trainer's: NaN rows match nothing
    assert torch.isnan(loss[1]) and hits[1] == 0


def test_epoch_order_kernel_is_the_batched_sort():
    """The C radix sort and the PyTorch sort give the same orders: each member's subset, permuted by its
    own seed and epoch alone (not by the group's longest member), padded with index 0."""
    from weightzoo.zoo.train.randomness import epoch_order, seed_keys, training_subsets

    sizes, n = [5, 300, 999, 1000], 1000
    keys = seed_keys([11, 12, 13, 14])
    for subsets in (training_subsets(keys, sizes, n), training_subsets(keys, [n] * 4, n)):
        sizes_now = sizes if subsets.stride(0) else [n] * 4
        order = epoch_order(keys, subsets, sizes_now, 7, 8, 128)
        with fused.disabled():
            assert torch.equal(epoch_order(keys, subsets, sizes_now, 7, 8, 128), order)
        rows = order.transpose(0, 1).reshape(4, -1)
        for g, size in enumerate(sizes_now):
            assert torch.equal(rows[g, :size].sort().values, subsets[g, :size].sort().values)
            assert (rows[g, size:] == 0).all()
            alone = epoch_order(keys[g : g + 1], subsets[g : g + 1, :size], [size], 7, -(-size // 128), 128)
            assert torch.equal(alone.transpose(0, 1).reshape(-1)[:size], rows[g, :size])
        assert not torch.equal(epoch_order(keys, subsets, sizes_now, 8, 8, 128), order)  # a new epoch, a new order
