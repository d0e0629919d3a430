"""Knowledge-distillation loss for sigmoid classifiers (RetinaNet, FCOS, ...).

Each logit of a sigmoid head is an independent Bernoulli variable, so the divergence is
the per-element Bernoulli KL instead of a KL over a softmax across classes.
"""
import torch.nn.functional as F
from mmengine.registry import MODELS
from torch import Tensor

from .utils import TemperatureLoss, align_teacher, reduce_map


def binary_kl_divergence(student: Tensor, teacher: Tensor, tau: float = 1.0,
                         reduction: str = 'batchmean') -> Tensor:
    """Bernoulli KL(sigmoid(teacher / tau) || sigmoid(student / tau)) per element.

    Args:
        student (Tensor): Student logits, (N, C, ...).
        teacher (Tensor): Teacher logits of the same shape (a different H, W is resized).
        tau (float): Temperature. Defaults to 1.0.
        reduction (str): See :func:`tst_mm.losses.utils.reduce_map`. Defaults to
            ``'batchmean'``.

    Returns:
        Tensor: The scalar loss times ``tau ** 2``.
    """
    teacher = align_teacher(student, teacher)
    s, t = student / tau, teacher / tau
    # log(p) = logsigmoid(x) and log(1 - p) = logsigmoid(-x) stay finite for any logit,
    # where log(sigmoid(x)) underflows to -inf for confident predictions.
    p_t = t.sigmoid()
    kl = p_t * (F.logsigmoid(t) - F.logsigmoid(s)) + \
        (1 - p_t) * (F.logsigmoid(-t) - F.logsigmoid(-s))
    return reduce_map(kl, reduction) * tau**2


@MODELS.register_module()
class BinaryKLDivergence(TemperatureLoss):
    """Per-element Bernoulli KL divergence between sigmoid teacher and student logits.

    Args:
        tau (float): Temperature. Defaults to 1.0.
        loss_weight (float): Multiplies the loss; a hook may change it during training.
            Defaults to 1.0.
        reduction (str): ``'batchmean'``, ``'sum'``, ``'mean'`` or ``'pixelmean'``.
            Defaults to ``'batchmean'`` (summed over each image's elements, averaged
            over images). ``'mean'`` averages over every anchor and class, which on a
            detector's mostly-background head is a very weak signal.
        level_reduction (str): ``'sum'`` or ``'mean'`` over levels. Defaults to
            ``'sum'``.
    """

    fn = staticmethod(binary_kl_divergence)
    default_reduction = 'batchmean'
