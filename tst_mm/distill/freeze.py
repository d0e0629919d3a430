"""Freezing a model for one phase, restored on exit."""
from contextlib import contextmanager
from typing import Iterator

import torch.nn as nn
from torch.nn.modules.batchnorm import _BatchNorm


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
