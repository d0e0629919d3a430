"""Normalized gradient descent: a step of length ``lr`` whatever the gradient's scale."""
from typing import Callable, Iterable, Optional

import torch
from mmengine.registry import OPTIMIZERS
from torch.optim import Optimizer


@OPTIMIZERS.register_module()
class NormalizedSGD(Optimizer):
    """SGD on the unit direction of each param group's gradient.

    Each step moves a group's parameters by exactly ``lr`` (Euclidean norm over the
    whole group, without momentum) along the negative gradient. It is meant for the
    augmenter: its objective's gradient norm differs by two orders of magnitude between
    tasks and objectives (about 0.05 on the segmentation study pair, 8-20 with the
    divergence objective on the detection pair, at 128 images), so one SGD learning rate
    either leaves the policy where it started or is all clipping. With enough images per
    update (``accumulative_counts``) the direction is reliable and the length is the
    learning rate::

        optim_wrapper = dict(..., augmenter=dict(
            type='OptimWrapper', accumulative_counts=16,
            optimizer=dict(type='NormalizedSGD', lr=0.3)))

    Args:
        params: Parameters or param groups.
        lr (float): Length of each step.
        momentum (float): Heavy-ball momentum on the unit directions (the step is then
            up to ``lr / (1 - momentum)`` long). Defaults to 0.
        eps (float): Added to the norm, so that a zero gradient is a zero step.
    """

    def __init__(self, params: Iterable, lr: float, momentum: float = 0.0,
                 eps: float = 1e-12):
        if lr < 0:
            raise ValueError(f'NormalizedSGD: lr must be >= 0, got {lr}')
        if not 0.0 <= momentum < 1.0:
            raise ValueError(f'NormalizedSGD: momentum must be in [0, 1), got {momentum}')
        super().__init__(params, dict(lr=lr, momentum=momentum, eps=eps))

    @torch.no_grad()
    def step(self, closure: Optional[Callable] = None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            params = [p for p in group['params'] if p.grad is not None]
            if not params:
                continue
            norm = torch.linalg.vector_norm(
                torch.stack([torch.linalg.vector_norm(p.grad) for p in params]))
            inverse_norm = 1.0 / (norm + group['eps'])
            for param in params:
                direction = param.grad * inverse_norm
                if group['momentum']:
                    state = self.state[param]
                    if 'momentum_buffer' not in state:
                        state['momentum_buffer'] = direction.clone()
                    else:
                        state['momentum_buffer'].mul_(group['momentum']).add_(direction)
                    direction = state['momentum_buffer']
                param.add_(direction, alpha=-group['lr'])
        return loss
