"""Shared plumbing of the distillation losses: argument checks, multi-level inputs and
spatial alignment.

Every loss in this package maps one (student, teacher) pair of tensors to a scalar. The
helpers here turn the looser call contract (a tensor, or one tensor per FPN level as a
recorder yields them; teacher maps of another resolution) into that simple case, so each
loss file only holds its own math.
"""
import math
from typing import Callable, List, Sequence, Union

import torch.nn as nn
import torch.nn.functional as F
from torch import Tensor

Maps = Union[Tensor, Sequence[Tensor]]


def check_positive(name: str, value: float) -> float:
    """Checks that a constructor argument is a finite number > 0.

    Args:
        name (str): The argument's name, for the message.
        value (float): The value to check.

    Returns:
        float: ``value`` as a float.
    """
    if isinstance(value, bool) or not isinstance(value, (int, float)) or \
            not math.isfinite(value) or value <= 0:
        raise ValueError(f'{name} must be a finite number > 0, got {value!r}')
    return float(value)


def check_loss_weight(value: float) -> float:
    """Checks a ``loss_weight``: a finite number >= 0 (0 switches a loss off).

    Args:
        value (float): The value to check.

    Returns:
        float: ``value`` as a float.
    """
    if isinstance(value, bool) or not isinstance(value, (int, float)) or \
            not math.isfinite(value) or value < 0:
        raise ValueError(f'loss_weight must be a finite number >= 0, got {value!r}')
    return float(value)


def as_levels(student: Maps, teacher: Maps) -> List[tuple]:
    """Pairs the student's and the teacher's maps level by level.

    Args:
        student (Tensor | Sequence[Tensor]): One map, or one per level.
        teacher (Tensor | Sequence[Tensor]): Same structure as ``student``.

    Returns:
        list[tuple[Tensor, Tensor]]: ``(student, teacher)`` per level.
    """
    s_list = [student] if isinstance(student, Tensor) else list(student)
    t_list = [teacher] if isinstance(teacher, Tensor) else list(teacher)
    if len(s_list) != len(t_list):
        raise ValueError(f'the student gave {len(s_list)} level(s) but the teacher gave '
                         f'{len(t_list)}; record modules called the same number of times')
    if not s_list:
        raise ValueError('got no feature maps to compare (empty lists)')
    for x in s_list + t_list:
        if not isinstance(x, Tensor):
            raise TypeError('expected Tensors or lists of Tensors, got a '
                            f'{type(x).__name__}')
    return list(zip(s_list, t_list))


def align_teacher(student: Tensor, teacher: Tensor, check_channels: bool = True) -> Tensor:
    """Resizes the teacher's map to the student's spatial size when they differ.

    Segmentation students and teachers often emit logits of different resolution
    (e.g. R18 vs R101 heads with other output strides); bilinear resizing of the
    teacher is what the decode heads themselves do before their loss.

    Args:
        student (Tensor): The student's map, (N, C, ...).
        teacher (Tensor): The teacher's map, (N, C', ...).
        check_channels (bool): Whether C must equal C'. Defaults to True.

    Returns:
        Tensor: The teacher's map with the student's spatial size.
    """
    if student.dim() != teacher.dim() or student.dim() < 2 or \
            student.size(0) != teacher.size(0) or \
            (check_channels and student.size(1) != teacher.size(1)):
        raise ValueError(f'student shape {tuple(student.shape)} and teacher shape '
                         f'{tuple(teacher.shape)} do not match (need the same batch size, '
                         'number of classes/channels and number of dimensions)')
    if student.shape[2:] == teacher.shape[2:]:
        return teacher
    if student.dim() != 4:
        raise ValueError(f'can only resize 4-D (N, C, H, W) maps, got student shape '
                         f'{tuple(student.shape)} and teacher shape {tuple(teacher.shape)}')
    return F.interpolate(teacher, size=student.shape[2:], mode='bilinear',
                         align_corners=False)


def mean_over_levels(fn: Callable[[Tensor, Tensor], Tensor], student: Maps,
                     teacher: Maps) -> Tensor:
    """Applies a per-level loss and averages it over the levels.

    Args:
        fn (Callable[[Tensor, Tensor], Tensor]): ``fn(student, teacher)`` for one level.
        student (Tensor | Sequence[Tensor]): One map, or one per level.
        teacher (Tensor | Sequence[Tensor]): Same structure as ``student``.

    Returns:
        Tensor: The scalar mean of ``fn`` over the levels.
    """
    pairs = as_levels(student, teacher)
    return sum(fn(s, t) for s, t in pairs) / len(pairs)


class TemperatureLoss(nn.Module):
    """A distillation loss ``fn(student, teacher, tau)``, weighted, averaged over levels.

    Subclasses set ``fn``. Nothing is detached here: the caller decides (the teacher is
    detached in the student phase but not in the augmenter phase).

    Args:
        tau (float): Temperature. Defaults to 1.0.
        loss_weight (float): Multiplies the loss; a hook may change it during training.
            Defaults to 1.0.
    """

    fn: Callable[[Tensor, Tensor, float], Tensor]

    def __init__(self, tau: float = 1.0, loss_weight: float = 1.0) -> None:
        super().__init__()
        self.tau = check_positive('tau', tau)
        self.loss_weight = check_loss_weight(loss_weight)

    def forward(self, student: Maps, teacher: Maps) -> Tensor:
        """Computes the weighted loss.

        Args:
            student (Tensor | Sequence[Tensor]): Logits or maps, or one per level.
            teacher (Tensor | Sequence[Tensor]): Same structure as ``student``.

        Returns:
            Tensor: The scalar loss, averaged over levels, times ``loss_weight``.
        """
        fn = type(self).fn
        loss = mean_over_levels(lambda s, t: fn(s, t, self.tau), student, teacher)
        return self.loss_weight * loss

    def extra_repr(self) -> str:
        return f'tau={self.tau}, loss_weight={self.loss_weight}'
