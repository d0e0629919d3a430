"""Inverses of the task losses a head computes inline, with functions instead of
``loss_*`` modules (SSD, PISA-SSD, YOLACT's protonet).

Swapping loss modules cannot reach a ``F.cross_entropy`` call inside a head's method.
For the heads listed in :data:`INLINE_INVERSES`, the method that computes the loss is
run as the head wrote it, but with the loss functions it looks up among its module's
globals replaced by their inverses (the same rules as :mod:`.inverse_losses`):

- softmax cross-entropy ``-log p_y`` -> ``-log(1 - p_y)`` (:func:`inverse_softmax_logits`);
- binary cross-entropy on mask probabilities ``p`` -> the same on ``1 - p`` (pixels
  the head crops to ``p = 0`` stay at 0);
- regression (smooth L1, PISA's classification-aware CARL) -> negated.

Everything around the call is the head's own code and keeps its meaning on the inverse
problem: SSD's hard-negative mining keeps the background anchors with the largest
*inverse* loss (those the student is surest are background, the hard examples of the
inverse problem, as for mmseg's OHEM), and every weight and ``avg_factor`` is the
task's. The replacement is per head instance (a copy of the method bound to the head,
with its own globals), so the teacher's head of the same class, other threads and the
mmdet module itself never see it.

The key is the head's exact class: a subclass may compute other losses in methods it
overrides, so it is refused (``check_invertible``) until it is listed here.
"""
import types
from contextlib import contextmanager
from typing import Any, Callable, Dict, Iterator, List, Optional

import torch.nn as nn
import torch.nn.functional as F
from torch import Tensor

from .inverse_losses import _key, _negate, inverse_softmax_logits


def _inverse_cross_entropy(input: Tensor, target: Tensor, *args: Any, **kwargs: Any) -> Tensor:
    """``F.cross_entropy`` of ``-log(1 - p_y)``: the same call on the inverse logits."""
    return F.cross_entropy(inverse_softmax_logits(input, target), target, *args, **kwargs)


def _flipped_mask_cross_entropy(input: Tensor, target: Tensor,
                                weight: Optional[Tensor] = None,
                                reduction: str = 'mean') -> Tensor:
    """``F.binary_cross_entropy`` on ``1 - p``: ``-y log(1 - p) - (1 - y) log p``.

    Except where ``p == 0`` on a background pixel: YOLACT zeroes the mask outside the
    box it crops to, and there the flipped loss would be the constant ``-log 0``
    (clamped to 100 by torch), with no gradient, drowning the pixels inside the box. Those
    pixels count 0, as in the task loss.
    """
    loss = F.binary_cross_entropy(1 - input, target, weight, reduction='none')
    loss = loss.masked_fill((input == 0) & (target == 0), 0)
    if reduction == 'none':
        return loss
    return loss.sum() if reduction == 'sum' else loss.mean()


class _Functional:
    """``torch.nn.functional`` with some of its functions replaced."""

    def __init__(self, **replaced: Callable) -> None:
        self.__dict__.update(replaced)

    def __getattr__(self, name: str) -> Any:
        return getattr(F, name)


def _negated(function: Callable) -> Callable:
    """``function`` with its loss (a tensor, or a dict / sequence of them) negated."""
    def negated(*args: Any, **kwargs: Any) -> Any:
        return _negate(function(*args, **kwargs))

    negated.__name__ = f'negated_{function.__name__}'
    return negated


# global name -> (its value in the head's module) -> the inverse to look up instead
_SSD_SINGLE = {'F': lambda _: _Functional(cross_entropy=_inverse_cross_entropy),
               'smooth_l1_loss': _negated}

# 'package.HeadClass' -> {method computing losses inline: {global name: replacement}}
INLINE_INVERSES: Dict[str, Dict[str, Dict[str, Callable]]] = {
    # loss_cls: F.cross_entropy with hard negatives mined 3:1; loss_bbox: smooth_l1_loss
    'mmdet.SSDHead': {'loss_by_feat_single': _SSD_SINGLE},
    # SSD's losses plus CARL, a regression loss weighted by the class score
    # (ISR-P's re-weighting is computed without gradient and kept as the task's).
    'mmdet.PISASSDHead': {'loss_by_feat_single': _SSD_SINGLE,
                          'loss_by_feat': {'carl_loss': _negated}},
    # loss_mask: F.binary_cross_entropy on the assembled mask probabilities
    'mmdet.YOLACTProtonet': {
        'loss_by_feat': {'F': lambda _: _Functional(
            binary_cross_entropy=_flipped_mask_cross_entropy)}},
}


def inline_loss_heads(model: nn.Module) -> List[nn.Module]:
    """The submodules of ``model`` whose inline losses :data:`INLINE_INVERSES` inverts."""
    return [m for m in model.modules() if _key(m) in INLINE_INVERSES]


def _inverse_method(head: nn.Module, method: str,
                    replacements: Dict[str, Callable]) -> types.MethodType:
    function = getattr(type(head), method)
    missing = [name for name in replacements if name not in function.__globals__]
    if missing:
        raise NotImplementedError(
            f'{type(head).__name__}.{method} no longer looks up {missing} in '
            f'{function.__module__} (another mmdet version?): '
            'tst_mm.distill.inline_inverses.INLINE_INVERSES does not match it')
    scope = dict(function.__globals__)
    scope.update({name: make(scope[name]) for name, make in replacements.items()})
    inverse = types.FunctionType(function.__code__, scope, function.__name__,
                                 function.__defaults__, function.__closure__)
    inverse.__kwdefaults__ = function.__kwdefaults__
    return types.MethodType(inverse, head)


@contextmanager
def inline_losses_inverted(model: nn.Module) -> Iterator[nn.Module]:
    """Temporarily inverts the inline losses of every head of ``model`` listed in
    :data:`INLINE_INVERSES` (a no-op for a model without one).

    Args:
        model (nn.Module): An mmdet detector, or any module holding such heads.

    Yields:
        nn.Module: ``model`` itself.
    """
    for head in inline_loss_heads(model):
        if set(INLINE_INVERSES[_key(head)]) & set(vars(head)):
            raise ValueError(f"{type(head).__name__}'s inline losses are already "
                             'inverted; do not nest inverted_task_losses() blocks')
    # Every method is built before any is bound, so an error leaves the model as it was.
    bound = [(head, method, _inverse_method(head, method, replacements))
             for head in inline_loss_heads(model)
             for method, replacements in INLINE_INVERSES[_key(head)].items()]
    try:
        for head, method, inverse in bound:
            head.__dict__[method] = inverse  # shadows the class's method
        yield model
    finally:
        for head, method, _ in bound:
            head.__dict__.pop(method, None)
