"""A test-only distillation loss that injects a NaN into chosen steps of either phase."""
import torch
import torch.nn as nn
from mmengine.registry import MODELS


@MODELS.register_module()
class NaNProbeLoss(nn.Module):
    """0 (with a gradient path to the student's and the augmenter's inputs), except at
    the listed 1-based calls of each phase: there the loss is NaN (``mode='loss'``), or
    0 with a NaN gradient (``mode='grad'``).

    The phase is told by the teacher's output: recorded without gradient in the student
    step, with one (through the augmented images) in the augmenter step, where distill
    losses run only with a ``divergence`` augment weight.

    Args:
        student_calls (Sequence[int]): Student steps to poison. Defaults to ().
        augmenter_calls (Sequence[int]): Augmenter steps to poison. Defaults to ().
        student_mode (str): 'loss' or 'grad'. Defaults to 'loss'.
        augmenter_mode (str): 'loss' or 'grad'. Defaults to 'loss'.
    """

    def __init__(self, student_calls=(), augmenter_calls=(), student_mode='loss',
                 augmenter_mode='loss', loss_weight=1.0):
        super().__init__()
        self.poisoned = dict(student=set(student_calls), augmenter=set(augmenter_calls))
        self.modes = dict(student=student_mode, augmenter=augmenter_mode)
        self.calls = dict(student=0, augmenter=0)
        self.loss_weight = loss_weight

    def forward(self, student, teacher):
        student = student[0] if isinstance(student, (list, tuple)) else student
        teacher = teacher[0] if isinstance(teacher, (list, tuple)) else teacher
        phase = 'augmenter' if teacher.requires_grad else 'student'
        self.calls[phase] += 1
        zero = (student - student.detach()).sum()  # 0, gradient 1 on every element
        if self.calls[phase] not in self.poisoned[phase]:
            return zero
        if self.modes[phase] == 'loss':
            return zero * float('nan') + float('nan')
        # sqrt(|0|): value 0, gradient inf * 0 = NaN
        return torch.sqrt((student - student.detach()).abs()).sum()
