"""Feature mimicking: mean squared error between student and teacher feature maps
(FitNets, Romero et al., ICLR 2015), e.g. on the FPN outputs of two detectors; with
``normalize=True``, between the maps standardised per channel (PKD, Cao et al., "PKD:
General Distillation Framework for Object Detectors via Pearson Correlation
Coefficient", NeurIPS 2022), which compares two architectures whatever the scale of
their activations."""
from typing import Optional

import torch.nn as nn
import torch.nn.functional as F
from mmengine.registry import MODELS
from torch import Tensor

from .utils import (LEVEL_REDUCTIONS, REDUCTIONS, Maps, align_teacher, check_choice,
                    check_loss_weight, reduce_levels, reduce_map)


def _check_channels(name: str, value: Optional[int]) -> Optional[int]:
    if value is not None and (isinstance(value, bool) or not isinstance(value, int)
                              or value <= 0):
        raise ValueError(f'{name} must be a positive int or None, got {value!r}')
    return value


def _standardise(x: Tensor, eps: float = 1e-6) -> Tensor:
    """Each channel of (N, C, ...) maps at zero mean and unit variance over N and the
    positions."""
    dims = [0] + list(range(2, x.dim()))
    mean = x.mean(dim=dims, keepdim=True)
    std = x.std(dim=dims, keepdim=True)
    return (x - mean) / (std + eps)


@MODELS.register_module()
class FeatureMimic(nn.Module):
    """MSE between features, through a trainable 1x1 conv on the student side when the
    channel counts differ.

    The adapter is a parameter of this loss: the optimizer constructor must put it with
    the student's parameters. One adapter serves all levels of a multi-level input (FPN
    levels share their channel count). Nothing is detached here: the caller decides.

    Args:
        student_channels (int, optional): Channels of the student's features.
            Defaults to None.
        teacher_channels (int, optional): Channels of the teacher's features. An adapter
            is built when both are given and differ. Defaults to None.
        loss_weight (float): Multiplies the loss; a hook may change it during training.
            Defaults to 1.0.
        reduction (str): How each level's squared errors are reduced: ``'mean'``,
            ``'batchmean'``, ``'sum'`` or ``'pixelmean'`` (see
            :func:`tst_mm.losses.utils.reduce_map`). Defaults to ``'mean'``
            (``F.mse_loss``'s).
        level_reduction (str): ``'sum'`` or ``'mean'`` over levels. Defaults to
            ``'sum'`` (the reference sums the MSE of the five FPN levels).
        normalize (bool): Standardise each channel of both maps (zero mean, unit
            variance over the batch and positions) before the MSE, as PKD: the loss
            is then ``2 * (1 - r)`` averaged over channels (``reduction='mean'``),
            ``r`` their Pearson correlation, in [0, 4]. Defaults to False.
    """

    def __init__(self,
                 student_channels: Optional[int] = None,
                 teacher_channels: Optional[int] = None,
                 loss_weight: float = 1.0,
                 reduction: str = 'mean',
                 level_reduction: str = 'sum',
                 normalize: bool = False) -> None:
        super().__init__()
        self.student_channels = _check_channels('student_channels', student_channels)
        self.teacher_channels = _check_channels('teacher_channels', teacher_channels)
        if (student_channels is None) != (teacher_channels is None):
            raise ValueError('give both student_channels and teacher_channels or neither, '
                             f'got student_channels={student_channels!r}, '
                             f'teacher_channels={teacher_channels!r}')
        self.loss_weight = check_loss_weight(loss_weight)
        self.reduction = check_choice('reduction', reduction, REDUCTIONS)
        self.level_reduction = check_choice('level_reduction', level_reduction,
                                            LEVEL_REDUCTIONS)
        if not isinstance(normalize, bool):
            raise ValueError(f'normalize must be True or False, got {normalize!r}')
        self.normalize = normalize
        self.adapter: Optional[nn.Module] = None
        if student_channels is not None and student_channels != teacher_channels:
            self.adapter = nn.Conv2d(student_channels, teacher_channels, kernel_size=1)

    def _adapt(self, student: Tensor) -> Tensor:
        if self.adapter is None:
            return student
        if student.dim() < 2 or student.size(1) != self.student_channels:
            raise ValueError(f'the adapter expects {self.student_channels} student '
                             'channels, '
                             f'got features of shape {tuple(student.shape)}')
        # A 1x1 conv is a per-position linear map, so any (N, C, ...) shape can go through
        # it as (N, C, L, 1).
        flat = student.reshape(student.size(0), student.size(1), -1, 1)
        return self.adapter(flat).reshape(student.size(0), -1, *student.shape[2:])

    def _level(self, student: Tensor, teacher: Tensor) -> Tensor:
        student = self._adapt(student)
        if student.dim() >= 2 and teacher.dim() >= 2 and student.size(1) != teacher.size(1):
            raise ValueError(
                f'student features have {student.size(1)} channels but the teacher\'s have '
                f'{teacher.size(1)} (shapes {tuple(student.shape)} and '
                f'{tuple(teacher.shape)}); set student_channels={student.size(1)} and '
                f'teacher_channels={teacher.size(1)} to learn a 1x1 conv adapter')
        teacher = align_teacher(student, teacher)
        if self.normalize:
            student, teacher = _standardise(student), _standardise(teacher)
        return reduce_map(F.mse_loss(student, teacher, reduction='none'), self.reduction)

    def forward(self, student: Maps, teacher: Maps) -> Tensor:
        """Computes the weighted loss.

        Args:
            student (Tensor | Sequence[Tensor]): Features, or one tensor per level.
            teacher (Tensor | Sequence[Tensor]): Same structure as ``student``.

        Returns:
            Tensor: The scalar loss, reduced over levels, times ``loss_weight``.
        """
        return self.loss_weight * reduce_levels(self._level, student, teacher,
                                                self.level_reduction)

    def extra_repr(self) -> str:
        return (f'student_channels={self.student_channels}, '
                f'teacher_channels={self.teacher_channels}, loss_weight={self.loss_weight}, '
                f'reduction={self.reduction!r}, level_reduction={self.level_reduction!r}, '
                f'normalize={self.normalize}')
