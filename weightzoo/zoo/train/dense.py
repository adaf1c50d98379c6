"""The fast path: linear + activation stacks (MLPs, SIRENs) with hand-written gradients."""

from __future__ import annotations

import functools
import math
from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any

import torch
from torch import Tensor

from . import fused
from .activations import ActRule, act_rule
from .network import Chunk, Layer
from .randomness import dropout_factors_, hash32_


@dataclass(frozen=True)
class _Block:
    """A linear layer and the activation after it (the unit of the fast path)."""

    weight: str
    bias: str | None
    fan_in: int
    fan_out: int
    act: ActRule | None
    site: int  # dropout site, -1 if none


def dense_blocks(arch: Mapping[str, Any], layers: list[Layer]) -> list[_Block] | None:
    """The architecture as linear+activation blocks, or None if the fast path cannot run it
    (convolutions, norms, a leading non-flatten layer, two activations in a row, an output activation)."""
    blocks: list[_Block] = []
    for i, layer in enumerate(layers):
        kind = layer.spec["type"]
        if kind == "linear":
            blocks.append(
                _Block(
                    layer.names[0],
                    layer.names[1] if len(layer.names) > 1 else None,
                    layer.spec["in"],
                    layer.spec["out"],
                    None,
                    -1,
                )
            )
        elif kind == "act" and blocks and blocks[-1].act is None and layer.site >= 0:
            rule = act_rule(layer.module)
            if rule is None:
                return None
            blocks[-1] = replace(blocks[-1], act=rule, site=layer.site)
        elif not (kind == "dropout" or (kind == "flatten" and i == 0)):
            return None
    if not blocks or any(b.act is None for b in blocks[:-1]):
        return None  # two linear layers in a row: the generic path
    return blocks


class _Buffers:
    """Reusable tensors for one chunk of members, so training steps allocate (almost) nothing.

    Hidden activations are batch-major ``[n, batch, features]``; the logits ``[n, out, batch]``.
    """

    def __init__(self, blocks: list[_Block], chunk: int, batch: int, in_features: int, dropout: bool, device):
        def empty(*shape: int, dtype=torch.float32) -> Tensor:
            return torch.empty(shape, dtype=dtype, device=device)

        hidden, last = blocks[:-1], blocks[-1]
        widest = max(max(b.fan_in, b.fan_out) for b in blocks)
        self.x = empty(chunk * batch, in_features)
        self.z = [empty(chunk, batch, b.fan_out) for b in hidden] + [empty(chunk, last.fan_out, batch)]
        self.y = [empty(chunk, batch, b.fan_out) if b.act.reads_input else None for b in hidden]
        self.a = [empty(chunk, batch, b.fan_out) if dropout else None for b in hidden]
        self.f = [empty(chunk, batch, b.fan_out) if dropout else None for b in hidden]
        self.ints = (empty(chunk * widest * batch, dtype=torch.int32), empty(chunk * widest * batch, dtype=torch.int32))
        self.grad = (empty(chunk * widest * batch), empty(chunk * widest * batch))
        self.probs = empty(chunk, last.fan_out, batch)
        self.minus_one = torch.full((chunk, 1, batch), -1.0, device=device)
        self.counters = [
            torch.arange(batch * b.fan_out, dtype=torch.int32, device=device).view(batch, -1) for b in hidden
        ]

    @staticmethod
    def view(flat: Tensor, *shape: int) -> Tensor:
        return flat[: math.prod(shape)].view(shape)


class DensePath:
    """Gradients of linear+activation stacks, written by hand: batched matmuls into reused buffers,
    one pass per elementwise step, gradients straight into the group's buffers.

    Hidden activations are batch-major (``[n, batch, features]``: the input gathers straight into
    it and the matmuls need no transposed activations); the last layer writes feature-major logits
    ``[n, out, batch]``, whose softmax over the class axis is fast.
    """

    def __init__(
        self, blocks: list[_Block], kind: str, chunk: int, batch: int, in_features: int, dropout: bool, device
    ):
        self.blocks, self.kind = blocks, kind
        self._buffer_args = (blocks, chunk, batch, in_features, dropout, device)
        # one-pass C kernels (fused.py) where they apply: CPU, ReLU blocks with a bias, softmax loss
        self.fused = torch.device(device).type == "cpu" and fused.available()
        self.fused_relu = [
            self.fused and b.bias is not None and b.act is not None and b.act.name == "relu" for b in blocks
        ]
        self.fused_loss = self.fused and kind == "classification"
        # MLP classifiers (biases throughout, ReLU/tanh/sigmoid/GELU): each whole step in one kernel, in cache
        self.activations = [b.act.name for b in blocks[:-1]]
        kernel_mlp = all(b.bias is not None for b in blocks) and set(self.activations) <= set(fused.MLP_ACTIVATIONS)
        self.whole_step = (
            self.fused_loss and kernel_mlp and len(blocks) <= fused.MLP_MAX_LAYERS and fused.mlp_step_vectorized()
        )
        self._nets: dict[tuple, fused.MlpNet] = {}

    @functools.cached_property
    def buf(self) -> _Buffers:
        """The op-by-op path's reused tensors, made on first use (the whole-step kernel needs none)."""
        return _Buffers(*self._buffer_args)

    def gradients(self, chunk: Chunk) -> None:
        """Forward, loss gradient and backward of one chunk; fills ``chunk.grads``."""
        if self.whole_step:
            self._whole_step(chunk)
            return
        inputs = self._forward(chunk)
        grad = self._loss_gradient(chunk, inputs.pop())
        self._backward(chunk, inputs, grad)

    def _whole_step(self, c: Chunk) -> None:
        """The gradients of an MLP classifier chunk by :func:`fused.mlp_step_`."""
        drop = None
        if c.drop is not None:
            drop = (c.drop.keys[:, [b.site for b in self.blocks[:-1]]], c.drop.threshold, c.drop.scale)
        net = self._net(c.params, c.grads)
        fused.mlp_step_(net, c.x_source, c.index, c.y_source, c.label_index, c.weights, drop)

    def evaluate(
        self, params: Mapping[str, Tensor], x: Tensor, rows: Tensor, counts: Tensor, y: Tensor, offset: Tensor
    ) -> tuple[Tensor, Tensor]:
        """Summed loss and correct predictions ``[G]`` (float64) over samples ``x[rows[g, :counts[g]]]`` by
        :func:`fused.mlp_eval`; for networks that run :func:`fused.mlp_step_` (``whole_step``)."""
        return fused.mlp_eval(self._net(params, None), x.reshape(len(x), -1), rows, counts, y, offset)

    def _net(self, params: Mapping[str, Tensor], grads: Mapping[str, Tensor] | None) -> fused.MlpNet:
        """The kernels' view of these members (made once per chunk: the same tensors every step)."""
        first = params[self.blocks[0].weight]
        key = (first.data_ptr(), len(first), None if grads is None else grads[self.blocks[0].weight].data_ptr())
        if key not in self._nets:
            names = [name for b in self.blocks for name in (b.weight, b.bias)]
            self._nets[key] = fused.MlpNet(
                self.activations, [params[k] for k in names], None if grads is None else [grads[k] for k in names]
            )
        return self._nets[key]

    def _forward(self, c: Chunk) -> list[Tensor]:
        """The input of every block (``[n, batch, features]``) and the logits (``[n, out, batch]``)."""
        n, batch = c.index.shape
        h = torch.index_select(c.x_source, 0, c.index.reshape(-1), out=self.buf.x[: n * batch]).view(n, batch, -1)
        outs = [h]
        for k, blk in enumerate(self.blocks[:-1]):
            z = torch.bmm(h, c.params[blk.weight].transpose(1, 2), out=self.buf.z[k][:n])
            if self.fused_relu[k]:
                h = fused.bias_relu_(z, c.params[blk.bias])
            else:
                if blk.bias is not None:
                    z.add_(c.params[blk.bias].unsqueeze(1))
                h = blk.act.forward(z, _rows(self.buf.y[k], n))
            if c.drop is not None:
                h = self._dropout(c, k, h)
            outs.append(h)
        last = self.blocks[-1]
        z = torch.bmm(c.params[last.weight], h.transpose(1, 2), out=self.buf.z[-1][:n])
        if last.bias is not None and not self.fused_loss:  # the fused loss adds the bias itself
            z.add_(c.params[last.bias].unsqueeze(-1))
        outs.append(z)
        return outs

    def _dropout(self, c: Chunk, k: int, h: Tensor) -> Tensor:
        """Hidden block ``k``'s output after this step's dropout; the factors stay in ``buf.f``."""
        n = c.index.shape[0]
        if self.fused:
            keys = c.drop.keys[:, self.blocks[k].site]
            return fused.dropout_(h, self.buf.a[k][:n], self.buf.f[k][:n], keys, c.drop.threshold, c.drop.scale)
        return torch.mul(h, self._factors(c, k), out=self.buf.a[k][:n])

    def _factors(self, c: Chunk, k: int) -> Tensor:
        """This step's dropout factors of hidden block ``k``, ``[n, batch, features]``."""
        n, batch = c.index.shape
        shape = (n, batch, self.blocks[k].fan_out)
        key = c.drop.keys[:, self.blocks[k].site].view(n, 1, 1)
        hashed = torch.add(self.buf.counters[k], key, out=_Buffers.view(self.buf.ints[0], *shape))
        hash32_(hashed, _Buffers.view(self.buf.ints[1], *shape))
        t, s = c.drop.threshold.view(n, 1, 1), c.drop.scale.view(n, 1, 1)
        return dropout_factors_(hashed, self.buf.f[k][:n], t, s)

    def _loss_gradient(self, c: Chunk, out: Tensor) -> Tensor:
        """d(sum of member losses)/d(outputs), ``[n, out, batch]``."""
        n, batch = c.index.shape
        if self.fused_loss:
            last = self.blocks[-1]
            bias = None if last.bias is None else c.params[last.bias]
            bias_grad = None if last.bias is None else c.grads[last.bias]
            labels = c.label_index.contiguous()  # the kernel reads raw memory
            return fused.softmax_xent_grad_(out, bias, c.y_source, labels, c.weights, bias_grad)
        if self.kind == "classification":
            labels = torch.index_select(c.y_source, 0, c.label_index.reshape(-1)).view(n, 1, batch)
            grad = torch._softmax(out, 1, False, out=self.buf.probs[:n])
            grad.scatter_add_(1, labels, self.buf.minus_one[:n])
            return grad.mul_(c.weights)
        targets = torch.index_select(c.y_source, 0, c.label_index.reshape(-1)).view(n, batch, -1)
        return out.sub_(targets.transpose(1, 2)).mul_(c.weights * (2.0 / out.shape[1]))

    def _backward(self, c: Chunk, inputs: list[Tensor], grad: Tensor) -> None:
        """From the logits' gradient (feature-major) down; hidden gradients are batch-major."""
        n, batch = c.index.shape
        last = len(self.blocks) - 1
        for k in range(last, -1, -1):
            blk = self.blocks[k]
            bias_done = k == last and self.fused_loss  # the fused loss wrote the last bias's gradient
            if k < last:
                factors = None if c.drop is None else self.buf.f[k][:n]
                if self.fused_relu[k]:
                    grad = fused.relu_grad_bias_(grad, self.buf.z[k][:n], c.grads[blk.bias], factors)
                    bias_done = True
                else:
                    if factors is not None:
                        grad.mul_(factors)
                    grad = blk.act.backward(grad, self.buf.z[k][:n])  # input, or output of an in-place activation
            feature_major = grad if k == last else grad.transpose(1, 2)
            torch.bmm(feature_major, inputs[k], out=c.grads[blk.weight])
            if blk.bias is not None and not bias_done:
                torch.sum(feature_major, -1, out=c.grads[blk.bias])
            if k > 0:
                out = _Buffers.view(self.buf.grad[k % 2], n, batch, blk.fan_in)
                grad = torch.bmm(feature_major.transpose(1, 2), c.params[blk.weight], out=out)


def _rows(buffer: Tensor | None, n: int) -> Tensor | None:
    """The first ``n`` rows of a chunk buffer, if there is one."""
    return None if buffer is None else buffer[:n]
