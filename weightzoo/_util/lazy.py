"""Public names of a package resolved on first use, so importing the package stays cheap.

``import weightzoo`` should not pay for PyTorch Geometric, huggingface_hub, zarr or h5py before
anything needs them; a package lists where each of its public names lives and Python (PEP 562)
imports that module when the name is first read.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping


def lazy_exports(package: str, names: Mapping[str, str]) -> tuple[Callable[[str], object], Callable[[], list[str]]]:
    """``__getattr__`` and ``__dir__`` for ``package`` whose public ``names`` map to the module
    (relative to ``package``, e.g. ``".zoo.opener"``) that defines each."""
    namespace = importlib.import_module(package).__dict__

    def __getattr__(name: str) -> object:
        if name not in names:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        value = getattr(importlib.import_module(names[name], package), name)
        namespace[name] = value  # later reads skip this hook
        return value

    def __dir__() -> list[str]:
        return sorted(set(namespace) | set(names))

    return __getattr__, __dir__
