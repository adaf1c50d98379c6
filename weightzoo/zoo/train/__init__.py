"""Training zoo members: the vectorized group trainer and the plain per-member reference loop.

``train_group`` trains G members that share an architecture in one batched computation:

* parameters, gradients and optimizer state of the whole group are each one flat tensor (layer
  by layer, ``[G, *shape]`` per layer), so an optimizer step is one pass per layer with the
  fused CPU kernels (:mod:`.fused`), or one ``torch._fused_adam_`` call (or a few SGD ops) over
  the group on CUDA or without them, with per-member learning rate and weight decay;
* linear + activation stacks (MLPs, SIRENs) take a hand-written path (:class:`DensePath`):
  batched matmuls (``bmm``) and one pass per elementwise step into buffers reused every step
  (bias + ReLU, ReLU derivative + bias gradient and the softmax loss gradient fused in C on CPU),
  gradients written straight into the group's gradient tensor; on CPU, MLP classifiers run each
  member's whole step (and their checkpoint evaluation) in one C kernel instead (:mod:`.fused`);
* anything else (convolutions as grouped convolutions on ``[batch, G * channels, *spatial]``,
  pooling, LayerNorm) runs :class:`BatchedNet` under autograd, one backward per chunk of members;
* members are kept sorted by training-subset size, so members that still have samples in a step
  are a suffix of the group and nothing is computed for the others.

The same code runs on CUDA (``device="cuda"``). ``train_member`` is the plain loop
(``nn.Module`` + ``torch.optim``) the trainer is checked and benchmarked against. Both draw
every random choice the same way, so they follow the same trajectory up to float rounding:

* init: a ``torch.Generator`` seeded with the member's ``seed`` draws the weights in layout order;
* training subset: ``torch.randperm`` with a Generator seeded by a hash of (seed, stream);
* per-epoch data order: the member's positions sorted by a hash of (seed, stream, epoch, position),
  computed for the whole group at once (a radix-sort kernel on CPU, a batched sort elsewhere);
* dropout masks: a counter-based integer hash of (seed, epoch, step, layer, element) evaluated as
  tensor ops, so a whole group's masks come from one call per layer.

A member's randomness never depends on the other members of its group.

Semantics shared by both trainers:

* an epoch is one pass over the member's training subset (``train_fraction`` of the training set,
  rounded, at least one sample, chosen by ``seed``) in a fresh random order, in batches of
  ``batch_size``; the last partial batch is used (the group trainer pads it and masks the padding);
* loss: mean cross-entropy (classification) or mean squared error (regression) over the batch;
* dropout with probability ``dropout`` follows every hidden activation, in training only; dropout
  layers inside the architecture are ignored; a unit is kept when its 32-bit hash (as float32)
  exceeds a threshold, so ``p`` is exact up to float32 rounding (about 1e-7);
* metrics at each checkpoint epoch (0 is the initialization), in eval mode, over the member's
  training subset and the whole test set: loss and accuracy, or loss (MSE) and PSNR with peak 1.0,
  ``10 * log10(1 / mse)`` (targets are expected in a range of width about 1).

Inits (``fan_in``/``fan_out`` include the kernel size; biases start at zero except for
``default``, norm layers at weight 1 / bias 0; ``init_scale`` multiplies the dense weights):

========================  ====================================================================
``default``               torch's own: weights and biases U(-1/sqrt(fan_in), 1/sqrt(fan_in))
``uniform`` / ``normal``  variance 1/fan_in (LeCun): U(+-sqrt(3/fan_in)) / N(0, 1/fan_in)
``kaiming_uniform``       He, gain sqrt(2): U(+-sqrt(6/fan_in)); ``kaiming_normal`` N(0, 2/fan_in)
``xavier``                Glorot uniform: U(+-sqrt(6/(fan_in + fan_out)))
``siren``                 first layer U(+-1/fan_in), later ones U(+-sqrt(6/fan_in)/w0)
========================  ====================================================================

The package, one module per job:

* :mod:`.config`: hyperparameter defaults, valid choices, :class:`MemberConfig` and run checks;
* :mod:`.randomness`: seed keys, integer hashing, training subsets, epoch order, dropout masks;
* :mod:`.init`: initial parameters;
* :mod:`.network`: :class:`BatchedNet` (generic path) and :class:`AutogradPath`;
* :mod:`.activations`: the fast path's activations, in place and differentiated by hand;
* :mod:`.dense`: :class:`DensePath`, the fast path for linear + activation stacks;
* :mod:`.losses`: per-sample losses, predicted class, PSNR;
* :mod:`.optim`: batched optimizers (:class:`ClassOptimizer`) and the reference loop's optimizer;
* :mod:`.group`: :class:`GroupTrainer` and :func:`train_group`;
* :mod:`.loop`: :func:`train_member`, the plain per-member reference loop;
* :mod:`.memory`: the memory model and :func:`group_size_for`;
* :mod:`.fused`: the fused CPU kernels (C via ctypes): build, load, argument checks, :func:`~.fused.isa`;
* :mod:`.variants`: per-member task variants (class subsets, label and input permutations, rotations,
  flips, noise, training-set sizes) as :class:`TaskVariant`;
* :mod:`.numerics`: :class:`NumericPath`, which numeric path (kernels and their ISA or PyTorch ops, device,
  torch and :data:`TRAINER_VERSION`) trained a group, recorded in every :class:`GroupResult`.

Names are imported on first use, so reading a stored :class:`NumericPath` needs no torch.
"""

from ..._util.lazy import lazy_exports

_EXPORTS = {
    "HPARAM_DEFAULTS": ".config",
    "INITS": ".config",
    "OPTIMIZERS": ".config",
    "MemberConfig": ".config",
    "member_config": ".config",
    "DensePath": ".dense",
    "dense_blocks": ".dense",
    "GroupResult": ".group",
    "GroupTrainer": ".group",
    "train_group": ".group",
    "init_params": ".init",
    "train_member": ".loop",
    "per_sample_loss": ".losses",
    "predicted_class": ".losses",
    "psnr": ".losses",
    "AUTOGRAD_CHUNK_BYTES": ".memory",
    "EVAL_BYTES": ".memory",
    "EVAL_CHUNK": ".memory",
    "FAST_CHUNK_BYTES": ".memory",
    "MemoryModel": ".memory",
    "chunk_members": ".memory",
    "group_size_for": ".memory",
    "memory_model": ".memory",
    "AutogradPath": ".network",
    "BatchedNet": ".network",
    "check_supported": ".network",
    "shape_input": ".network",
    "TRAINER_VERSION": ".numerics",
    "NumericPath": ".numerics",
    "numeric_path": ".numerics",
    "TaskVariant": ".variants",
    "ADAM_BETAS": ".optim",
    "ADAM_EPS": ".optim",
    "MOMENTUM": ".optim",
    "ClassOptimizer": ".optim",
    "make_optimizer": ".optim",
    "dropout_factors_": ".randomness",
    "dropout_threshold": ".randomness",
    "epoch_order": ".randomness",
    "hash32": ".randomness",
    "hash32_": ".randomness",
    "mix": ".randomness",
    "permutation": ".randomness",
    "seed_keys": ".randomness",
    "step_keys": ".randomness",
    "subset_size": ".randomness",
    "training_subsets": ".randomness",
}
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)

__all__ = list(_EXPORTS)
