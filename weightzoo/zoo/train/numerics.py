"""Which numeric path trains members: fused C kernels (and their instruction set) or PyTorch ops only,
CPU or CUDA, the torch version and the trainer's own version.

The same spec on the same path gives identical parameters; on another path the same training differs by
float rounding, which training amplifies. A zoo records the path that trained it, so resuming or
extending it elsewhere can be refused instead of silently mixing members of two paths.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, fields
from typing import TYPE_CHECKING, Any

from ...errors import StoreError

if TYPE_CHECKING:
    import torch

# Bump whenever a change alters trained parameters (as the per-member epoch data order did), so zoos
# trained before and after it are told apart.
TRAINER_VERSION = 1


@dataclass(frozen=True)
class NumericPath:
    """What trained parameters depend on besides the spec.

    Args:
        device: ``"cpu"`` or ``"cuda"`` (the device type).
        kernels: ``"fused-avx512"``, ``"fused-avx2"``, ``"fused-scalar"`` (the C kernels and their register
            tiles), ``"torch"`` (PyTorch ops only) or, on CUDA, ``"torch (cuda 12.4)"`` with the CUDA version.
        torch: ``torch.__version__``.
        trainer: :data:`TRAINER_VERSION`.
    """

    device: str
    kernels: str
    torch: str
    trainer: int

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready fields (stored in zoo attributes and in each :class:`GroupResult`)."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> NumericPath:
        """The path :meth:`to_dict` wrote; StoreError naming the missing fields otherwise."""
        names = [f.name for f in fields(cls)]
        missing = [k for k in names if k not in data]
        if missing:
            raise StoreError(f"numeric path {dict(data)!r}: missing {', '.join(missing)}; it needs {', '.join(names)}")
        return cls(str(data["device"]), str(data["kernels"]), str(data["torch"]), int(data["trainer"]))

    def __str__(self) -> str:
        """One line, e.g. ``cpu, fused kernels (avx512), torch 2.13.0+cpu, trainer 1`` (for messages)."""
        return f"{self.device}, {_kernel_words(self.kernels)}, torch {self.torch}, trainer {self.trainer}"


def _kernel_words(kernels: str) -> str:
    """``fused-avx2`` as ``fused kernels (avx2)``, ``torch (cuda 12.4)`` as ``torch ops (cuda 12.4)``."""
    if kernels.startswith("fused-"):
        return f"fused kernels ({kernels.removeprefix('fused-')})"
    return kernels.replace("torch", "torch ops", 1) if kernels.startswith("torch") else kernels


def _gpu_kernels() -> str:
    """PyTorch ops on a GPU, with the CUDA (or ROCm) version they run on."""
    import torch

    if torch.version.cuda:
        return f"torch (cuda {torch.version.cuda})"
    hip = getattr(torch.version, "hip", None)
    return f"torch (hip {hip})" if hip else "torch"


def numeric_path(device: str | torch.device = "cpu") -> NumericPath:
    """The path this process trains on for ``device``: the fused kernels' ISA on CPU where they are
    available (see :func:`fused.isa`), else PyTorch ops. (torch and the kernels are imported here,
    so that a store can read a recorded path without them.)"""
    import torch

    from . import fused

    kind = torch.device(device).type
    if kind == "cuda":
        kernels = _gpu_kernels()
    elif kind == "cpu" and fused.available():
        kernels = f"fused-{fused.isa()}"
    else:
        kernels = "torch"
    return NumericPath(kind, kernels, torch.__version__, TRAINER_VERSION)
