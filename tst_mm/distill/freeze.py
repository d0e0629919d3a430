"""Freezing a model for one phase, restored on exit."""
from contextlib import contextmanager
from typing import Iterator

import torch.nn as nn
from torch.nn.modules.batchnorm import _BatchNorm, _NormBase


@contextmanager
def frozen(model: nn.Module) -> Iterator[nn.Module]:
    """No parameter gradients and no BatchNorm statistics updates inside ``with``.

    Used for the student in the augmenter phase: gradients must still flow *through*
    the student to the augmented input, but its weights and running statistics must not
    change. BatchNorm keeps its train-mode behaviour (batch statistics), as the student
    phase sees it; momentum 0 keeps the running averages untouched, and the step
    counters are put back.
    """
    params = [p for p in model.parameters() if p.requires_grad]
    norms = [m for m in model.modules() if isinstance(m, _BatchNorm)]
    momenta = [m.momentum for m in norms]
    counts = [m.num_batches_tracked.clone() if m.num_batches_tracked is not None else None
              for m in norms]
    try:
        for p in params:
            p.requires_grad_(False)
        for m in norms:
            m.momentum = 0.0
        yield model
    finally:
        for p in params:
            p.requires_grad_(True)
        for m, momentum, count in zip(norms, momenta, counts):
            m.momentum = momentum
            if count is not None:
                m.num_batches_tracked.copy_(count)


def _infers_in_eval(module: nn.Module) -> bool:
    """Whether ``module`` is a layer whose train mode updates state or draws noise."""
    return isinstance(module, (_NormBase, nn.modules.dropout._DropoutNd, nn.RReLU,
                               nn.MultiheadAttention)) or \
        'Drop' in type(module).__name__  # DropPath, DropBlock (mmcv, mmdet, timm)


@contextmanager
def loss_mode(model: nn.Module) -> Iterator[nn.Module]:
    """The model in train mode except its stateful and random layers, inside ``with``.

    The frozen teacher computes its task loss, and some models compute theirs only in
    train mode: their heads branch on ``self.training`` (DINO's denoising queries,
    YOLACT's and K-Net's mask targets), and so do some layers (TridentNet's convs run
    all three branches only in training). What must not change for a frozen teacher is
    what its statistics and randomness do in train mode: normalisation layers with
    running statistics (BatchNorm: batch statistics and updates), dropout, drop-path /
    DropBlock, RReLU, and ``nn.MultiheadAttention`` (whose dropout is an argument, not a
    submodule) go to eval mode, everything else to train mode; every module's mode is
    put back on exit.
    """
    modules = list(model.modules())
    modes = [m.training for m in modules]
    # The flags are set directly, not by train() / eval(): those recurse from every
    # module they are called on, and this runs twice per step (11.7 -> 2.5 ms on a
    # RetinaNet-R101). A train() override's extra work (ResNet's norm_eval, frozen
    # stages) only concerns normalisation layers, which are in eval mode here anyway.
    try:
        for m in modules:
            infers = _infers_in_eval(m)
            if m.training is infers:  # nn.Module's setattr is slow: only changes
                m.training = not infers
        yield model
    finally:
        for m, training in zip(modules, modes):
            if m.training is not training:
                m.training = training
