"""Inverses of the task losses a head computes inline, with functions instead of
``loss_*`` modules (SSD, PISA-SSD, YOLACT's protonet, FreeAnchor, AutoAssign).

Swapping loss modules cannot reach a ``F.cross_entropy`` call inside a head's method.
For the heads listed in :data:`INLINE_INVERSES`, the method that computes the loss is
run as the head wrote it, but with the loss functions it looks up among its module's
globals replaced by their inverses (the same rules as :mod:`.inverse_losses`):

- softmax cross-entropy ``-log p_y`` -> ``-log(1 - p_y)`` (:func:`inverse_softmax_logits`);
- binary cross-entropy on probabilities ``p`` -> the same on ``1 - p`` (YOLACT's mask
  pixels cropped to ``p = 0`` stay at 0);
- regression (smooth L1, PISA's classification-aware CARL) -> negated.

FreeAnchor and AutoAssign weigh their negatives *inside* the probability (a focal loss
on ``w * p``, ``w`` < 1 exempting likely objects): flipping that product would aim the
inverse at the exempt locations, so their inverse is the head's own negative loss on the
flipped class confidence ``w * (1 - p)``. Their dense negative inverses are reduced by
the rule of :mod:`.inverse_losses` (``'mean'``: over every element).

Everything around the call is the head's own code and keeps its meaning on the inverse
problem: SSD's hard-negative mining keeps the background anchors with the largest
*inverse* loss (those the student is surest are background, the hard examples of the
inverse problem, as for mmseg's OHEM), and every weight and ``avg_factor`` is the
task's. The replacement is per head instance (a copy of the method bound to the head,
with its own globals), so the teacher's head of the same class, other threads and the
mmdet module itself never see it.

The key is the head's exact class: a subclass may compute other losses in the methods
it overrides, so it is refused at build (:func:`check_no_unlisted_subclass`) until it is
listed here.
"""
import types
from contextlib import contextmanager
from typing import Any, Callable, Dict, Iterator, List, Optional, Tuple

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch import Tensor

from .inverse_primitives import class_key, inverse_softmax_logits, module_key, negate


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
        return negate(function(*args, **kwargs))

    negated.__name__ = f'negated_{function.__name__}'
    return negated


def _rebound(head: nn.Module, method: str,
             replacements: Dict[str, Callable]) -> types.MethodType:
    """The head's ``method``, bound to it, looking up ``name`` among its module's
    globals as ``replacements[name](original value)``."""
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


def _task_method(head: nn.Module, method: str) -> types.MethodType:
    """The class's own ``method`` bound to ``head`` (not an inverse shadowing it)."""
    return types.MethodType(getattr(type(head), method), head)


def _looking_up(**methods: Dict[str, Callable]) -> Callable:
    """Inverses that run the head's own methods with some of the names they look up
    replaced: ``method=dict(name=make)``, ``make(original value)`` the replacement."""
    def inverses(head: nn.Module, reduction: str) -> Dict[str, Callable]:
        return {method: _rebound(head, method, names) for method, names in methods.items()}
    return inverses


_FLIPPED_BCE = dict(F=lambda _: _Functional(binary_cross_entropy=_flipped_cross_entropy))
_SSD_SINGLE = dict(F=lambda _: _Functional(cross_entropy=_inverse_cross_entropy),
                   smooth_l1_loss=_negated)


def _free_anchor(head: nn.Module, reduction: str) -> Dict[str, Callable]:
    """FreeAnchor (its ``loss_bbox`` is read as the localisation confidence
    ``P_loc = exp(-loss_bbox)``: not inverted, ``inverse_losses.NOT_TASK_LOSSES``).

    - positive bags, ``-alpha log(mean-max(P_cls P_loc))`` with ``F.binary_cross_entropy``
      against 1 -> ``-alpha log(1 - mean-max(...))``, the task's mean-max weights kept:
      the student's best anchors for the object miss it, by class or by box;
    - the negative bag, a focal loss on ``p = P_cls (1 - P_box)`` (``P_box``: how surely
      anchor j is an object's, which exempts it) -> the same focal loss on
      ``(1 - P_cls)(1 - P_box)``: pushes the class score up where the anchor is no
      object's, large where the student is sure it is not, the exemption kept. Under
      ``'mean'`` / ``'reference'`` it is averaged over every anchor x class, the rule for
      dense focal inverses; mmdet divides the sum by ``max(1, num_gts * topk)``.
    """
    negative_bag = _task_method(head, 'negative_bag_loss')
    loss_by_feat = _task_method(head, 'loss_by_feat')

    def inverse_negative_bag(cls_prob: Tensor, box_prob: Tensor) -> Tensor:
        return negative_bag(1 - cls_prob, box_prob)

    def inverse_loss_by_feat(cls_scores: List[Tensor], bbox_preds: List[Tensor],
                             batch_gt_instances: list, *args: Any, **kwargs: Any) -> dict:
        losses = loss_by_feat(cls_scores, bbox_preds, batch_gt_instances, *args, **kwargs)
        if reduction != 'task':
            num_gts = sum(len(gt) for gt in batch_gt_instances)
            elements = sum(score.numel() for score in cls_scores)
            losses['negative_bag_loss'] = losses['negative_bag_loss'] * max(
                1, num_gts * head.pre_anchor_topk) / elements
        return losses

    return dict(positive_bag_loss=_rebound(head, 'positive_bag_loss', _FLIPPED_BCE),
                negative_bag_loss=inverse_negative_bag, loss_by_feat=inverse_loss_by_feat)


def _autoassign(head: nn.Module, reduction: str) -> Dict[str, Callable]:
    """AutoAssign (its ``loss_bbox`` is read as ``P_loc = exp(-loss_bbox)``: not
    inverted, ``inverse_losses.NOT_TASK_LOSSES``).

    - ``loss_pos``, ``-log`` of the confidence-weighted ``P_cls P_obj P_loc`` with
      ``F.binary_cross_entropy`` against 1 -> ``-log(1 - ...)``, weights kept;
    - ``loss_neg``, a focal loss on ``w * P_cls P_obj`` (``w`` < 1 exempts the locations
      likely an object's) -> the same on ``w * (1 - P_cls P_obj)``: the head's own
      method on the flipped joint confidence, the exemption kept; under ``'mean'`` /
      ``'reference'`` averaged over every location x class (mmdet divides the sum by the
      sum of its centre-prior weights);
    - ``loss_center``, the centre prior's regulariser -> negated, as a regression loss.
    """
    negatives = _task_method(head, 'get_neg_loss_single')
    loss_by_feat = _task_method(head, 'loss_by_feat')
    terms: List[Tuple[Tensor, int]] = []  # each image's negative loss, its elements

    def inverse_negatives(cls_score: Tensor, objectness: Tensor, *args: Any) -> tuple:
        loss, = negatives(1 - cls_score * objectness, torch.ones_like(objectness), *args)
        terms.append((loss, cls_score.numel()))
        return loss,

    def inverse_loss_by_feat(*args: Any, **kwargs: Any) -> dict:
        terms.clear()
        losses = loss_by_feat(*args, **kwargs)
        losses['loss_center'] = -losses['loss_center']
        if reduction != 'task':
            losses['loss_neg'] = sum(loss for loss, _ in terms) / sum(n for _, n in terms)
        return losses

    return dict(get_pos_loss_single=_rebound(head, 'get_pos_loss_single', _FLIPPED_BCE),
                get_neg_loss_single=inverse_negatives, loss_by_feat=inverse_loss_by_feat)


# 'package.HeadClass' -> (head, reduction) -> {method: its inverse, bound to the head}
INLINE_INVERSES: Dict[str, Callable[[nn.Module, str], Dict[str, Callable]]] = {
    # loss_cls: F.cross_entropy with hard negatives mined 3:1; loss_bbox: smooth_l1_loss
    'mmdet.SSDHead': _looking_up(loss_by_feat_single=_SSD_SINGLE),
    # SSD's losses plus CARL, a regression loss weighted by the class score
    # (ISR-P's re-weighting is computed without gradient and kept as the task's).
    'mmdet.PISASSDHead': _looking_up(loss_by_feat_single=_SSD_SINGLE,
                                     loss_by_feat=dict(carl_loss=_negated)),
    # loss_mask: F.binary_cross_entropy on the assembled mask probabilities
    'mmdet.YOLACTProtonet': _looking_up(loss_by_feat=dict(F=lambda _: _Functional(
        binary_cross_entropy=_flipped_mask_cross_entropy))),
    'mmdet.FreeAnchorRetinaHead': _free_anchor,
    'mmdet.AutoAssignHead': _autoassign,
}


def inline_loss_heads(model: nn.Module) -> List[nn.Module]:
    """The submodules of ``model`` whose inline losses :data:`INLINE_INVERSES` inverts."""
    return [m for m in model.modules() if module_key(m) in INLINE_INVERSES]


def check_no_unlisted_subclass(model: nn.Module) -> None:
    """Raises ``NotImplementedError`` for a submodule whose class derives from a head in
    :data:`INLINE_INVERSES` without being listed itself: the methods it overrides may
    compute other losses, which would stay uninverted."""
    for module in model.modules():
        if module_key(module) in INLINE_INVERSES:
            continue
        listed = [cls for cls in type(module).__mro__[1:] if class_key(cls) in INLINE_INVERSES]
        if listed:
            raise NotImplementedError(
                f'{type(module).__name__} derives from {listed[0].__name__}, whose losses '
                'are computed inline and inverted by tst_mm.distill.inline_inverses; '
                f'whether {type(module).__name__} computes the same is not known: add it '
                'to INLINE_INVERSES there (with the inverses of what it changes), or train '
                'the augmenter on the divergence: TSTDistiller(augment_loss_weights='
                'dict(student_inverse=0, divergence=1))')


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
    # Every method is built before any is bound, so an error leaves the model as it was.
    bound = [(head, method, inverse) for head in inline_loss_heads(model)
             for method, inverse in INLINE_INVERSES[module_key(head)](head, reduction).items()]
    for head, method, _ in bound:
        if method in vars(head):
            raise ValueError(f"{type(head).__name__}'s inline losses are already "
                             'inverted; do not nest inverted_task_losses() blocks')
    try:
        for head, method, inverse in bound:
            head.__dict__[method] = inverse  # shadows the class's method
        yield model
    finally:
        for head, method, _ in bound:
            head.__dict__.pop(method, None)
