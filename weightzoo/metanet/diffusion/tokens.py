"""Flat parameters as tokens: each layer's values cut into fixed-size chunks (p-diff, D2NWG).

A *layer* is one module's tensors (``fc1.weight`` and ``fc1.bias``), in layout order. Its values
are standardized with the layer's mean and spread over training members, so small bias and
norm layers weigh as much as large weight matrices, then cut into chunks of ``chunk`` values
(the last one zero-padded). A tokenizer may keep only some layers (partial generation: the
rest of a member stays fixed).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from ...errors import LayoutError, SpecError
from ...layout import ParamLayout

NORMALIZE = ("layer", "parameter")


@dataclass(frozen=True)
class TokenLayer:
    """One layer's slice ``start:stop`` of the flat vector and its first token."""

    name: str
    start: int
    stop: int
    first_token: int
    tokens: int

    @property
    def size(self) -> int:
        return self.stop - self.start


def layer_slices(layout: ParamLayout) -> list[tuple[str, int, int]]:
    """``(module name, start, stop)`` of every layer: consecutive entries of one module."""
    out: list[tuple[str, int, int]] = []
    for e in layout:
        module = e.name.rsplit(".", 1)[0] if "." in e.name else e.name
        if out and out[-1][0] == module and out[-1][2] == e.offset:
            out[-1] = (module, out[-1][1], e.stop)
        else:
            out.append((module, e.offset, e.stop))
    return out


class WeightTokenizer(nn.Module):
    """``[B, P]`` flat parameters <-> ``[B, T, chunk]`` standardized tokens.

    Args:
        layout: the architecture's ParamLayout.
        chunk: values per token.
        layers: module names to keep (default all); see :func:`layer_slices`.
        normalize: ``"layer"`` (one mean and spread per layer) or ``"parameter"`` (per parameter
            over the training members, as p-diff does: what varies between members, not the
            weights' shared values, is what the tokens then carry; members fine-tuned from one
            base differ by far less than their weights' spread).
    """

    def __init__(
        self, layout: ParamLayout, chunk: int = 64, layers: Sequence[str] | None = None, normalize: str = "layer"
    ) -> None:
        super().__init__()
        if chunk < 1:
            raise SpecError(f"tokenizer: chunk={chunk} must be >= 1")
        if normalize not in NORMALIZE:
            raise SpecError(f"tokenizer: normalize={normalize!r} is unknown; use one of {list(NORMALIZE)}")
        self.normalize = normalize
        slices = layer_slices(layout)
        names = [n for n, _, _ in slices]
        if layers is not None:
            unknown = [n for n in layers if n not in names]
            if unknown or not layers:
                raise LayoutError(f"tokenizer: layers {unknown or list(layers)} not in this layout; it has {names}")
        keep = set(names if layers is None else layers)
        self.layout, self.chunk = layout, chunk
        self.layers: tuple[TokenLayer, ...] = ()
        first = 0
        for name, start, stop in slices:
            if name in keep:
                n = math.ceil((stop - start) / chunk)
                self.layers += (TokenLayer(name, start, stop, first, n),)
                first += n
        token_layer = torch.cat([torch.full((lay.tokens,), i) for i, lay in enumerate(self.layers)])
        token_pos = torch.cat([torch.arange(lay.tokens) for lay in self.layers])
        self.register_buffer("token_layer", token_layer, persistent=False)
        self.register_buffer("token_pos", token_pos, persistent=False)
        index, mask = self._gather_index()
        self.register_buffer("index", index, persistent=False)
        self.register_buffer("mask", mask, persistent=False)
        stats = len(self.layers) if normalize == "layer" else layout.size
        self.register_buffer("mean", torch.zeros(stats))
        self.register_buffer("std", torch.ones(stats))

    @property
    def num_tokens(self) -> int:
        return int(self.token_layer.numel())

    @property
    def layer_names(self) -> list[str]:
        return [lay.name for lay in self.layers]

    def _gather_index(self) -> tuple[Tensor, Tensor]:
        """Flat positions ``[T, chunk]`` of every token entry (padding reads position 0) and the
        mask of real entries."""
        index = torch.zeros(sum(lay.tokens for lay in self.layers), self.chunk, dtype=torch.long)
        mask = torch.zeros_like(index, dtype=torch.bool)
        for lay in self.layers:
            pos = torch.arange(lay.tokens * self.chunk)
            real = pos < lay.size
            rows = slice(lay.first_token, lay.first_token + lay.tokens)
            index[rows] = torch.where(real, lay.start + pos, 0).view(lay.tokens, self.chunk)
            mask[rows] = real.view(lay.tokens, self.chunk)
        return index, mask

    def _check(self, flat: Tensor) -> None:
        if flat.dim() != 2 or flat.shape[1] != self.layout.size:
            raise LayoutError(f"tokenizer: expected flat parameters [B, {self.layout.size}], got {tuple(flat.shape)}")

    def fit(self, flat: Tensor) -> WeightTokenizer:
        """Per-layer (or per-parameter) mean and standard deviation over ``flat [B, P]`` (training members)."""
        self._check(flat)
        if self.normalize == "parameter":
            values = flat.double()
            self.mean.copy_(values.mean(0))
            self.std.copy_(values.std(0, correction=0).clamp(min=1e-8))
            return self
        for i, lay in enumerate(self.layers):
            values = flat[:, lay.start : lay.stop].double()
            self.mean[i] = values.mean()
            self.std[i] = values.std(correction=0).clamp(min=1e-8)
        return self

    def encode(self, flat: Tensor) -> Tensor:
        """Standardized tokens ``[B, T, chunk]`` (padding entries are 0)."""
        self._check(flat)
        scale, shift = self._token_stats(flat.dtype)
        return torch.where(self.mask, (flat[:, self.index] - shift) / scale, 0.0)

    def _token_stats(self, dtype: torch.dtype) -> tuple[Tensor, Tensor]:
        """The spread and mean of each token entry: its layer's ``[T, 1]``, or its parameter's ``[T, chunk]``
        (padding entries read parameter 0's and are masked)."""
        if self.normalize == "parameter":
            return self.std[self.index].to(dtype), self.mean[self.index].to(dtype)
        return self.std[self.token_layer].to(dtype)[:, None], self.mean[self.token_layer].to(dtype)[:, None]

    def decode(self, tokens: Tensor, base: Tensor | None = None) -> Tensor:
        """Flat parameters ``[B, P]`` from tokens; layers the tokenizer does not keep come from
        ``base [B or 1, P]`` (required when it keeps only some layers)."""
        B = tokens.shape[0]
        scale, shift = self._token_stats(tokens.dtype)
        values = tokens * scale + shift
        kept = sum(lay.size for lay in self.layers)
        if base is None:
            if kept != self.layout.size:
                raise SpecError(f"tokenizer keeps {self.layer_names} only; decode needs base= for the other layers")
            out = tokens.new_zeros(B, self.layout.size)
        else:
            self._check(base)
            out = base.to(tokens.dtype).expand(B, -1).clone()
        out[:, self.index[self.mask]] = values[:, self.mask]
        return out

    def config(self) -> dict:
        return {"chunk": self.chunk, "layers": self.layer_names, "normalize": self.normalize}

    def __repr__(self) -> str:
        return f"{self.__class__.__name__}(layers={len(self.layers)}, tokens={self.num_tokens}, chunk={self.chunk})"
