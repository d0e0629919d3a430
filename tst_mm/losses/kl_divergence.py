"""Softmax knowledge-distillation loss (Hinton et al., 2015, arXiv 1503.02531)."""
import torch.nn.functional as F
from mmengine.registry import MODELS
from torch import Tensor

from .utils import TemperatureLoss, align_teacher


def kl_divergence(student: Tensor, teacher: Tensor, tau: float = 1.0) -> Tensor:
    """KL(teacher || student) of class distributions, averaged over samples and pixels.

    Args:
        student (Tensor): Student logits, (N, C) or (N, C, H, W); classes on dim 1.
        teacher (Tensor): Teacher logits of the same shape (a different H, W is resized).
        tau (float): Softmax temperature. Defaults to 1.0.

    Returns:
        Tensor: The scalar loss, times ``tau ** 2`` so that gradients keep their scale
        when the temperature changes (as in Hinton et al.).
    """
    teacher = align_teacher(student, teacher)
    log_p_s = F.log_softmax(student / tau, dim=1)
    log_p_t = F.log_softmax(teacher / tau, dim=1)
    # Written out instead of F.kl_div so that gradients reach the teacher too: the
    # augmenter phase backpropagates through both networks to the augmented input.
    kl = (log_p_t.exp() * (log_p_t - log_p_s)).sum(dim=1)
    return kl.mean() * tau**2


@MODELS.register_module()
class KLDivergence(TemperatureLoss):
    """Softmax KL divergence between teacher and student logits.

    Args:
        tau (float): Temperature. Defaults to 1.0.
        loss_weight (float): Multiplies the loss; a hook may change it during training.
            Defaults to 1.0.
    """

    fn = staticmethod(kl_divergence)
