"""Softmax knowledge-distillation loss (Hinton et al., 2015, arXiv 1503.02531)."""
import torch.nn as nn
import torch.nn.functional as F
from mmengine.registry import MODELS
from torch import Tensor

from .utils import Maps, align_teacher, check_loss_weight, check_positive, mean_over_levels


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
class KLDivergence(nn.Module):
    """Softmax KL divergence between teacher and student logits.

    Nothing is detached here: the caller decides (the teacher is detached in the student
    phase but not in the augmenter phase).

    Args:
        tau (float): Softmax temperature. Defaults to 1.0.
        loss_weight (float): Multiplies the loss; a hook may change it during training.
            Defaults to 1.0.
    """

    def __init__(self, tau: float = 1.0, loss_weight: float = 1.0) -> None:
        super().__init__()
        self.tau = check_positive('tau', tau)
        self.loss_weight = check_loss_weight(loss_weight)

    def forward(self, student: Maps, teacher: Maps) -> Tensor:
        """Computes the weighted loss.

        Args:
            student (Tensor | Sequence[Tensor]): Logits, or one tensor per level.
            teacher (Tensor | Sequence[Tensor]): Same structure as ``student``.

        Returns:
            Tensor: The scalar loss, averaged over levels, times ``loss_weight``.
        """
        loss = mean_over_levels(lambda s, t: kl_divergence(s, t, self.tau), student,
                                teacher)
        return self.loss_weight * loss

    def extra_repr(self) -> str:
        return f'tau={self.tau}, loss_weight={self.loss_weight}'
