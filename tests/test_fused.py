"""The fused CPU kernels of the dense path: values against PyTorch, training with and without them,
the checks of what is handed to C, and the fallback when they cannot be built or used."""

import os
import platform
import re
import warnings

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
    fused._compiled.cache_clear()
    try:
        with pytest.warns(UserWarning, match="fused CPU kernels unavailable .*no-such-compiler' not found"):
            assert fused.library() is None
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # once
            assert not fused.available()
        assert list(tmp_path.iterdir()) == []  # nothing half-built left behind
    finally:
        monkeypatch.undo()
        fused._compiled.cache_clear()
    assert fused.available()


def test_the_cache_key_names_the_compiler_its_version_and_every_flag(monkeypatch, tmp_path):
    """Another compiler path, another ``--version`` or other flags: another library file."""
    cc = fused.find_compiler()
    key = fused.cache_key(cc, fused.FLAGS)
    assert key == fused.cache_key(cc, list(fused.FLAGS))
    assert fused.cache_key(cc, [*fused.FLAGS, "-mno-avx2"]) != key
    link = tmp_path / "cc"
    link.symlink_to(cc)
    monkeypatch.setenv("CC", str(link))
    assert fused.find_compiler() == str(link)
    assert fused.cache_key(str(link), fused.FLAGS) != key
    wrapper = tmp_path / "wrapped-cc"
    keys = set()
    for version in ("1.0", "2.0"):  # the same path, upgraded in place
        wrapper.write_text(f'#!/bin/sh\n[ "$1" = --version ] && echo "cc {version}" && exit 0\nexec {cc} "$@"\n')
        wrapper.chmod(0o755)
        keys.add(fused.cache_key(str(wrapper), fused.FLAGS))
    assert len(keys) == 2


def test_disabled_switches_the_kernels_off_without_touching_the_environment():
    environment = dict(os.environ)
    with fused.disabled():
        assert not fused.available() and fused.library() is None and fused.isa() is None
        with fused.disabled():  # nested blocks
            assert not fused.enabled()
        assert not fused.available()
        assert dict(os.environ) == environment
    assert dict(os.environ) == environment
    assert fused.available()


def test_the_environment_variable_still_switches_them_off(monkeypatch):
    monkeypatch.setenv("WEIGHTZOO_FUSED", "0")
    assert not fused.available() and not fused.mlp_step_vectorized()
    monkeypatch.delenv("WEIGHTZOO_FUSED")
    assert fused.available()


def test_the_openmp_runtimes_mapped_into_the_process(tmp_path):
    """torch's own libgomp is among them (the kernels link libgomp.so.1 and share it); only runtime files count."""
    runtimes = fused.openmp_runtimes()
    if platform.system() == "Linux":
        torch_lib = os.path.realpath(os.path.join(os.path.dirname(torch.__file__), "lib"))
        assert any(r.startswith(torch_lib + os.sep) and os.path.basename(r).startswith("libgomp") for r in runtimes)
    maps = tmp_path / "maps"
    names = ["libgomp.so.1", "libgomp-e985bcbb.so.1.0.0", "libiomp5.so", "libomp.so.5", "libomptarget.so", "libm.so.6"]
    rows = [f"7f00-7f01 r-xp 00000000 08:01 {i} /opt/lib/{name}" for i, name in enumerate(names)]
    rows += ["7f02-7f03 rw-p 00000000 00:00 0 ", "7f04-7f05 r--p 00000000 08:01 9 /opt/lib/libomp.so.5 (deleted)"]
    maps.write_text("\n".join(rows) + "\n")
    assert fused.openmp_runtimes(maps) == sorted(f"/opt/lib/{n}" for n in names[:4])
    assert fused.openmp_runtimes(tmp_path / "missing") == []  # no /proc: the check is skipped


def _with_runtimes(monkeypatch, *snapshots: list[str]):
    """``fused.openmp_runtimes`` answering ``snapshots`` in turn (before and after the library loads)."""
    answers = iter(snapshots)
    monkeypatch.setattr(fused, "openmp_runtimes", lambda: next(answers))
    fused._compiled.cache_clear()


TORCH_GOMP, OTHER_GOMP = "/site-packages/torch/lib/libgomp.so.1", "/usr/lib/x86_64-linux-gnu/libgomp.so.1.0.0"


def test_kernels_that_bring_a_second_openmp_runtime_are_not_used(monkeypatch):
    _with_runtimes(monkeypatch, [TORCH_GOMP], [TORCH_GOMP, OTHER_GOMP])
    try:
        with pytest.warns(UserWarning, match=re.escape(f"{TORCH_GOMP}, {OTHER_GOMP}") + ".*uses PyTorch ops"):
            assert fused.library() is None
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # once
            assert not fused.available() and fused.isa() is None
    finally:
        monkeypatch.undo()
        fused._compiled.cache_clear()
    assert fused.available()


def test_runtimes_loaded_before_the_kernels_do_not_count(monkeypatch):
    """scikit-learn's wheel ships its own libgomp: loaded next to torch's before the kernels, it is not theirs."""
    sklearn_gomp = "/site-packages/scikit_learn.libs/libgomp-e985bcbb.so.1.0.0"
    _with_runtimes(monkeypatch, [sklearn_gomp, TORCH_GOMP], [sklearn_gomp, TORCH_GOMP])
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            assert fused.library() is not None
    finally:
        monkeypatch.undo()
        fused._compiled.cache_clear()


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
    assert fused.isa() == ("avx2" if tiled else "scalar")
    for case in MLP_CASES[:2]:
        _check_mlp_step(gen, *case)


def test_isa_names_the_register_tiles_of_this_cpu():
    cpu = fused._cpu_key().split()
    expected = "avx512" if "avx512f" in cpu else "avx2" if "avx2" in cpu and "fma" in cpu else "scalar"
    if platform.machine() in ("x86_64", "AMD64"):
        assert fused.isa() == expected
    assert fused.isa() in fused.ISAS and fused.mlp_step_vectorized() == (fused.isa() != "scalar")


def test_whole_mlp_step_refuses_memory_it_cannot_read(gen):
    params, x, *rest = _mlp_problem(gen, [6, 4, 3], 5, False, False)
    grads = [torch.empty_like(p) for p in params]
    with pytest.raises(ValueError, match=r"mlp_step_: x must be a contiguous cpu float32 tensor of shape \[\*, 6\]; "
                                         r"got a contiguous cpu float64 tensor of shape \[50, 6\]"):  # fmt: skip
        fused.mlp_step_(fused.MlpNet(["relu"], params, grads), x.double(), *rest)
    with pytest.raises(ValueError, match=r"MlpNet: params\[0\] must be a contiguous .* got a non-contiguous"):
        strided = params[0].transpose(1, 2).contiguous().transpose(1, 2)
        fused.mlp_step_(fused.MlpNet(["relu"], [strided, *params[1:]], grads), x, *rest)
    with pytest.raises(ValueError, match=r"MlpNet: params\[2\] must be .* of shape \[3, \*, 4\]; got .* \[3, 3, 5\]"):
        fused.MlpNet(["relu"], [params[0], params[1], torch.zeros(3, 3, 5), params[3]], grads)
    with pytest.raises(ValueError, match="MlpNet: 3 params; they take weight and bias"):
        fused.MlpNet([], params[:3])
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


# ------------------------------------------------------------------ what every entry point hands to C


def _mlp_args(trainable: bool) -> dict:
    """Two members of a 3-4-5 MLP classifier, as :class:`fused.MlpNet` takes them."""
    params = [torch.randn(2, 4, 3), torch.randn(2, 4), torch.randn(2, 5, 4), torch.randn(2, 5)]
    grads = [torch.empty_like(p) for p in params] if trainable else None
    return {"activations": ["relu"], "params": params, "grads": grads}


def _net(trainable: bool) -> fused.MlpNet:
    return fused.MlpNet(**_mlp_args(trainable))


def _index(n: int, batch: int, below: int) -> torch.Tensor:
    return torch.randint(0, below, (n, batch))


def _rows(*names: str) -> dict[str, torch.Tensor]:
    """An optimizer kernel's tensors: ``names`` (p, g, states) ``[3, 4]`` and float32 lr, wd ``[3]``."""
    return {**{k: torch.randn(3, 4) for k in names}, "lr": torch.full((3,), 0.1), "wd": torch.full((3,), 0.01)}


KERNEL_CALLS = {  # each entry point with valid arguments (every optional tensor given)
    "bias_relu_": lambda: (fused.bias_relu_, {"z": torch.randn(2, 3, 4), "bias": torch.randn(2, 4)}),
    "relu_grad_bias_": lambda: (fused.relu_grad_bias_, {
        "grad": torch.randn(2, 3, 4), "out": torch.rand(2, 3, 4), "bias_grad": torch.empty(2, 4),
        "factors": torch.ones(2, 3, 4)}),
    "dropout_": lambda: (fused.dropout_, {
        "h": torch.randn(2, 3, 4), "out": torch.empty(2, 3, 4), "factors": torch.empty(2, 3, 4),
        "keys": torch.tensor([5, 6], dtype=torch.int32), "threshold": torch.zeros(2), "scale": torch.full((2,), 2.0)}),
    "softmax_xent_grad_": lambda: (fused.softmax_xent_grad_, {
        "logits": torch.randn(2, 3, 5), "bias": torch.randn(2, 3), "labels": torch.randint(0, 3, (7,)),
        "index": _index(2, 5, 7), "weights": torch.full((2, 1, 5), 0.2), "bias_grad": torch.empty(2, 3)}),
    "adam_rows_": lambda: (fused.adam_rows_, {
        **_rows("p", "g", "m1", "m2"), "decoupled": False, "betas": (0.9, 0.999), "eps": 1e-8, "step": 1}),
    "sgd_rows_": lambda: (fused.sgd_rows_, {**_rows("p", "g", "buf"), "momentum": 0.9}),
    "MlpNet": lambda: (fused.MlpNet, _mlp_args(True)),
    "mlp_step_": lambda: (fused.mlp_step_, {
        "net": _net(True), "x": torch.randn(6, 3), "index": _index(2, 5, 6), "labels": torch.randint(0, 5, (6,)),
        "label_index": _index(2, 5, 6), "weights": torch.full((2, 1, 5), 0.2),
        "dropout": (torch.tensor([[1], [2]], dtype=torch.int32), torch.zeros(2), torch.full((2,), 2.0))}),
    "mlp_eval": lambda: (fused.mlp_eval, {
        "net": _net(False), "x": torch.randn(6, 3), "rows": _index(2, 6, 6), "counts": torch.tensor([6, 4]),
        "labels": torch.randint(0, 5, (6,)), "label_offset": torch.zeros(2, dtype=torch.int64)}),
    "epoch_order": lambda: (fused.epoch_order, {
        "keys": torch.tensor([5, 6], dtype=torch.int32), "sizes": torch.tensor([3, 4]),
        "subsets": torch.arange(8).view(2, 4), "steps": 2, "batch": 2}),
}  # fmt: skip
COPIED = {("dropout_", "keys")}  # read-only inputs the entry point makes contiguous itself


def _tensor_args(kwargs: dict) -> list[str]:
    """The tensors among the arguments, as ``name`` or ``name[i]`` inside lists and tuples."""
    names = []
    for name, value in kwargs.items():
        if isinstance(value, torch.Tensor):
            names.append(name)
        elif isinstance(value, (list, tuple)):
            names += [f"{name}[{i}]" for i, v in enumerate(value) if isinstance(v, torch.Tensor)]
    return names


def _replaced(kwargs: dict, arg: str, change) -> dict:
    """``kwargs`` with the tensor ``arg`` (see :func:`_tensor_args`) replaced by ``change(tensor)``."""
    name, _, i = arg.partition("[")
    if not i:
        return {**kwargs, name: change(kwargs[name])}
    items = list(kwargs[name])
    items[int(i[:-1])] = change(items[int(i[:-1])])
    return {**kwargs, name: type(kwargs[name])(items)}


CHANGES = {
    "float64": lambda t: t.double(),
    "strided": lambda t: torch.stack([t, t], -1)[..., 0],  # the same values every other element
    "meta": lambda t: torch.empty_like(t, device="meta"),  # any device but the CPU, without a GPU
    "shape": lambda t: torch.stack([t, t]),
}
ARGUMENTS = [(call, arg) for call, make in KERNEL_CALLS.items() for arg in _tensor_args(make()[1])]


@pytest.mark.parametrize("call", KERNEL_CALLS)
def test_every_entry_point_runs_on_its_documented_arguments(call):
    fn, kwargs = KERNEL_CALLS[call]()
    fn(**kwargs)


@pytest.mark.parametrize("change", CHANGES)
@pytest.mark.parametrize("call, arg", ARGUMENTS, ids=[f"{c}-{a}" for c, a in ARGUMENTS])
def test_every_entry_point_refuses_tensors_it_cannot_read(call, arg, change):
    """Another dtype, strides, device or shape raises ValueError naming the function (and the argument),
    before any address is taken: what C would read is never wrong memory."""
    fn, kwargs = KERNEL_CALLS[call]()
    bad = _replaced(kwargs, arg, CHANGES[change])
    if change == "strided" and (call, arg) in COPIED:
        fn(**bad)
        return
    named = re.escape(arg) if change != "shape" else ".*"  # a shape can contradict another argument's
    with pytest.raises(ValueError, match=rf"^{call}: {named} must be a (contiguous )?cpu \w+ tensor.*; got "):
        fn(**bad)


def test_output_tensors_are_never_copied():
    """The kernels write into the caller's tensors: a strided output is refused, not written into a copy."""
    z = torch.randn(2, 3, 4).transpose(1, 2)
    with pytest.raises(ValueError, match=r"bias_relu_: z must be a contiguous cpu float32 tensor .*non-contiguous"):
        fused.bias_relu_(z, torch.zeros(2, 3))
