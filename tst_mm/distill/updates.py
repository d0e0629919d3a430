"""Optimizer updates of the two TST phases, with what DDP does not do for them.

The student is wrapped in DDP, which averages its gradients across ranks; the small
modules next to it (the augmenter, distillation adapters) are not, so their gradients
are all-reduced here before each step.
"""
from typing import Dict, List, Sequence

import torch
import torch.distributed as dist
import torch.nn as nn
from mmengine.optim import OptimWrapper
from torch import Tensor


def average_gradients(modules: Sequence[nn.Module]) -> None:
    """All-reduce (mean) the gradients of small modules that DDP does not wrap.

    Every parameter takes part, with a zero gradient where it got none on this rank
    (an op not drawn here), so all ranks reduce the same buffer and end up identical.
    """
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return
    params = [p for m in modules for p in m.parameters() if p.requires_grad]
    if not params:
        return
    grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in params]
    flat = torch.cat([g.flatten() for g in grads])
    dist.all_reduce(flat)
    flat /= dist.get_world_size()
    for p, g in zip(params, flat.split([p.numel() for p in params])):
        p.grad = g.view_as(p).clone()


def update(optim: OptimWrapper, loss: Tensor, unwrapped: List[nn.Module]) -> None:
    """``OptimWrapper.update_params`` with a gradient all-reduce for ``unwrapped``."""
    optim.backward(optim.scale_loss(loss))
    step(optim, unwrapped)


def step(optim: OptimWrapper, unwrapped: List[nn.Module]) -> None:
    """Steps (unless accumulating), all-reducing ``unwrapped``'s gradients first."""
    if optim.should_update():
        average_gradients(unwrapped)
        optim.step()
        optim.zero_grad()


def update_by_terms(optim: OptimWrapper, terms: Dict[str, Tensor],
                    module: nn.Module) -> Dict[str, Tensor]:
    """``update`` of the sum of ``terms``, backpropagated one term at a time.

    The gradients add up to those of the sum; on the way, the norm of what each term
    gives ``module`` is measured, so the log shows whether one term drowns the others.
    The networks' graphs are disjoint apart from the augmenter, so this costs one more
    backward through the augmenter only.

    Returns:
        dict: ``{term: gradient norm on module}`` and ``'total'`` (before clipping).
    """
    params = [p for p in module.parameters() if p.requires_grad]

    def flat_grads() -> Tensor:
        return torch.cat([(p.grad if p.grad is not None else torch.zeros_like(p)).flatten()
                          for p in params])

    names = [name for name, term in terms.items() if term.requires_grad]
    # Gradients accumulated by earlier micro-batches are not this step's.
    start = before = flat_grads()
    norms = {}
    for i, name in enumerate(names):
        optim.backward(optim.scale_loss(terms[name]), retain_graph=i < len(names) - 1)
        now = flat_grads()
        norms[name] = torch.linalg.vector_norm(now - before)
        before = now
    if names:
        norms['total'] = torch.linalg.vector_norm(before - start)
    scaler = getattr(optim, 'loss_scaler', None)  # AMP: report unscaled norms
    if scaler is not None:
        norms = {k: v / scaler.get_scale() for k, v in norms.items()}
    step(optim, [module])
    return {k: v.detach() for k, v in norms.items()}
