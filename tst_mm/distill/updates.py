"""Optimizer updates of the two TST phases, with what DDP does not do for them.

The student is wrapped in DDP, which averages its gradients across ranks; the small
modules next to it (the augmenter, distillation adapters) are not, so their gradients
are all-reduced here before each step.

Neither phase steps on a non-finite loss or gradient. One NaN augmenter step would make
the policy NaN, every augmented image NaN and every box dropped (comparisons with NaN
are false), and the student would go on training on that without a word. Such an update
is skipped instead: the gradients are cleared and the optimizer is not called, so the
weights and the optimizer's state (momentum) stay as they were. Every rank decides the
same way: the gradients are all-reduced, and each rank's loss check travels in the same
all-reduce. The check costs one host read per update (no extra synchronisation on a
GPU beyond that read). Under AMP (``AmpOptimWrapper``) gradients that overflow in fp16
are normal: the GradScaler skips those steps itself and lowers its scale, so only the
loss is checked there, and the scaler's skips are not counted as ours.
"""
from typing import Dict, List, Optional, Sequence, Tuple

import torch
import torch.distributed as dist
import torch.nn as nn
from mmengine.optim import OptimWrapper
from torch import Tensor


def average_gradients(modules: Sequence[nn.Module],
                      nonfinite: Optional[Tensor] = None) -> Optional[Tensor]:
    """All-reduce (mean) the gradients of small modules that DDP does not wrap.

    Every parameter takes part, with a zero gradient where it got none on this rank
    (an op not drawn here), so all ranks reduce the same buffer and end up identical.

    Args:
        modules (Sequence[nn.Module]): The modules whose gradients are averaged.
        nonfinite (Tensor, optional): This rank's 0-dim bool flag, reduced (any rank)
            in the same all-reduce. Defaults to None.

    Returns:
        Tensor or None: ``nonfinite`` of any rank (this rank's without DDP).
    """
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return nonfinite
    params = [p for m in modules for p in m.parameters() if p.requires_grad]
    if not params and nonfinite is None:
        return None
    grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in params]
    parts = [g.flatten() for g in grads]
    if nonfinite is not None:
        like = parts[0] if parts else nonfinite.float()
        parts.append(nonfinite.reshape(1).to(like))
    flat = torch.cat(parts)
    dist.all_reduce(flat)
    if nonfinite is not None:
        nonfinite = flat[-1] > 0
        flat = flat[:-1]
    flat /= dist.get_world_size()
    for p, g in zip(params, flat.split([p.numel() for p in params])):
        p.grad = g.view_as(p).clone()
    return nonfinite


def any_nonfinite(tensors: Sequence[Tensor]) -> Tensor:
    """A 0-dim bool: whether any element of ``tensors`` is NaN or infinite (no host
    sync). The largest absolute value is taken, which cannot overflow as a sum of
    squares would."""
    tensors = [t.detach() for t in tensors]
    if not tensors:
        return torch.zeros((), dtype=torch.bool)
    get_total_norm = getattr(torch.nn.utils, 'get_total_norm', None)  # torch >= 2.6
    if get_total_norm is not None:
        largest = get_total_norm(tensors, norm_type=float('inf'))
    else:
        largest = torch.stack([torch.linalg.vector_norm(t, float('inf'))
                               for t in tensors]).max()
    return ~torch.isfinite(largest)


def _is_amp(optim: OptimWrapper) -> bool:
    return getattr(optim, 'loss_scaler', None) is not None


def update(optim: OptimWrapper, loss: Tensor, unwrapped: List[nn.Module]) -> Optional[bool]:
    """``OptimWrapper.update_params`` with a gradient all-reduce for ``unwrapped`` and
    the non-finite check of :func:`step`."""
    optim.backward(optim.scale_loss(loss))
    return step(optim, unwrapped, [loss])


def step(optim: OptimWrapper, unwrapped: List[nn.Module],
         losses: Sequence[Tensor]) -> Optional[bool]:
    """Steps (unless accumulating), all-reducing ``unwrapped``'s gradients first; skips
    the step if a loss or (without AMP) a gradient is not finite on any rank.

    Args:
        optim (OptimWrapper): The phase's optimizer wrapper.
        unwrapped (list[nn.Module]): Trained modules that DDP does not wrap.
        losses (Sequence[Tensor]): The losses backpropagated for this update.

    Returns:
        bool or None: Whether the optimizer was called; None while accumulating.
    """
    if not optim.should_update():
        return None
    nonfinite = average_gradients(unwrapped, any_nonfinite(losses))
    if not _is_amp(optim):
        grads = [p.grad for group in optim.param_groups for p in group['params']
                 if p.grad is not None]
        nonfinite = nonfinite | any_nonfinite(grads).to(nonfinite.device)
    stepped = not bool(nonfinite)  # the update's one host read
    if stepped:
        optim.step()
    optim.zero_grad()
    return stepped


def update_by_terms(optim: OptimWrapper, terms: Dict[str, Tensor], module: nn.Module,
                    balance: bool = False) -> Tuple[Dict[str, Tensor], Optional[bool]]:
    """``update`` of the sum of ``terms``, backpropagated one term at a time.

    The gradients add up to those of the sum; on the way, the norm of what each term
    gives ``module`` is measured, so the log shows whether one term drowns the others.
    The networks' graphs are disjoint apart from the augmenter, so this costs one more
    backward through the augmenter only. With ``balance``, each term's gradient is
    rescaled to the terms' mean norm before the update: every term gets the same say
    in the direction, whatever its scale, and the step keeps the sum's overall size
    (the norms logged are those before rescaling).

    Returns:
        tuple[dict, bool | None]: ``{term: gradient norm on module}`` and ``'total'``
        (before clipping); whether the optimizer was called (see :func:`step`).
    """
    params = [p for p in module.parameters() if p.requires_grad]

    def flat_grads() -> Tensor:
        return torch.cat([(p.grad if p.grad is not None else torch.zeros_like(p)).flatten()
                          for p in params])

    names = [name for name, term in terms.items() if term.requires_grad]
    # Gradients accumulated by earlier micro-batches are not this step's.
    start = before = flat_grads()
    norms, grads = {}, {}
    for i, name in enumerate(names):
        optim.backward(optim.scale_loss(terms[name]), retain_graph=i < len(names) - 1)
        now = flat_grads()
        grads[name] = now - before
        norms[name] = torch.linalg.vector_norm(grads[name])
        before = now
    if names:
        norms['total'] = torch.linalg.vector_norm(before - start)
    if balance and len(names) > 1:
        _set_grads(params, start + _balanced_sum(grads, norms))
    scaler = getattr(optim, 'loss_scaler', None)  # AMP: report unscaled norms
    if scaler is not None:
        norms = {k: v / scaler.get_scale() for k, v in norms.items()}
    stepped = step(optim, [module], list(terms.values()))
    return {k: v.detach() for k, v in norms.items()}, stepped


def _balanced_sum(grads: Dict[str, Tensor], norms: Dict[str, Tensor]) -> Tensor:
    """Sum of the gradients, each rescaled to their mean norm (a zero one stays zero;
    a non-finite one makes the sum non-finite, so :func:`step` skips the update)."""
    target = torch.stack([norms[name] for name in grads]).mean()
    total = 0
    for name, grad in grads.items():
        scale = torch.where(norms[name] > 0, target / norms[name], torch.ones_like(target))
        total = total + grad * scale
    return total


def _set_grads(params: List[nn.Parameter], flat: Tensor) -> None:
    offset = 0
    for p in params:
        chunk = flat[offset:offset + p.numel()].view_as(p)
        offset += p.numel()
        if p.grad is not None:  # a parameter no term reached keeps grad None
            p.grad.copy_(chunk)
