"""Softmax knowledge-distillation loss (Hinton et al., 2015, arXiv 1503.02531)."""
from typing import Optional

import torch.nn.functional as F
from mmengine.registry import MODELS
from torch import Tensor

from .utils import Maps, TemperatureLoss, align_teacher, reduce_map


def kl_divergence(student: Tensor, teacher: Tensor, tau: float = 1.0,
                  reduction: str = 'batchmean') -> Tensor:
    """KL(teacher || student) of the softmax over dim 1 at each position.

    Args:
        student (Tensor): Student logits, (N, C) or (N, C, H, W); softmax over dim 1.
        teacher (Tensor): Teacher logits of the same shape (a different H, W is resized).
        tau (float): Softmax temperature. Defaults to 1.0.
        reduction (str): How the element-wise terms ``p_t (log p_t - log p_s)`` are
            reduced, see :func:`tst_mm.losses.utils.reduce_map`. Defaults to
            ``'batchmean'`` (mmrazor's: summed over classes and positions, divided by N).

    Returns:
        Tensor: The scalar loss, times ``tau ** 2`` so that gradients keep their scale
        when the temperature changes (as in Hinton et al.).
    """
    teacher = align_teacher(student, teacher)
    log_p_s = F.log_softmax(student / tau, dim=1)
    log_p_t = F.log_softmax(teacher / tau, dim=1)
    # Written out instead of F.kl_div so that gradients reach the teacher too: the
    # augmenter phase backpropagates through both networks to the augmented input.
    return reduce_map(log_p_t.exp() * (log_p_t - log_p_s), reduction) * tau**2


@MODELS.register_module()
class KLDivergence(TemperatureLoss):
    """Softmax KL divergence between teacher and student logits.

    On a RetinaNet head (``bbox_head.retina_cls``, N x A*C x H x W) this is the
    reference's choice: one distribution over the A*C channels at each position,
    ``reduction='batchmean'``, summed over the FPN levels.

    Args:
        tau (float): Temperature. Defaults to 1.0.
        loss_weight (float): Multiplies the loss; a hook may change it during training.
            Defaults to 1.0.
        reduction (str): ``'batchmean'``, ``'sum'``, ``'mean'`` or ``'pixelmean'`` (the
            per-pixel KL averaged over pixels). Defaults to ``'batchmean'``.
        level_reduction (str): ``'sum'`` or ``'mean'`` over levels. Defaults to
            ``'sum'``.
        class_channels (int, optional): A dense head's channels per prior (e.g. SSD's
            81 = 80 classes + background, times its priors): one distribution over
            each prior's ``class_channels`` channels instead of over all channels.
            Defaults to None (one distribution over dim 1).
    """

    fn = staticmethod(kl_divergence)
    default_reduction = 'batchmean'

    def __init__(self, *args, class_channels: Optional[int] = None, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        if class_channels is not None and (isinstance(class_channels, bool) or not
                                           isinstance(class_channels, int) or
                                           class_channels < 2):
            raise ValueError(f'class_channels must be an int >= 2 or None, got '
                             f'{class_channels!r}')
        self.class_channels = class_channels

    def forward(self, student: Maps, teacher: Maps) -> Tensor:
        if self.class_channels is None:
            return super().forward(student, teacher)
        return super().forward(_per_prior(student, self.class_channels),
                               _per_prior(teacher, self.class_channels))

    def extra_repr(self) -> str:
        extra = f', class_channels={self.class_channels}' if self.class_channels else ''
        return super().extra_repr() + extra


def _per_prior(maps: Maps, k: int) -> Maps:
    """(N, A*k, ...) maps as (N, k, A, ...): each prior's k classes on dim 1."""
    if not isinstance(maps, Tensor):
        return [_per_prior(m, k) for m in maps]
    n, channels = maps.shape[:2]
    if channels % k:
        raise ValueError(f'{channels} channels are not a multiple of class_channels={k}')
    return maps.view(n, channels // k, k, *maps.shape[2:]).transpose(1, 2)
