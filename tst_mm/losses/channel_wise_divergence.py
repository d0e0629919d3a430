"""Channel-wise distillation (CWD): Shu et al., "Channel-wise Knowledge Distillation for
Dense Prediction", ICCV 2021 (arXiv 2011.13256).

Each channel's activation map is turned into a distribution over spatial positions, so
the student learns *where* the teacher's channels respond most.
"""
import torch.nn.functional as F
from mmengine.registry import MODELS
from torch import Tensor

from .utils import TemperatureLoss, align_teacher


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
class ChannelWiseDivergence(TemperatureLoss):
    """Channel-wise distillation loss (CWD) on feature maps or segmentation logits.

    Its normalisation is the paper's (each channel's spatial KL, averaged over N * C),
    so it takes no ``reduction``.

    Args:
        tau (float): Temperature. Defaults to 1.0.
        loss_weight (float): Multiplies the loss; a hook may change it during training.
            Defaults to 1.0.
        level_reduction (str): ``'sum'`` or ``'mean'`` over levels. Defaults to
            ``'sum'``.
    """

    fn = staticmethod(channel_wise_divergence)
