"""Distillation machinery: recorders and the inverse task losses of the augmenter phase."""
from .inverse_losses import (INVERSIONS, InvertedTaskLoss, find_task_losses, inversion_of,
                             inverted_task_losses)
from .inverse_primitives import inverse_softmax_logits
from .recorders import ModuleOutputRecorder
from .distiller import TSTDistiller
from .normalize import InputNormalizer

__all__ = [
    'TSTDistiller', 'InputNormalizer',
    'ModuleOutputRecorder', 'inverted_task_losses', 'InvertedTaskLoss', 'INVERSIONS',
    'inversion_of', 'inverse_softmax_logits', 'find_task_losses'
]
