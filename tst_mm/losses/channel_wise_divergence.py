"""Channel-wise distillation (CWD): Shu et al., "Channel-wise Knowledge Distillation for
Dense Prediction", ICCV 2021 (arXiv 2011.13256).

Each channel's activation map is turned into a distribution over spatial positions, so
the student learns *where* the teacher's channels respond most.
"""
import torch.nn as nn
import torch.nn.functional as F
from mmengine.registry import MODELS
from torch import Tensor

from .utils import Maps, align_teacher, check_loss_weight, check_positive, mean_over_levels


def channel_wise_divergence(student: Tensor, teacher: Tensor, tau: float = 1.0) -> Tensor:
    """Spatial-softmax KL(teacher || student) per channel, normalised by N * C.

    Args:
        student (Tensor): Student maps, (N, C, H, W).
        teacher (Tensor): Teacher maps, (N, C, H', W') (resized to H, W when different).
        tau (float): Temperature. Defaults to 1.0.

    Returns:
        Tensor: The scalar loss times ``tau ** 2``.
    """
    if student.dim() != 4:
        raise ValueError(f'channel-wise divergence needs (N, C, H, W) maps, got student '
                         f'shape {tuple(student.shape)}')
    teacher = align_teacher(student, teacher)
    n, c = student.shape[:2]
    log_p_s = F.log_softmax(student.flatten(2) / tau, dim=2)
    log_p_t = F.log_softmax(teacher.flatten(2) / tau, dim=2)
    kl = (log_p_t.exp() * (log_p_t - log_p_s)).sum()
    return kl * tau**2 / (n * c)


@MODELS.register_module()
class ChannelWiseDivergence(nn.Module):
    """Channel-wise distillation loss (CWD) on feature maps or segmentation logits.

    Nothing is detached here: the caller decides.

    Args:
        tau (float): Temperature. Defaults to 1.0.
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
            student (Tensor | Sequence[Tensor]): Maps, or one tensor per level.
            teacher (Tensor | Sequence[Tensor]): Same structure as ``student``.

        Returns:
            Tensor: The scalar loss, averaged over levels, times ``loss_weight``.
        """
        loss = mean_over_levels(lambda s, t: channel_wise_divergence(s, t, self.tau),
                                student, teacher)
        return self.loss_weight * loss

    def extra_repr(self) -> str:
        return f'tau={self.tau}, loss_weight={self.loss_weight}'
