"""Softmax knowledge-distillation loss (Hinton et al., 2015, arXiv 1503.02531)."""
import torch.nn.functional as F
from mmengine.registry import MODELS
from torch import Tensor

from .utils import TemperatureLoss, align_teacher, reduce_map


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
    """

    fn = staticmethod(kl_divergence)
    default_reduction = 'batchmean'
