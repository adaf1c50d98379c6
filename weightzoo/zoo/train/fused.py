"""Fused CPU kernels for the dense path (``fused.c``), compiled on first use and called via ctypes.

The PyTorch path needs several passes over memory for what is one pass in C (bias + ReLU; ReLU
derivative + bias gradient; softmax + cross-entropy gradient + bias gradient; the optimizer
update with per-member learning rates); on small networks those passes cost as much as the
matmuls. For MLP classifiers (:class:`MlpNet`) :func:`mlp_step_` goes further, the whole training step of each
member in one call with its activations in cache, and :func:`mlp_eval` evaluates them. The
library is built with the system C compiler (``$CC`` or ``cc``, ``-O3
-march=native -fopenmp``) into ``$WEIGHTZOO_CACHE`` (default ``~/.cache/weightzoo``), keyed by
the source, the compiler (path and version), every flag and the CPU (:func:`cache_key`), and
shares PyTorch's OpenMP threads; if loading it brings a second OpenMP runtime into the process,
it is not used. Without a compiler, inside :func:`disabled` or with ``WEIGHTZOO_FUSED=0``,
:func:`library` returns None and the trainer uses PyTorch ops only.

Every entry point checks each tensor it hands to C (CPU, dtype, contiguity, shape) before taking
its address and raises ValueError naming the function and the argument: the kernels read raw memory.
"""

from __future__ import annotations

import contextlib
import ctypes
import functools
import hashlib
import os
import platform
import re
import shutil
import subprocess
import tempfile
import threading
import warnings
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from types import EllipsisType

import torch
from torch import Tensor

SOURCE = Path(__file__).with_name("fused.c")
WIDE_VECTORS = ["-mprefer-vector-width=512"] if platform.machine().lower() in ("x86_64", "amd64") else []
FLAGS = ["-O3", "-march=native", *WIDE_VECTORS, "-fopenmp", "-fno-math-errno", "-fno-trapping-math"]
FLAGS += ["-shared", "-fPIC", "-std=c11"]
LIBS = ["-lm"]  # after the source on the command line
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
    "kernel_isa": [],
    "epoch_order": [_I, _I, _I, _P, _P, _P, _I, _P],
}
RETURNS_INT = ("mlp_step", "mlp_eval", "kernel_isa", "epoch_order")
ISAS = ("scalar", "avx2", "avx512")  # kernel_isa's codes (fused.c): plain loops, AVX2 + FMA, AVX-512 tiles
MLP_MAX_LAYERS = 63  # mlp_step's per-thread buffer table (fused.c)
MLP_ACTIVATIONS = ("relu", "tanh", "sigmoid", "gelu")  # mlp_step's hidden activations, by their code in fused.c
OPENMP_RUNTIME = re.compile(r"lib(gomp|iomp\d*|omp)([-.]|$)")  # GNU, Intel and LLVM; not libomptarget
F32, I32, I64 = torch.float32, torch.int32, torch.int64


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


def find_compiler() -> str:
    """The C compiler the kernels are built with: ``$CC`` (or ``cc``) as found on ``PATH``, absolute."""
    name = os.environ.get("CC") or "cc"
    found = shutil.which(name)
    if found is None:
        raise FileNotFoundError(f"C compiler {name!r} not found")
    return os.path.abspath(found)


def _command(compiler: str, flags: Sequence[str], out: str) -> list[str]:
    """The compiler command line that builds the kernels into ``out``."""
    return [compiler, *flags, str(SOURCE), "-o", out, *LIBS]


def cache_key(compiler: str, flags: Sequence[str]) -> str:
    """The cached library's name: a hash of the source, the compiler's path and ``--version`` line, the
    whole command line (``flags`` as :func:`build` passes them) and the CPU, so a change of any rebuilds."""
    version = subprocess.run([compiler, "--version"], check=True, capture_output=True, text=True).stdout
    parts = [*_command(compiler, flags, "<out>"), (version.splitlines() or [""])[0], _cpu_key()]
    return hashlib.sha256(SOURCE.read_bytes() + "\0".join(parts).encode()).hexdigest()[:16]


def build(out: Path, extra_flags: Sequence[str] = (), compiler: str | None = None) -> Path:
    """Compile ``fused.c`` with ``FLAGS + extra_flags`` into ``out`` (atomically: a half-written library is
    never loaded); ``compiler`` defaults to :func:`find_compiler`'s."""
    out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=out.parent) as tmp:
        target = Path(tmp) / out.name
        cmd = _command(compiler or find_compiler(), [*FLAGS, *extra_flags], str(target))
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


def openmp_runtimes(maps: str | Path = "/proc/self/maps") -> list[str]:
    """The OpenMP runtime files (libgomp, libiomp, libomp) mapped into this process, from ``maps``;
    [] where that cannot be read (platforms other than Linux: the check is skipped there)."""
    try:
        with open(maps) as f:
            fields = [line.split(maxsplit=5) for line in f]  # address, perms, offset, dev, inode[, path]
    except OSError:
        return []
    paths = {row[5].strip().removesuffix(" (deleted)") for row in fields if len(row) == 6}
    return sorted({os.path.realpath(p) for p in paths if p.startswith("/") and OPENMP_RUNTIME.match(Path(p).name)})


def _warn(problem: str) -> None:
    """The one warning when the kernels cannot be used: why, and what training does instead."""
    warnings.warn(f"weightzoo: fused CPU kernels {problem}; training uses PyTorch ops (slower).", stacklevel=4)


@functools.cache
def _compiled() -> ctypes.CDLL | None:
    """The kernels, built on first use; None (with one warning) when they cannot be built or loading them
    brought an OpenMP runtime of its own next to PyTorch's (two thread pools, or a crash)."""
    try:
        compiler = find_compiler()
        path = _cache_dir() / f"fused-{cache_key(compiler, FLAGS)}.so"
        before = openmp_runtimes()
        lib = load(path if path.exists() else build(path, compiler=compiler))
    except (OSError, subprocess.CalledProcessError) as exc:
        detail = getattr(exc, "stderr", None) or str(exc)
        _warn(f"unavailable ({detail.strip().splitlines()[0] if detail.strip() else exc}); install a C compiler "
              "with OpenMP or set WEIGHTZOO_FUSED=0")  # fmt: skip
        return None
    after = openmp_runtimes()
    if len(after) > 1 and set(after) - set(before):
        loaded = ", ".join(after)
        _warn(f"not used: loading them added an OpenMP runtime to PyTorch's (loaded now: {loaded}); build them "
              "with the compiler whose runtime PyTorch ships (GCC's libgomp) or set WEIGHTZOO_FUSED=0")  # fmt: skip
        return None
    return lib


_off = 0  # how many disabled() blocks are open, in any thread: a process-wide switch, as the variable is
_off_lock = threading.Lock()


def enabled() -> bool:
    """Whether the kernels are switched on: outside :func:`disabled` and without ``WEIGHTZOO_FUSED=0``."""
    return _off == 0 and os.environ.get("WEIGHTZOO_FUSED", "1") != "0"


def library() -> ctypes.CDLL | None:
    """The compiled kernels, or None when they are switched off (:func:`enabled`) or cannot be used (warns once)."""
    return _compiled() if enabled() else None


@contextlib.contextmanager
def disabled() -> Iterator[None]:
    """The kernels switched off (as with ``WEIGHTZOO_FUSED=0``) inside the block: PyTorch ops only.
    ``os.environ`` is left as it is (worker processes started inside the block do not inherit the switch)."""
    global _off
    with _off_lock:
        _off += 1
    try:
        yield
    finally:
        with _off_lock:
            _off -= 1


# ------------------------------------------------------------------ argument checks

_Shape = Sequence[int | None | EllipsisType]  # None: any size; a trailing ...: any further dimensions


def _check(
    fn: str,
    name: str,
    t: Tensor | None,
    dtype: torch.dtype,
    shape: _Shape | None = None,
    *,
    optional: bool = False,
    contiguous: bool = True,
) -> None:
    """Raise ValueError unless ``t``, argument ``name`` of ``fn``, is what the C code reads there: a CPU
    tensor of ``dtype`` and ``shape`` (None: any size; a trailing ``...``: any further dimensions),
    contiguous unless the caller copies it (``contiguous=False``), or None if ``optional``."""
    if t is None and optional:
        return
    if isinstance(t, Tensor) and t.is_cpu and t.dtype == dtype and (not contiguous or t.is_contiguous()):
        if shape is None or _fits(t.shape, shape):
            return  # about 1 us: cheap enough for every kernel call
    expected = f"a {'contiguous ' if contiguous else ''}cpu {_dtype_name(dtype)} tensor{_shape_text(shape)}"
    raise ValueError(f"{fn}: {name} must be {expected}{' or None' if optional else ''}; got {_described(t)}")


def _fits(actual: Sequence[int], shape: _Shape) -> bool:
    """Whether sizes ``actual`` match the pattern ``shape`` (see :func:`_check`)."""
    if shape and shape[-1] is Ellipsis:
        shape, actual = shape[:-1], actual[: len(shape) - 1]
    if len(actual) != len(shape):
        return False
    return actual == shape if None not in shape else all(e is None or e == a for e, a in zip(shape, actual))


def _dtype_name(dtype: torch.dtype) -> str:
    return str(dtype).removeprefix("torch.")


def _shape_text(shape: _Shape | None) -> str:
    if shape is None:
        return ""
    return " of shape [" + ", ".join("*" if e is None else "..." if e is Ellipsis else str(e) for e in shape) + "]"


def _described(t: object) -> str:
    """What an argument is, in the terms of :func:`_check`'s message."""
    if not isinstance(t, Tensor):
        return type(t).__name__
    layout = "contiguous" if t.is_contiguous() else "non-contiguous"
    return f"a {layout} {t.device} {_dtype_name(t.dtype)} tensor{_shape_text(list(t.shape))}"


_Check = Callable[..., None]  # _check for one function's arguments


def _checker(fn: str) -> _Check:
    """:func:`_check` for the arguments of ``fn``."""
    return functools.partial(_check, fn)


def _loss_weights(check: _Check, weights: Tensor | float, n: int, batch: int) -> tuple[Tensor | None, float]:
    """The loss weights as the kernels take them: float32 ``[n, batch]`` (from ``[n, 1, batch]``) or a scalar."""
    if not isinstance(weights, Tensor):
        return None, float(weights)
    check("weights", weights, F32, (n, 1, batch))
    return weights.view(n, batch), 0.0


def _ptr(t: Tensor | None) -> int | None:
    return None if t is None else t.data_ptr()


# ------------------------------------------------------------------ entry points


def bias_relu_(z: Tensor, bias: Tensor) -> Tensor:
    """``z = relu(z + bias[:, None])`` in place, ``z [n, rows, f]``, ``bias [n, f]`` (float32)."""
    check = _checker("bias_relu_")
    check("z", z, F32, (None, None, None))
    n, rows, f = z.shape
    check("bias", bias, F32, (n, f))
    library().bias_relu(_ptr(z), _ptr(bias), n, rows, f)
    return z


def relu_grad_bias_(grad: Tensor, out: Tensor, bias_grad: Tensor, factors: Tensor | None = None) -> Tensor:
    """``grad *= (out > 0)`` (and ``*= factors``, dropout's) in place and ``bias_grad = grad.sum(1)``;
    ``grad, out, factors [n, rows, f]``, ``bias_grad [n, f]`` (float32)."""
    check = _checker("relu_grad_bias_")
    check("grad", grad, F32, (None, None, None))
    n, rows, f = grad.shape
    check("out", out, F32, (n, rows, f))
    check("bias_grad", bias_grad, F32, (n, f))
    check("factors", factors, F32, (n, rows, f), optional=True)
    library().relu_grad_bias(_ptr(grad), _ptr(out), _ptr(factors), _ptr(bias_grad), n, rows, f)
    return grad


def dropout_(h: Tensor, out: Tensor, factors: Tensor, keys: Tensor, threshold: Tensor, scale: Tensor) -> Tensor:
    """Inverted dropout of ``h [n, rows, f]`` into ``out`` with per-member int32 ``keys`` (may be strided:
    they are copied) and float32 ``threshold``/``scale`` ``[n]``; the factors (0 or scale) go to ``factors``
    for the backward pass. The masks equal :func:`~weightzoo.zoo.train.randomness.dropout_factors_` of the
    hashed counters."""
    check = _checker("dropout_")
    check("h", h, F32, (None, None, None))
    n, rows, f = h.shape
    check("out", out, F32, (n, rows, f))
    check("factors", factors, F32, (n, rows, f))
    check("keys", keys, I32, (n,), contiguous=False)
    check("threshold", threshold, F32, (n,))
    check("scale", scale, F32, (n,))
    keys = keys.contiguous()  # a column of the step's [n, layers] keys
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
    labels ``labels[index]`` (int64 ``[k]`` and ``[n, batch]``), ``weights [n, 1, batch]`` or a scalar; the
    bias gradient (sum over the batch) into ``bias_grad``; ``bias`` and ``bias_grad`` ``[n, c]`` or None."""
    check = _checker("softmax_xent_grad_")
    check("logits", logits, F32, (None, None, None))
    n, c, batch = logits.shape
    check("bias", bias, F32, (n, c), optional=True)
    check("labels", labels, I64, (None,))
    check("index", index, I64, (n, batch))
    check("bias_grad", bias_grad, F32, (n, c), optional=True)
    w, scalar = _loss_weights(check, weights, n, batch)
    library().softmax_xent_grad(
        _ptr(logits), _ptr(bias), _ptr(labels), _ptr(index), _ptr(w), scalar, _ptr(bias_grad), n, c, batch
    )
    return logits


def _check_rows(check: _Check, p: Tensor, lr: Tensor, wd: Tensor, like_p: dict[str, Tensor]) -> int:
    """The optimizer kernels' arguments: float32 ``p [rows, ...]``, the tensors ``like_p`` of its shape and
    per-row ``lr`` and ``wd`` ``[rows]``; returns rows."""
    check("p", p, F32, (None, ...))
    for name, t in like_p.items():
        check(name, t, F32, p.shape)
    check("lr", lr, F32, (p.shape[0],))
    check("wd", wd, F32, (p.shape[0],))
    return p.shape[0]


def adam_rows_(
    p: Tensor, g: Tensor, m1: Tensor, m2: Tensor, lr: Tensor, wd: Tensor, decoupled: bool, betas, eps, step: int
) -> None:
    """One Adam (AdamW if ``decoupled``) step on ``p [rows, ...]`` (``g``, ``m1``, ``m2`` alike) with per-row
    ``lr`` and ``wd`` (float32 ``[rows]``)."""
    rows = _check_rows(_checker("adam_rows_"), p, lr, wd, {"g": g, "m1": m1, "m2": m2})
    bc1, bc2_sqrt = 1.0 - betas[0] ** step, (1.0 - betas[1] ** step) ** 0.5
    library().adam_rows(
        _ptr(p), _ptr(g), _ptr(m1), _ptr(m2), rows, p.numel() // max(rows, 1), _ptr(lr), _ptr(wd),
        int(decoupled), betas[0], betas[1], eps, bc1, bc2_sqrt,
    )  # fmt: skip


def sgd_rows_(p: Tensor, g: Tensor, buf: Tensor | None, lr: Tensor, wd: Tensor, momentum: float) -> None:
    """One SGD step (with momentum if ``buf``) on ``p [rows, ...]`` (``g``, ``buf`` alike) with per-row ``lr``
    and ``wd`` (float32 ``[rows]``)."""
    check = _checker("sgd_rows_")
    rows = _check_rows(check, p, lr, wd, {"g": g})
    check("buf", buf, F32, p.shape, optional=True)
    library().sgd_rows(_ptr(p), _ptr(g), _ptr(buf), rows, p.numel() // max(rows, 1), _ptr(lr), _ptr(wd), momentum)


class MlpNet:
    """n same-shaped MLP classifiers as the ``mlp_step``/``mlp_eval`` kernels read them: layer
    sizes, activation codes and the addresses of every layer's weight, bias and their gradients.

    ``params`` and ``grads`` are per layer ``weight [n, out, in], bias [n, out]`` (contiguous CPU
    float32, checked here once); hidden layer ``k`` applies ``activations[k]`` (one of
    :data:`MLP_ACTIVATIONS`). Without ``grads`` only :func:`mlp_eval` may use it. The tensors are kept
    alive, so a net can be made once and reused every step.
    """

    def __init__(self, activations: Sequence[str], params: Sequence[Tensor], grads: Sequence[Tensor] | None = None):
        layers = len(params) // 2
        if len(params) % 2 or not 1 <= layers <= MLP_MAX_LAYERS:
            raise ValueError(f"MlpNet: {len(params)} params; they take weight and bias of 1 to {MLP_MAX_LAYERS} layers")
        if len(activations) != layers - 1 or not set(activations) <= set(MLP_ACTIVATIONS):
            raise ValueError(f"MlpNet: activations {list(activations)}; need {layers - 1} of {MLP_ACTIVATIONS}")
        self.n, dims = _mlp_sizes(params)
        self.trainable = grads is not None
        grads = params if grads is None else grads  # mlp_eval leaves the gradient addresses unused
        if len(grads) != len(params):
            raise ValueError(f"MlpNet: {len(grads)} grads for {len(params)} params")
        for i, (g, p) in enumerate(zip(grads, params)):
            _check("MlpNet", f"grads[{i}]", g, F32, p.shape)
        self.tensors = (list(params), list(grads))
        acts = [MLP_ACTIVATIONS.index(a) for a in activations] or [0]
        pairs = [(params[2 * k], params[2 * k + 1], grads[2 * k], grads[2 * k + 1]) for k in range(layers)]
        self.layers, self.sizes = layers, dims
        self.dims = (ctypes.c_int64 * len(dims))(*dims)
        self.acts = (ctypes.c_int64 * len(acts))(*acts)
        self.addresses = (ctypes.c_int64 * (4 * layers))(*(t.data_ptr() for four in pairs for t in four))


def _mlp_sizes(params: Sequence[Tensor]) -> tuple[int, list[int]]:
    """Members and layer sizes (inputs, hidden units, classes) of :class:`MlpNet`'s checked ``params``."""
    n, dims = None, [None]
    for k in range(len(params) // 2):
        _check("MlpNet", f"params[{2 * k}]", params[2 * k], F32, (n, None, dims[-1]))
        n, out, dims[-1] = params[2 * k].shape
        dims.append(out)
        _check("MlpNet", f"params[{2 * k + 1}]", params[2 * k + 1], F32, (n, out))
    return n, dims


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
    call, into its gradient tensors. The samples are ``x[index]`` (float32 ``x [k, inputs]``, int64
    ``index [n, batch]``) with labels ``labels[label_index]`` (int64 ``[k']``, ``[n, batch]``) and loss
    weights ``weights`` (``[n, 1, batch]`` or a scalar); ``dropout`` is ``(keys [n, hidden layers] int32,
    threshold [n], scale [n])`` as :func:`dropout_` takes them, applied after every hidden activation."""
    if not net.trainable:
        raise ValueError("mlp_step_: the net was made without gradient tensors")
    check = _checker("mlp_step_")
    check("x", x, F32, (None, net.sizes[0]))
    check("index", index, I64, (net.n, None))
    batch = index.shape[1]
    check("labels", labels, I64, (None,))
    check("label_index", label_index, I64, (net.n, batch))
    w, scalar = _loss_weights(check, weights, net.n, batch)
    keys, threshold, scale = dropout if dropout is not None else (None, None, None)
    check("dropout[0]", keys, I32, (net.n, net.layers - 1), optional=dropout is None)
    check("dropout[1]", threshold, F32, (net.n,), optional=dropout is None)
    check("dropout[2]", scale, F32, (net.n,), optional=dropout is None)
    done = library().mlp_step(
        net.n, batch, net.layers, net.dims, net.acts, net.addresses, _ptr(x), _ptr(index), _ptr(labels),
        _ptr(label_index), _ptr(w), scalar, _ptr(keys), _ptr(threshold), _ptr(scale),
    )  # fmt: skip
    if not done:
        raise MemoryError("weightzoo: the fused MLP step could not allocate its per-thread buffers")


def mlp_eval(
    net: MlpNet, x: Tensor, rows: Tensor, counts: Tensor, labels: Tensor, label_offset: Tensor, batch: int = 256
) -> tuple[Tensor, Tensor]:
    """Summed cross-entropy and correct predictions (float64 ``[n]`` each) of ``net``'s MLPs
    (without dropout) over their samples ``x[rows[m, :counts[m]]]`` (float32 ``x [k, inputs]``; int64
    ``rows [n, k']``, or one row expanded to all members, and ``counts [n]``), labels
    ``labels[rows + label_offset[m]]`` (int64 ``[k'']`` and ``[n]``); a prediction is the first largest logit."""
    check = _checker("mlp_eval")
    check("x", x, F32, (None, net.sizes[0]))
    check("rows", rows, I64, (net.n, None), contiguous=False)
    shared = rows.stride(0) == 0
    if not shared:
        check("rows", rows, I64, (net.n, None))
    rows = rows[0].contiguous() if shared else rows
    check("counts", counts, I64, (net.n,))
    check("labels", labels, I64, (None,))
    check("label_offset", label_offset, I64, (net.n,))
    loss, hits = torch.empty(net.n, dtype=torch.float64), torch.empty(net.n, dtype=torch.float64)
    stride = 0 if shared else rows.shape[1]
    done = library().mlp_eval(
        net.n, batch, net.layers, net.dims, net.acts, net.addresses, _ptr(x), _ptr(rows), stride,
        _ptr(counts), _ptr(labels), _ptr(label_offset), _ptr(loss), _ptr(hits),
    )  # fmt: skip
    if not done:
        raise MemoryError("weightzoo: the fused MLP evaluation could not allocate its per-thread buffers")
    return loss, hits


def epoch_order(keys: Tensor, sizes: Tensor, subsets: Tensor | None, steps: int, batch: int) -> Tensor:
    """int64 ``[steps, n, batch]``: :func:`~weightzoo.zoo.train.randomness.epoch_order` from the members'
    int32 epoch ``keys [n]`` and int64 ``sizes [n]``, through int64 ``subsets [n, k]`` unless None."""
    check = _checker("epoch_order")
    check("keys", keys, I32, (None,))
    n = len(keys)
    check("sizes", sizes, I64, (n,))
    check("subsets", subsets, I64, (n, None), optional=True)
    out = torch.empty(steps, n, batch, dtype=torch.int64)
    ld = 0 if subsets is None else subsets.shape[1]
    if not library().epoch_order(n, steps, batch, _ptr(keys), _ptr(sizes), _ptr(subsets), ld, _ptr(out)):
        raise MemoryError("weightzoo: the fused epoch order could not allocate its per-thread buffers")
    return out


# ------------------------------------------------------------------ what is available


def isa() -> str | None:
    """The register tiles :func:`mlp_step_`'s matmuls were compiled with: ``"avx512"``, ``"avx2"`` (with FMA)
    or ``"scalar"`` (plain loops); None when the kernels are off or unavailable. Part of the numeric path:
    the tiles' summation order shows in trained parameters."""
    lib = library()
    return None if lib is None else ISAS[lib.kernel_isa()]


def mlp_step_vectorized() -> bool:
    """Whether :func:`mlp_step_` was compiled with its register-tiled matmuls (AVX-512, or AVX2 + FMA);
    with plain loops it is slower than PyTorch's batched matmuls, and the trainer keeps those."""
    return isa() in ("avx512", "avx2")


def available() -> bool:
    """Whether the fused kernels are built and enabled on this machine."""
    return library() is not None
