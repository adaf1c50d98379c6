"""Fused CPU kernels for the dense path (``fused.c``), compiled on first use and called via ctypes.

The PyTorch path needs several passes over memory for what is one pass in C (bias + ReLU; ReLU
derivative + bias gradient; softmax + cross-entropy gradient + bias gradient; the optimizer
update with per-member learning rates); on small networks those passes cost as much as the
matmuls. For MLP classifiers (:class:`MlpNet`) :func:`mlp_step_` goes further, the whole training step of each
member in one call with its activations in cache, and :func:`mlp_eval` evaluates them. The
library is built with the system C compiler (``$CC`` or ``cc``, ``-O3
-march=native -fopenmp``) into ``$WEIGHTZOO_CACHE`` (default ``~/.cache/weightzoo``), keyed by
the source, the flags and the CPU, and shares PyTorch's OpenMP threads. Without a compiler, or
with ``WEIGHTZOO_FUSED=0``, :func:`library` returns None and the trainer uses PyTorch ops only.
"""

from __future__ import annotations

import contextlib
import ctypes
import functools
import hashlib
import os
import platform
import subprocess
import tempfile
import warnings
from collections.abc import Iterator, Sequence
from pathlib import Path

import torch
from torch import Tensor

SOURCE = Path(__file__).with_name("fused.c")
WIDE_VECTORS = ["-mprefer-vector-width=512"] if platform.machine().lower() in ("x86_64", "amd64") else []
FLAGS = ["-O3", "-march=native", *WIDE_VECTORS, "-fopenmp", "-fno-math-errno", "-fno-trapping-math"]
FLAGS += ["-shared", "-fPIC", "-std=c11"]
_P, _I, _F = ctypes.c_void_p, ctypes.c_int64, ctypes.c_float
SIGNATURES = {
    "bias_relu": [_P, _P, _I, _I, _I],
    "relu_grad_bias": [_P, _P, _P, _P, _I, _I, _I],
    "dropout": [_P, _P, _P, _P, _P, _P, _I, _I, _I],
    "softmax_xent_grad": [_P, _P, _P, _P, _P, _F, _P, _I, _I, _I],
    "adam_rows": [_P, _P, _P, _P, _I, _I, _P, _P, ctypes.c_int, _F, _F, _F, _F, _F],
    "sgd_rows": [_P, _P, _P, _I, _I, _P, _P, _F],
    "mlp_step": [_I, _I, _I, _P, _P, _P, _P, _P, _P, _P, _P, _F, _P, _P, _P],
    "mlp_eval": [_I, _I, _I, _P, _P, _P, _P, _P, _I, _P, _P, _P, _P, _P],
    "mlp_step_vectorized": [],
    "epoch_order": [_I, _I, _I, _P, _P, _P, _I, _P],
}
RETURNS_INT = ("mlp_step", "mlp_eval", "mlp_step_vectorized", "epoch_order")
MLP_MAX_LAYERS = 63  # mlp_step's per-thread buffer table (fused.c)
MLP_ACTIVATIONS = ("relu", "tanh", "sigmoid", "gelu")  # mlp_step's hidden activations, by their code in fused.c


def _cpu_key() -> str:
    """What the compiled code depends on besides the source: machine and CPU features."""
    flags = ""
    try:
        with open("/proc/cpuinfo") as f:
            flags = next((line for line in f if line.startswith("flags")), "")
    except OSError:
        pass
    return f"{platform.machine()} {platform.processor()} {flags}"


def _cache_dir() -> Path:
    root = os.environ.get("WEIGHTZOO_CACHE") or os.path.join(os.path.expanduser("~"), ".cache", "weightzoo")
    return Path(root)


def build(out: Path, extra_flags: Sequence[str] = ()) -> Path:
    """Compile ``fused.c`` into ``out`` (atomically: a half-written library is never loaded)."""
    out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=out.parent) as tmp:
        target = Path(tmp) / out.name
        cmd = [os.environ.get("CC", "cc"), *FLAGS, *extra_flags, str(SOURCE), "-o", str(target), "-lm"]
        subprocess.run(cmd, check=True, capture_output=True, text=True)
        os.replace(target, out)
    return out


def load(path: Path) -> ctypes.CDLL:
    """A compiled kernel library with its functions' signatures declared."""
    lib = ctypes.CDLL(str(path))
    for name, args in SIGNATURES.items():
        getattr(lib, name).argtypes = args
        getattr(lib, name).restype = ctypes.c_int if name in RETURNS_INT else None
    return lib


@functools.cache
def library() -> ctypes.CDLL | None:
    """The compiled kernels, or None when they are disabled or cannot be built (warns once)."""
    if os.environ.get("WEIGHTZOO_FUSED", "1") == "0":
        return None
    key = hashlib.sha256(SOURCE.read_bytes() + " ".join(FLAGS).encode() + _cpu_key().encode()).hexdigest()[:16]
    path = _cache_dir() / f"fused-{key}.so"
    try:
        return load(path if path.exists() else build(path))
    except (OSError, subprocess.CalledProcessError) as exc:
        detail = getattr(exc, "stderr", None) or str(exc)
        warnings.warn(
            f"weightzoo: fused CPU kernels unavailable ({detail.strip().splitlines()[0] if detail else exc}); "
            "training uses PyTorch ops (slower). Install a C compiler with OpenMP or set WEIGHTZOO_FUSED=0.",
            stacklevel=2,
        )
        return None


@contextlib.contextmanager
def disabled() -> Iterator[None]:
    """The kernels switched off (as with ``WEIGHTZOO_FUSED=0``) inside the block: PyTorch ops only."""
    before = os.environ.get("WEIGHTZOO_FUSED")
    os.environ["WEIGHTZOO_FUSED"] = "0"
    library.cache_clear()
    try:
        yield
    finally:
        if before is None:
            del os.environ["WEIGHTZOO_FUSED"]
        else:
            os.environ["WEIGHTZOO_FUSED"] = before
        library.cache_clear()


def _ptr(t: Tensor | None) -> int | None:
    return None if t is None else t.data_ptr()


def bias_relu_(z: Tensor, bias: Tensor) -> Tensor:
    """``z = relu(z + bias[:, None])`` in place, ``z [n, rows, f]``, ``bias [n, f]``."""
    n, rows, f = z.shape
    library().bias_relu(_ptr(z), _ptr(bias), n, rows, f)
    return z


def relu_grad_bias_(grad: Tensor, out: Tensor, bias_grad: Tensor, factors: Tensor | None = None) -> Tensor:
    """``grad *= (out > 0)`` (and ``*= factors``, dropout's) in place and ``bias_grad = grad.sum(1)``;
    ``grad, out, factors [n, rows, f]``."""
    n, rows, f = grad.shape
    library().relu_grad_bias(_ptr(grad), _ptr(out), _ptr(factors), _ptr(bias_grad), n, rows, f)
    return grad


def dropout_(h: Tensor, out: Tensor, factors: Tensor, keys: Tensor, threshold: Tensor, scale: Tensor) -> Tensor:
    """Inverted dropout of ``h [n, rows, f]`` into ``out`` with per-member int32 ``keys`` and float32
    ``threshold``/``scale`` ``[n]``; the factors (0 or scale) go to ``factors`` for the backward pass.
    The masks equal :func:`~weightzoo.zoo.train.randomness.dropout_factors_` of the hashed counters."""
    n, rows, f = h.shape
    keys, threshold, scale = keys.contiguous(), threshold.contiguous(), scale.contiguous()
    library().dropout(_ptr(h), _ptr(out), _ptr(factors), _ptr(keys), _ptr(threshold), _ptr(scale), n, rows, f)
    return out


def softmax_xent_grad_(
    logits: Tensor,
    bias: Tensor | None,
    labels: Tensor,
    index: Tensor,
    weights: Tensor | float,
    bias_grad: Tensor | None,
) -> Tensor:
    """In place on feature-major ``logits [n, c, batch]``: ``(softmax(logits + bias) - onehot) * weights``,
    labels ``labels[index]``; the bias gradient (sum over the batch) into ``bias_grad``."""
    n, c, batch = logits.shape
    w = weights.reshape(n, batch) if isinstance(weights, Tensor) else None
    scalar = 0.0 if w is not None else float(weights)
    library().softmax_xent_grad(
        _ptr(logits), _ptr(bias), _ptr(labels), _ptr(index), _ptr(w), scalar, _ptr(bias_grad), n, c, batch
    )
    return logits


def adam_rows_(
    p: Tensor, g: Tensor, m1: Tensor, m2: Tensor, lr: Tensor, wd: Tensor, decoupled: bool, betas, eps, step: int
) -> None:
    """One Adam (AdamW if ``decoupled``) step on ``p [rows, ...]`` with per-row ``lr`` and ``wd``."""
    rows = p.shape[0]
    bc1, bc2_sqrt = 1.0 - betas[0] ** step, (1.0 - betas[1] ** step) ** 0.5
    library().adam_rows(
        _ptr(p), _ptr(g), _ptr(m1), _ptr(m2), rows, p.numel() // max(rows, 1), _ptr(lr), _ptr(wd),
        int(decoupled), betas[0], betas[1], eps, bc1, bc2_sqrt,
    )  # fmt: skip


def sgd_rows_(p: Tensor, g: Tensor, buf: Tensor | None, lr: Tensor, wd: Tensor, momentum: float) -> None:
    """One SGD step (with momentum if ``buf``) on ``p [rows, ...]`` with per-row ``lr`` and ``wd``."""
    rows = p.shape[0]
    library().sgd_rows(_ptr(p), _ptr(g), _ptr(buf), rows, p.numel() // max(rows, 1), _ptr(lr), _ptr(wd), momentum)


class MlpNet:
    """n same-shaped MLP classifiers as the ``mlp_step``/``mlp_eval`` kernels read them: layer
    sizes, activation codes and the addresses of every layer's weight, bias and their gradients.

    ``params`` and ``grads`` are per layer ``weight [n, out, in], bias [n, out]`` (contiguous CPU
    float32); hidden layer ``k`` applies ``activations[k]`` (one of :data:`MLP_ACTIVATIONS`).
    Without ``grads`` only :func:`mlp_eval` may use it. The tensors are kept alive, so a net can be
    made once and reused every step.
    """

    def __init__(self, activations: Sequence[str], params: Sequence[Tensor], grads: Sequence[Tensor] | None = None):
        layers = len(params) // 2
        if not 1 <= layers <= MLP_MAX_LAYERS:
            raise ValueError(f"mlp kernels: {layers} linear layers; they take 1 to {MLP_MAX_LAYERS}")
        if len(activations) != layers - 1 or not set(activations) <= set(MLP_ACTIVATIONS):
            raise ValueError(f"mlp kernels: activations {list(activations)}; need {layers - 1} of {MLP_ACTIVATIONS}")
        _require("params", params, torch.float32)
        self.trainable = grads is not None
        grads = params if grads is None else grads  # mlp_eval leaves the gradient addresses unused
        _require("grads", grads, torch.float32)
        self.tensors = (list(params), list(grads))
        dims = [params[0].shape[2], *(params[2 * k].shape[1] for k in range(layers))]
        acts = [MLP_ACTIVATIONS.index(a) for a in activations] or [0]
        pairs = [(params[2 * k], params[2 * k + 1], grads[2 * k], grads[2 * k + 1]) for k in range(layers)]
        self.n, self.layers = params[0].shape[0], layers
        self.dims = (ctypes.c_int64 * len(dims))(*dims)
        self.acts = (ctypes.c_int64 * len(acts))(*acts)
        self.addresses = (ctypes.c_int64 * (4 * layers))(*(t.data_ptr() for four in pairs for t in four))


def _require(name: str, tensors: Sequence[Tensor], dtype: torch.dtype) -> None:
    """The kernels read raw memory: contiguous CPU tensors of ``dtype`` only."""
    if any(t.dtype != dtype or t.device.type != "cpu" or not t.is_contiguous() for t in tensors):
        raise ValueError(f"mlp kernels: {name} must be contiguous {dtype} CPU tensors (they read raw memory)")


def mlp_step_(
    net: MlpNet,
    x: Tensor,
    index: Tensor,
    labels: Tensor,
    label_index: Tensor,
    weights: Tensor | float,
    dropout: tuple[Tensor, Tensor, Tensor] | None = None,
) -> None:
    """Gradients of one training step of ``net``'s MLPs with softmax cross-entropy, in one kernel
    call, into its gradient tensors. The samples are ``x[index]`` (``index [n, batch]``) with labels
    ``labels[label_index]`` and loss weights ``weights`` (``[n, 1, batch]`` or a scalar);
    ``dropout`` is ``(keys [n, hidden layers] int32, threshold [n], scale [n])`` as :func:`dropout_`
    takes them, applied after every hidden activation."""
    if not net.trainable:
        raise ValueError("mlp_step_: the net was made without gradient tensors")
    _require("x", [x], torch.float32)
    _require("index", [index, label_index, labels], torch.int64)
    n, batch = index.shape
    w = weights.reshape(n, batch) if isinstance(weights, Tensor) else None
    keys, threshold, scale = (t.contiguous() for t in dropout) if dropout is not None else (None, None, None)
    done = library().mlp_step(
        n, batch, net.layers, net.dims, net.acts, net.addresses, _ptr(x), _ptr(index), _ptr(labels),
        _ptr(label_index), _ptr(w), 0.0 if w is not None else float(weights), _ptr(keys), _ptr(threshold), _ptr(scale),
    )  # fmt: skip
    if not done:
        raise MemoryError("weightzoo: the fused MLP step could not allocate its per-thread buffers")


def mlp_eval(
    net: MlpNet, x: Tensor, rows: Tensor, counts: Tensor, labels: Tensor, label_offset: Tensor, batch: int = 256
) -> tuple[Tensor, Tensor]:
    """Summed cross-entropy and correct predictions (float64 ``[n]`` each) of ``net``'s MLPs
    (without dropout) over their samples ``x[rows[m, :counts[m]]]`` (``rows [n, k]``, or one row
    expanded to all members), labels ``labels[rows + label_offset[m]]``; a prediction is the first
    largest logit."""
    shared = rows.stride(0) == 0
    rows = rows[0].contiguous() if shared else rows
    _require("x", [x], torch.float32)
    _require("rows", [rows, counts, labels, label_offset], torch.int64)
    n = len(counts)
    loss, hits = torch.empty(n, dtype=torch.float64), torch.empty(n, dtype=torch.float64)
    done = library().mlp_eval(
        n, batch, net.layers, net.dims, net.acts, net.addresses, _ptr(x), _ptr(rows), 0 if shared else rows.shape[1],
        _ptr(counts), _ptr(labels), _ptr(label_offset), _ptr(loss), _ptr(hits),
    )  # fmt: skip
    if not done:
        raise MemoryError("weightzoo: the fused MLP evaluation could not allocate its per-thread buffers")
    return loss, hits


def epoch_order(keys: Tensor, sizes: Tensor, subsets: Tensor | None, steps: int, batch: int) -> Tensor:
    """int64 ``[steps, n, batch]``: :func:`~weightzoo.zoo.train.randomness.epoch_order` from the members'
    int32 epoch ``keys`` and ``sizes`` (int64), through ``subsets [n, k]`` unless None."""
    keys, sizes = keys.contiguous(), sizes.contiguous()
    _require("sizes", [sizes] if subsets is None else [sizes, subsets], torch.int64)
    n = len(keys)
    out = torch.empty(steps, n, batch, dtype=torch.int64)
    ld = 0 if subsets is None else subsets.shape[1]
    if not library().epoch_order(n, steps, batch, _ptr(keys), _ptr(sizes), _ptr(subsets), ld, _ptr(out)):
        raise MemoryError("weightzoo: the fused epoch order could not allocate its per-thread buffers")
    return out


def mlp_step_vectorized() -> bool:
    """Whether :func:`mlp_step_` was compiled with its register-tiled matmuls (AVX-512, or AVX2 + FMA);
    with plain loops it is slower than PyTorch's batched matmuls, and the trainer keeps those."""
    return available() and bool(library().mlp_step_vectorized())


def available() -> bool:
    """Whether the fused kernels are built and enabled on this machine."""
    return library() is not None
