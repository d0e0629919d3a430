"""Inverse task losses for TST's augmenter phase.

The augmenter minimises
``a * TaskLoss_teacher(x_aug) + b * InverseTaskLoss_student(x_aug)``: it looks for
augmented images that the teacher still gets right but the student gets wrong. The
inverse is the *non-saturating* form (as in GAN generators), whose gradient is large
exactly where the student is confident and right:

- softmax cross-entropy ``-log p_y``      -> ``-log(1 - p_y)``;
- sigmoid cross-entropy / focal loss    -> the same loss on ``1 - p`` (negated logits);
- regression (L1, SmoothL1, IoU, ...)   -> the negated loss.

:func:`inverted_task_losses` swaps every task-loss submodule of an mmdet or mmseg model
for an :class:`InvertedTaskLoss` around it, so the model's own ``loss()`` (targets,
sampling, weights, ``avg_factor``, loss names) runs unchanged. The classification
inverses transform the *inputs* of the original loss module rather than re-implementing
it, so ``weight``, ``avg_factor``, ``reduction``, ``class_weight``, ``ignore_index`` and
``avg_non_ignore`` keep exactly the semantics of the installed mmdet/mmseg version.
"""
import inspect
import math
from contextlib import contextmanager
from typing import Any, Callable, Dict, Iterator, List, Tuple

import torch
import torch.nn as nn
from torch import Tensor


def inverse_softmax_logits(logits: Tensor, label: Tensor) -> Tensor:
    """Logits ``z`` with ``cross_entropy(z, label) == -log(1 - softmax(logits)_label)``.

    With ``x = logits``, ``y = label`` and ``C`` classes, ``z_y = logsumexp_{c != y} x_c``
    and ``z_c = x_y - log(C - 1)`` for ``c != y``. Then ``logsumexp_c z_c =
    logsumexp_c x_c`` and ``CE(z, y) = logsumexp_c x_c - logsumexp_{c != y} x_c =
    -log(1 - p_y)``, computed from log-sum-exps only, so it stays finite when ``p_y``
    rounds to 1. Feeding ``z`` to the original loss module keeps its weighting and
    reduction. Entries whose label is not a class (``ignore_index``) get arbitrary
    logits; the original loss ignores them.

    Args:
        logits (Tensor): (N, C, ...) scores, classes on dim 1.
        label (Tensor): (N, ...) integer class indices.

    Returns:
        Tensor: The transformed logits, shape of ``logits``.
    """
    if label.dim() != logits.dim() - 1 or label.is_floating_point():
        raise ValueError('the inverse softmax cross-entropy needs integer class labels of '
                         f'shape (N, ...) for logits (N, C, ...); got logits '
                         f'{tuple(logits.shape)} and labels {tuple(label.shape)} of '
                         f'{label.dtype} (soft or one-hot targets are not supported)')
    num_classes = logits.size(1)
    if num_classes < 2:
        raise ValueError(f'softmax over {num_classes} class(es) has no inverse: '
                         f'1 - p_y is always 0 (logits shape {tuple(logits.shape)})')
    safe = label.long().clamp(0, num_classes - 1).unsqueeze(1)
    is_label = torch.zeros_like(logits, dtype=torch.bool).scatter_(1, safe, True)
    lse_others = logits.masked_fill(is_label, float('-inf')).logsumexp(1, keepdim=True)
    x_label = logits.gather(1, safe)
    return torch.where(is_label, lse_others, x_label - math.log(num_classes - 1))


def _flip_probability(loss: nn.Module, pred: Tensor, args: tuple,
                      kwargs: dict) -> Tuple[Tensor, tuple, dict]:
    # sigmoid(-x) = 1 - sigmoid(x); FocalLoss(activated=True) takes probabilities.
    return (1 - pred if getattr(loss, 'activated', False) else -pred), args, kwargs


def _inverse_softmax(loss: nn.Module, pred: Tensor, args: tuple,
                     kwargs: dict) -> Tuple[Tensor, tuple, dict]:
    label = args[0] if args else kwargs.get('label')
    if label is None:
        raise TypeError(f'{type(loss).__name__} was called without labels')
    return inverse_softmax_logits(pred, label), args, kwargs


def _cross_entropy(loss: nn.Module) -> str:
    # mmdet/mmseg CrossEntropyLoss: sigmoid (also the per-class mask BCE) or softmax.
    sigmoid = getattr(loss, 'use_sigmoid', False) or getattr(loss, 'use_mask', False)
    return 'flip_probability' if sigmoid else 'inverse_softmax'


_REGRESSION = ('L1Loss', 'SmoothL1Loss', 'BalancedL1Loss', 'MSELoss', 'IoULoss',
               'BoundedIoULoss', 'GIoULoss', 'DIoULoss', 'CIoULoss', 'EIoULoss', 'SIoULoss')

# 'package.ClassName' -> the inversion's name, or a function of the loss module that
# picks it (the same class can be sigmoid or softmax). Exact classes only: a subclass
# may change the math, so it has to be listed explicitly.
INVERSIONS: Dict[str, Any] = {
    'mmdet.FocalLoss': 'flip_probability',
    'mmdet.CrossEntropyLoss': _cross_entropy,
    'mmseg.CrossEntropyLoss': _cross_entropy,
    **{f'mmdet.{name}': 'negate' for name in _REGRESSION},
}

_INPUT_TRANSFORMS: Dict[str, Callable] = {
    'flip_probability': _flip_probability,
    'inverse_softmax': _inverse_softmax,
}


def inversion_of(loss: nn.Module) -> str:
    """Names how ``loss`` is inverted: 'flip_probability', 'inverse_softmax' or 'negate'.

    Args:
        loss (nn.Module): An mmdet or mmseg task-loss module.

    Returns:
        str: The inversion's name.
    """
    cls = type(loss)
    key = f'{cls.__module__.split(".")[0]}.{cls.__name__}'
    if key not in INVERSIONS:
        raise NotImplementedError(
            f'no inverse is defined for the task loss {key} ({cls.__module__}.'
            f'{cls.__qualname__}); supported: {sorted(INVERSIONS)}. Leave the student '
            'inverse task-loss term out of the augmenter objective for this model and '
            'use its distillation-divergence term (maximise the teacher-student '
            'divergence) instead, e.g. TSTDistiller(augment_loss_weights=dict('
            'student_inverse=0, divergence=1)), or add an entry to '
            'tst_mm.distill.inverse_losses.INVERSIONS')
    rule = INVERSIONS[key]
    return rule(loss) if callable(rule) else rule


class InvertedTaskLoss(nn.Module):
    """Wraps a task-loss module and returns its non-saturating inverse.

    Attributes the model reads from its loss (``loss_name``, ``use_sigmoid``,
    ``loss_weight``, ...) are forwarded to the wrapped module.

    Args:
        loss (nn.Module): The original loss module (see :data:`INVERSIONS`).
    """

    def __init__(self, loss: nn.Module) -> None:
        super().__init__()
        if isinstance(loss, InvertedTaskLoss):
            raise ValueError(f'{loss!r} is already inverted; do not nest '
                             'inverted_task_losses() blocks')
        self.inversion = inversion_of(loss)
        self.original = loss
        params = list(inspect.signature(loss.forward).parameters.values())
        # Heads pass the prediction positionally, but a keyword call must work too.
        self._pred_name = params[0].name if params else None

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        """Calls the original loss on transformed inputs, or negates its output.

        Args:
            *args: The original loss's positional arguments (prediction first).
            **kwargs: Its keyword arguments.

        Returns:
            Any: What the original loss returns, inverted.
        """
        if self.inversion == 'negate':
            return _negate(self.original(*args, **kwargs))
        if args:
            pred, args = args[0], args[1:]
        elif self._pred_name in kwargs:
            pred = kwargs.pop(self._pred_name)
        else:
            raise TypeError(f'{type(self.original).__name__} was called without a '
                            'prediction')
        pred, args, kwargs = _INPUT_TRANSFORMS[self.inversion](self.original, pred, args,
                                                               kwargs)
        return self.original(pred, *args, **kwargs)

    def __getattr__(self, name: str) -> Any:
        try:
            return super().__getattr__(name)
        except AttributeError:
            modules = self.__dict__.get('_modules', {})
            if 'original' not in modules:
                raise
            return getattr(modules['original'], name)

    def extra_repr(self) -> str:
        return f'inversion={self.inversion!r}'


def _negate(output: Any) -> Any:
    if isinstance(output, Tensor):
        return -output
    if isinstance(output, dict):
        return {k: _negate(v) for k, v in output.items()}
    if isinstance(output, (tuple, list)):
        return type(output)(_negate(v) for v in output)
    raise TypeError(f'cannot negate a loss output of type {type(output).__name__}')


def find_task_losses(model: nn.Module) -> List[Tuple[nn.Module, str, nn.Module]]:
    """Finds the task-loss submodules of an mmdet or mmseg model.

    A task loss is a child module whose attribute name starts with ``loss_`` (mmdet's
    ``loss_cls``, ``loss_bbox``, ``loss_centerness``, ...; mmseg's ``loss_decode``), or
    an element of such a child when it is a module container (mmseg's ``loss_decode``
    can be an ``nn.ModuleList``).

    Args:
        model (nn.Module): The model to search.

    Returns:
        list[tuple[nn.Module, str, nn.Module]]: ``(parent, attribute, loss)`` triples,
        where ``getattr(parent, attribute) is loss``.
    """
    found, loss_paths = [], []
    # remove_duplicate=False: a loss shared by two heads is swapped in both.
    for name, parent in model.named_modules(remove_duplicate=False):
        # Parents come before their children; the inside of a loss is the loss's own
        # business (inverting a composite loss's parts as well would invert it twice).
        if any(name.startswith(p + '.') for p in loss_paths):
            continue
        for attr, child in parent.named_children():
            if not attr.startswith('loss_'):
                continue
            path = f'{name}.{attr}' if name else attr
            loss_paths.append(path)
            if isinstance(child, (nn.ModuleList, nn.ModuleDict, nn.Sequential)):
                found.extend((child, key, loss) for key, loss in child.named_children())
            else:
                found.append((parent, attr, child))
    return found


@contextmanager
def inverted_task_losses(model: nn.Module) -> Iterator[nn.Module]:
    """Temporarily replaces every task loss of ``model`` by its inverse.

    Example::

        with inverted_task_losses(student):
            losses = student.loss(inputs, data_samples)  # same keys, inverted values

    Every loss is checked before anything is swapped, so an unsupported loss raises
    with the model untouched; the originals are put back on exit, also on exceptions.

    Args:
        model (nn.Module): An mmdet detector or mmseg segmentor (or any module whose
            losses are ``loss_*`` submodules of a type in :data:`INVERSIONS`).

    Yields:
        nn.Module: ``model`` itself.
    """
    found = find_task_losses(model)
    if not found:
        raise ValueError(f'found no task-loss submodules (named loss_*) in a '
                         f'{type(model).__name__}; nothing to invert')
    wrappers = [InvertedTaskLoss(loss) for _, _, loss in found]
    swapped = []
    try:
        for (parent, attr, loss), wrapper in zip(found, wrappers):
            setattr(parent, attr, wrapper)
            swapped.append((parent, attr, loss))
        yield model
    finally:
        for parent, attr, loss in reversed(swapped):
            setattr(parent, attr, loss)
