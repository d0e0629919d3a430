"""Shared plumbing of the distillation losses: argument checks, reductions, multi-level
inputs and spatial alignment.

Every loss in this package maps one (student, teacher) pair of tensors to a scalar. The
helpers here turn the looser call contract (a tensor, or one tensor per FPN level as a
recorder yields them; teacher maps of another resolution) into that simple case, so each
loss file only holds its own math.

Reductions matter as much as the form of a loss: next to a detector's focal loss, an
element-wise mean over N x A*C x H x W is orders of magnitude weaker than the same
divergence summed per image. The choices are mmrazor's (``F.kl_div``'s), plus one:

- ``'batchmean'``: sum over everything but the batch, divided by N (mmrazor's default
  for ``KLDivergence``);
- ``'sum'``: sum over everything;
- ``'mean'``: mean over every element (classes/channels included);
- ``'pixelmean'``: sum over dim 1 (classes/channels), mean over images and positions:
  the usual per-pixel distillation loss of segmentation.

Several levels (one map per FPN level) are summed (``level_reduction='sum'``, as
mmrazor adds one loss per recorded call) or averaged (``'mean'``).
"""
import math
from typing import Callable, List, Optional, Sequence, Union

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


REDUCTIONS = ('batchmean', 'sum', 'mean', 'pixelmean')
LEVEL_REDUCTIONS = ('sum', 'mean')


def check_choice(name: str, value: str, choices: Sequence[str]) -> str:
    """Checks that ``value`` is one of ``choices``, quoting both if not."""
    if value not in choices:
        raise ValueError(f'{name} must be one of {tuple(choices)}, got {value!r}')
    return value


def reduce_map(loss: Tensor, reduction: str) -> Tensor:
    """Reduces an element-wise loss map (N, C, ...) to a scalar (see the module doc).

    Args:
        loss (Tensor): Element-wise loss, batch on dim 0, classes/channels on dim 1.
        reduction (str): One of :data:`REDUCTIONS`.

    Returns:
        Tensor: The scalar loss.
    """
    if reduction == 'sum':
        return loss.sum()
    if reduction == 'batchmean':
        return loss.sum() / loss.size(0)
    if reduction == 'mean':
        return loss.mean()
    if reduction == 'pixelmean':
        return loss.sum(1).mean()
    raise ValueError(f'reduction must be one of {REDUCTIONS}, got {reduction!r}')


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


def reduce_levels(fn: Callable[[Tensor, Tensor], Tensor], student: Maps, teacher: Maps,
                  level_reduction: str = 'sum') -> Tensor:
    """Applies a per-level loss and sums or averages it over the levels.

    Args:
        fn (Callable[[Tensor, Tensor], Tensor]): ``fn(student, teacher)`` for one level.
        student (Tensor | Sequence[Tensor]): One map, or one per level.
        teacher (Tensor | Sequence[Tensor]): Same structure as ``student``.
        level_reduction (str): ``'sum'`` or ``'mean'``. Defaults to ``'sum'``.

    Returns:
        Tensor: The scalar sum (or mean) of ``fn`` over the levels.
    """
    pairs = as_levels(student, teacher)
    total = sum(fn(s, t) for s, t in pairs)
    return total / len(pairs) if level_reduction == 'mean' else total


class TemperatureLoss(nn.Module):
    """A distillation loss ``fn(student, teacher, tau[, reduction])``, weighted, reduced
    over levels.

    Subclasses set ``fn``; those whose ``fn`` takes a ``reduction`` set
    ``default_reduction`` too. Nothing is detached here: the caller decides (the teacher
    is detached in the student phase but not in the augmenter phase).

    Args:
        tau (float): Temperature. Defaults to 1.0.
        loss_weight (float): Multiplies the loss; a hook may change it during training.
            Defaults to 1.0.
        reduction (str, optional): One of :data:`REDUCTIONS`, for losses that take one.
            Defaults to the class's ``default_reduction``.
        level_reduction (str): ``'sum'`` or ``'mean'`` over levels. Defaults to
            ``'sum'``.
    """

    fn: Callable[..., Tensor]
    default_reduction: Optional[str] = None

    def __init__(self, tau: float = 1.0, loss_weight: float = 1.0,
                 reduction: Optional[str] = None, level_reduction: str = 'sum') -> None:
        super().__init__()
        self.tau = check_positive('tau', tau)
        self.loss_weight = check_loss_weight(loss_weight)
        if self.default_reduction is None:
            if reduction is not None:
                raise ValueError(f'{type(self).__name__} has a fixed normalisation and '
                                 f'takes no reduction, got reduction={reduction!r}')
            self.reduction = None
        else:
            self.reduction = check_choice('reduction', reduction or self.default_reduction,
                                          REDUCTIONS)
        self.level_reduction = check_choice('level_reduction', level_reduction,
                                            LEVEL_REDUCTIONS)

    def forward(self, student: Maps, teacher: Maps) -> Tensor:
        """Computes the weighted loss.

        Args:
            student (Tensor | Sequence[Tensor]): Logits or maps, or one per level.
            teacher (Tensor | Sequence[Tensor]): Same structure as ``student``.

        Returns:
            Tensor: The scalar loss, reduced over levels, times ``loss_weight``.
        """
        fn = type(self).fn
        options = {} if self.reduction is None else dict(reduction=self.reduction)
        loss = reduce_levels(lambda s, t: fn(s, t, self.tau, **options), student, teacher,
                             self.level_reduction)
        return self.loss_weight * loss

    def extra_repr(self) -> str:
        reduction = '' if self.reduction is None else f', reduction={self.reduction!r}'
        return (f'tau={self.tau}, loss_weight={self.loss_weight}{reduction}, '
                f'level_reduction={self.level_reduction!r}')
