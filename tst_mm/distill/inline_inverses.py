"""Inverses of the task losses a head computes inline, with functions instead of
``loss_*`` modules (SSD, PISA-SSD, YOLACT's protonet, FreeAnchor).

Swapping loss modules cannot reach a ``F.cross_entropy`` call inside a head's method.
For the heads listed in :data:`INLINE_INVERSES`, the method that computes the loss is
mostly run as the head wrote it, but with the loss functions it looks up among its
module's globals replaced by their inverses (the same rules as :mod:`.inverse_losses`):

- softmax cross-entropy ``-log p_y`` -> ``-log(1 - p_y)`` (:func:`inverse_softmax_logits`);
- binary cross-entropy on probabilities ``p`` -> the same on ``1 - p`` (YOLACT's mask
  pixels cropped to ``p = 0`` stay at 0);
- regression (smooth L1, PISA's classification-aware CARL) -> negated.

A loss whose modulating factor sits outside the function (FreeAnchor's negative bag, a
focal loss ``p^gamma * BCE(p, 0)``) gets its method replaced by the same loss on
``1 - p``, and a dense inverse is reduced by the rule of the module docstring of
:mod:`.inverse_losses` (``'mean'``: over every element).

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

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch import Tensor

from .inverse_losses import _key, _negate, inverse_softmax_logits


def _inverse_cross_entropy(input: Tensor, target: Tensor, *args: Any, **kwargs: Any) -> Tensor:
    """``F.cross_entropy`` of ``-log(1 - p_y)``: the same call on the inverse logits."""
    return F.cross_entropy(inverse_softmax_logits(input, target), target, *args, **kwargs)


def _flipped_cross_entropy(input: Tensor, target: Tensor, *args: Any,
                           **kwargs: Any) -> Tensor:
    """``F.binary_cross_entropy`` on ``1 - p``: ``-y log(1 - p) - (1 - y) log p``."""
    return F.binary_cross_entropy(1 - input, target, *args, **kwargs)


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


def _looking_up(**replacements: Callable) -> Callable:
    """The head's own method, run with the names it looks up among its module's globals
    replaced: ``name=make``, where ``make(original value)`` gives the replacement."""
    def inverse(head: nn.Module, method: str, reduction: str) -> types.MethodType:
        return _rebound(head, method, replacements)
    return inverse


_SSD_SINGLE = _looking_up(F=lambda _: _Functional(cross_entropy=_inverse_cross_entropy),
                          smooth_l1_loss=_negated)

# FreeAnchor clamps its negative-bag probabilities to [EPS, 1 - EPS] (mmdet's 1e-12).
_FREE_ANCHOR_EPS = 1e-12


def _free_anchor_negative_bag(head: nn.Module, method: str, reduction: str) -> Callable:
    """FreeAnchor's negative bag loss is a focal loss on ``p = P(class c at anchor j) *
    (1 - P(anchor j is an object's))``, ``(1 - alpha) p^gamma (-log(1 - p))``; its
    inverse is the same on ``1 - p``, ``(1 - alpha) (1 - p)^gamma (-log p)``: largest
    where the student is sure anchor j shows no c, it pushes towards false positives."""
    def inverse(cls_prob: Tensor, box_prob: Tensor) -> Tensor:
        flipped = 1 - (cls_prob * (1 - box_prob)).clamp(_FREE_ANCHOR_EPS,
                                                        1 - _FREE_ANCHOR_EPS)
        return (1 - head.alpha) * flipped**head.gamma * F.binary_cross_entropy(
            flipped, torch.zeros_like(flipped), reduction='none')
    return inverse


def _free_anchor_loss_by_feat(head: nn.Module, method: str, reduction: str) -> Callable:
    """FreeAnchor's losses, its negative bag averaged over every element under
    ``'mean'`` / ``'reference'``, as a dense focal inverse is: mmdet divides its sum
    over all anchors x classes by ``max(1, num_gts * pre_anchor_topk)``, which leaves
    the inverse thousands of times the teacher term."""
    loss_by_feat = types.MethodType(getattr(type(head), method), head)
    if reduction == 'task':
        return loss_by_feat

    def inverse(cls_scores: List[Tensor], bbox_preds: List[Tensor],
                batch_gt_instances: list, *args: Any, **kwargs: Any) -> dict:
        losses = loss_by_feat(cls_scores, bbox_preds, batch_gt_instances, *args, **kwargs)
        num_gts = sum(len(gt) for gt in batch_gt_instances)
        elements = sum(score.numel() for score in cls_scores)
        losses['negative_bag_loss'] = losses['negative_bag_loss'] * max(
            1, num_gts * head.pre_anchor_topk) / elements
        return losses
    return inverse


# 'package.HeadClass' -> {method computing losses inline:
#                         (head, method, reduction) -> the method's inverse}
INLINE_INVERSES: Dict[str, Dict[str, Callable]] = {
    # loss_cls: F.cross_entropy with hard negatives mined 3:1; loss_bbox: smooth_l1_loss
    'mmdet.SSDHead': {'loss_by_feat_single': _SSD_SINGLE},
    # SSD's losses plus CARL, a regression loss weighted by the class score
    # (ISR-P's re-weighting is computed without gradient and kept as the task's).
    'mmdet.PISASSDHead': {'loss_by_feat_single': _SSD_SINGLE,
                          'loss_by_feat': _looking_up(carl_loss=_negated)},
    # loss_mask: F.binary_cross_entropy on the assembled mask probabilities
    'mmdet.YOLACTProtonet': {'loss_by_feat': _looking_up(F=lambda _: _Functional(
        binary_cross_entropy=_flipped_mask_cross_entropy))},
    # Positive bags: -log(mean-max(P_cls * P_loc)) with F.binary_cross_entropy against
    # 1 -> -log(1 - mean-max(...)), the task's mean-max weights kept. Its loss_bbox is
    # read as the confidence P_loc = exp(-loss_bbox), not inverted
    # (inverse_losses.NOT_TASK_LOSSES).
    'mmdet.FreeAnchorRetinaHead': {
        'positive_bag_loss': _looking_up(F=lambda _: _Functional(
            binary_cross_entropy=_flipped_cross_entropy)),
        'negative_bag_loss': _free_anchor_negative_bag,
        'loss_by_feat': _free_anchor_loss_by_feat},
}


def inline_loss_heads(model: nn.Module) -> List[nn.Module]:
    """The submodules of ``model`` whose inline losses :data:`INLINE_INVERSES` inverts."""
    return [m for m in model.modules() if _key(m) in INLINE_INVERSES]


def _rebound(head: nn.Module, method: str,
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
def inline_losses_inverted(model: nn.Module, reduction: str = 'mean') -> Iterator[nn.Module]:
    """Temporarily inverts the inline losses of every head of ``model`` listed in
    :data:`INLINE_INVERSES` (a no-op for a model without one).

    Args:
        model (nn.Module): An mmdet detector, or any module holding such heads.
        reduction (str): ``'mean'``, ``'reference'`` or ``'task'``, as for
            :func:`~tst_mm.distill.inverse_losses.inverted_task_losses`.

    Yields:
        nn.Module: ``model`` itself.
    """
    for head in inline_loss_heads(model):
        if set(INLINE_INVERSES[_key(head)]) & set(vars(head)):
            raise ValueError(f"{type(head).__name__}'s inline losses are already "
                             'inverted; do not nest inverted_task_losses() blocks')
    # Every method is built before any is bound, so an error leaves the model as it was.
    bound = [(head, method, make(head, method, reduction))
             for head in inline_loss_heads(model)
             for method, make in INLINE_INVERSES[_key(head)].items()]
    try:
        for head, method, inverse in bound:
            head.__dict__[method] = inverse  # shadows the class's method
        yield model
    finally:
        for head, method, _ in bound:
            head.__dict__.pop(method, None)
