"""Inverse task losses for TST's augmenter phase.

The augmenter minimises
``a * TaskLoss_teacher(x_aug) + b * InverseTaskLoss_student(x_aug)``: it looks for
augmented images that the teacher still gets right but the student gets wrong. The
inverse is the *non-saturating* form (as in GAN generators), whose gradient is large
exactly where the student is confident and right:

- softmax cross-entropy ``-log p_y`` (also OHEM's) -> ``-log(1 - p_y)``;
- sigmoid cross-entropy / focal / GHM-C / Dice / Lovasz hinge -> the same loss on
  ``1 - p`` (negated logits; ``1 - p`` itself for losses on probabilities such as
  GaussianFocalLoss's heatmaps);
- regression (L1, SmoothL1, IoU, GHM-R, ...) and CornerNet's associative embedding
  (pull / push) -> the negated loss;
- IoU-aware sigmoid losses (QualityFocal, Varifocal), whose positives have a soft
  quality target ``y``: on ``1 - p`` with ``y`` set to 1. Flipping with ``y`` kept is
  minimised at ``p = 1 - y``: no change for ``y = 0.5``, a *higher* score for ``y < 0.5``;
  with ``y = 1`` every positive is pushed to a miss and every negative to a false
  positive, as for FocalLoss (Varifocal keeps its ``y``-weighting of the positives);
- Distribution Focal Loss, a softmax cross-entropy on the two bins around the target,
  ``w_l * -log p_l + w_r * -log p_r`` -> ``w_l * -log(1 - p_l) + w_r * -log(1 - p_r)``;
- softmax region losses (Dice, Tversky, Lovasz-softmax) -> the same loss on the inverse
  softmax distribution ``q_y = 1 - p_y``, ``q_c = p_y / (C - 1)`` (the softmax of
  :func:`inverse_softmax_logits`), minimised where ``p_y = 0``.

Losses that update running state in their forward (GHM's bin counts, Seesaw's class
counts) get it back after the inverse: it follows the task's batches only.

How the inverse is *reduced* decides whether the augmenter serves both of its terms
(``reduction``, ``TSTDistiller(inverse_reduction=...)``). Measured at initialisation
(docs/results.md), as the ratio of the augmenter gradient norms the student inverse and
the teacher term give:

- ``'mean'`` (default): a dense focal loss (Focal, QualityFocal, Varifocal,
  GaussianFocal) is averaged over every element of the prediction (all anchors x
  classes of one FPN level, each level a call, summed), as the reference does, instead
  of summed and divided by the number of positives. Anchors the assigner ignores (label
  weight 0) stay out of the sum. (TOOD and RTMDet heads divide their QualityFocal loss
  by the sum of alignment metrics afterwards, out of the loss's reach.) Every other
  inverse keeps its task loss's reduction (segmentation: the per-pixel mean; sampled
  RoI / RPN losses and regression: as the task loss). RetinaNet R18 <- R50, 80
  classes, 320 x 320: gradient ratio 0.8-1.3; PSPNet R18 <- R50, 19 classes,
  256 x 512: 0.7-1.9.
- ``'reference'``: ``'mean'`` plus the reference's reduction of a softmax segmentation
  inverse: ``-log(1 - p_y)`` on one-hot targets averaged over N x C x H x W, i.e. the
  per-pixel mean divided by C. It leaves the teacher term 10-30 times stronger on the
  PSPNet pair above (up to 200 times on a tiny one).
- ``'task'``: every inverse keeps its task loss's weights and ``avg_factor``. For focal
  losses that is a sum over the A x C negatives divided by the few positives: 10^4
  times the teacher term in value and ~300 times in gradient on the RetinaNet pair
  above, so the augmenter only ever serves the student term.

"""
import inspect
from contextlib import contextmanager
from typing import Any, Callable, Dict, Iterator, List, Tuple

import torch
import torch.nn as nn
from torch import Tensor

from .inline_inverses import (check_no_unlisted_subclass, inline_loss_heads,
                              inline_losses_inverted)
from .inverse_primitives import inverse_softmax_logits, module_key, negate


def _bind(loss: nn.Module, pred: Tensor, args: tuple,
          kwargs: dict) -> inspect.BoundArguments:
    return inspect.signature(loss.forward).bind(pred, *args, **kwargs)


def _target_name(loss: nn.Module) -> str:
    # The second parameter of forward(): label / target / labels / bd_gt ...
    return list(inspect.signature(loss.forward).parameters)[1]


def _target(loss: nn.Module, args: tuple, kwargs: dict) -> Any:
    target = args[0] if args else kwargs.get(_target_name(loss))
    if target is None:
        raise TypeError(f'{type(loss).__name__} was called without labels')
    return target


def _unbind(bound: inspect.BoundArguments) -> Tuple[Tensor, tuple, dict]:
    return bound.args[0], bound.args[1:], bound.kwargs


def _elementwise(loss: nn.Module, pred: Tensor, args: tuple, kwargs: dict) -> bool:
    """Whether this call asks for per-element losses (``reduction='none'``, set or
    overridden): the head reduces them itself (FSAF re-weights per anchor and level), so
    the inverse must not reduce them."""
    override = _bind(loss, pred, args, kwargs).arguments.get('reduction_override')
    return (override or getattr(loss, 'reduction', None)) == 'none'


# Losses whose prediction is always a probability (CenterNet / CornerNet heatmaps go
# through a sigmoid in the head).
_ON_PROBABILITIES = ('mmdet.GaussianFocalLoss', )


def _flip_probability(loss: nn.Module, pred: Tensor, args: tuple,
                      kwargs: dict) -> Tuple[Tensor, tuple, dict]:
    # sigmoid(-x) = 1 - sigmoid(x); FocalLoss / QualityFocalLoss(activated=True) and
    # DiceLoss(activate=False) take probabilities.
    probabilities = getattr(loss, 'activated', False) or \
        getattr(loss, 'activate', True) is False or module_key(loss) in _ON_PROBABILITIES
    return (1 - pred if probabilities else -pred), args, kwargs


def _flip_probability_binary_target(loss: nn.Module, pred: Tensor, args: tuple,
                                    kwargs: dict) -> Tuple[Tensor, tuple, dict]:
    """QualityFocal / Varifocal on ``1 - p`` with the positives' quality set to 1.

    QFL: ``-log(1 - p) * p^beta`` on a positive, ``-log(p) * (1 - p)^beta`` on a
    negative. VFL: ``-y * log(1 - p)`` on a positive (``iou_weighted``: its quality
    ``y`` moves into the weight), ``-alpha * (1 - p)^gamma * log(p)`` on a negative.
    """
    bound = _bind(loss, pred, args, kwargs)
    name = _target_name(loss)
    target = bound.arguments[name]
    if isinstance(target, (tuple, list)):  # QFL: (label, IoU score of the positives)
        label, score = target
        bound.arguments[name] = (label, torch.ones_like(score))
    else:  # (N, C) quality, 0 on negatives (QFL's tensor target, VFL)
        positive = target > 0
        if getattr(loss, 'iou_weighted', False):
            quality = torch.where(positive, target, torch.ones_like(target)).to(pred)
            weight = bound.arguments.get('weight')
            bound.arguments['weight'] = quality if weight is None else quality * weight
        bound.arguments[name] = positive.to(target.dtype)
    pred, args, kwargs = _unbind(bound)
    return _flip_probability(loss, pred, args, kwargs)


def _dice(loss: nn.Module) -> str:
    # mmdet's DiceLoss scores each pixel with a sigmoid (use_sigmoid=False is not
    # implemented there either).
    if not getattr(loss, 'use_sigmoid', True):
        raise NotImplementedError('mmdet DiceLoss(use_sigmoid=False) has no inverse '
                                  '(mmdet does not implement it either)')
    return 'flip_probability'


def _seg_dice(loss: nn.Module) -> str:
    # mmseg's DiceLoss: a sigmoid per class, a softmax over classes, or probabilities
    # (activate=False) that 1 - p flips class by class.
    softmax = loss.activate and not loss.use_sigmoid
    return 'inverse_softmax' if softmax else 'flip_probability'


def _lovasz(loss: nn.Module) -> str:
    # The binary Lovasz hinge takes logits: negated, its errors 1 + x * sign(y) are
    # positive exactly where the prediction is right (and non-saturating, a hinge).
    # Lovasz-softmax takes the softmax of its logits.
    binary = getattr(loss.cls_criterion, '__name__', '') == 'lovasz_hinge'
    return 'flip_probability' if binary else 'inverse_softmax'


def _inverse_softmax(loss: nn.Module, pred: Tensor, args: tuple,
                     kwargs: dict) -> Tuple[Tensor, tuple, dict]:
    return inverse_softmax_logits(pred, _target(loss, args, kwargs)), args, kwargs


def _inverse_softmax_split(loss: nn.Module, pred: Tensor, args: tuple,
                           kwargs: dict) -> Tuple[Tensor, tuple, dict]:
    """SeesawLoss: scores (N, C + 2) are a softmax over the C classes (positives only)
    and one over (object, background); each is inverted on its own labels. Seesaw's
    re-weighting then acts on the inverted logits: its mitigation (class-count ratios)
    as on the task, its compensation where the inverse scores a class above ``q_y``."""
    labels = _target(loss, args, kwargs)
    classes = inverse_softmax_logits(pred[:, :-2], labels)  # background rows: unused
    objectness = inverse_softmax_logits(pred[:, -2:], (labels == loss.num_classes).long())
    return torch.cat([classes, objectness], 1), args, kwargs


def _inverse_softmax_ce(logits: Tensor, label: Tensor) -> Tensor:
    """Element-wise ``-log(1 - softmax(logits)_label)``, finite when ``p_label = 1``."""
    return nn.functional.cross_entropy(inverse_softmax_logits(logits, label), label,
                                       reduction='none')


def _inverse_distribution_focal(loss: nn.Module, pred: Tensor, args: tuple,
                                kwargs: dict) -> Tensor:
    """``loss_weight * reduce(w_l * -log(1 - p_l) + w_r * -log(1 - p_r))`` for the
    target's neighbouring bins ``l = floor(t)``, ``r = l + 1``, ``w_l = r - t``,
    ``w_r = t - l``.

    DFL is a softmax cross-entropy over the bins, so it gets the non-saturating inverse:
    the negated loss, ``w_l * log p_l + w_r * log p_r``, is unbounded below and its
    gradient vanishes where the student is confident and right. Minimising this one
    moves the distribution's mass off both bins, so the decoded distance moves away
    from the target. Its two cross-entropies need two different transformed logits, so
    it is computed here, then weighted and reduced as ``DistributionFocalLoss`` does.
    """
    from mmdet.models.losses.utils import weight_reduce_loss

    bound = _bind(loss, pred, args, kwargs)
    bound.apply_defaults()
    a = bound.arguments
    target = a['target']
    left = target.long()
    right = left + 1
    elem = _inverse_softmax_ce(pred, left) * (right.float() - target) + \
        _inverse_softmax_ce(pred, right) * (target - left.float())
    reduction = a['reduction_override'] or loss.reduction
    return loss.loss_weight * weight_reduce_loss(elem, a['weight'], reduction,
                                                 a['avg_factor'])


def _mean_over_elements(loss: nn.Module, pred: Tensor, args: tuple, kwargs: dict) -> Tensor:
    """The loss with ``avg_factor=None, reduction_override='mean'``: a mean over every
    element (label weights kept, so ignored anchors add nothing)."""
    bound = _bind(loss, pred, args, kwargs)
    bound.arguments.update(avg_factor=None, reduction_override='mean')
    return loss(*bound.args, **bound.kwargs)


def _mean_over_prediction(loss: nn.Module, pred: Tensor, args: tuple,
                          kwargs: dict) -> Tensor:
    """The sum over every element of the prediction divided by their number (label
    weights kept): ``avg_factor=pred.numel(), reduction_override='mean'``. Also right
    where the loss sums over the classes of an anchor first (QualityFocalLoss) or
    reduces the positives apart (GaussianFocalLoss with ``pos_inds``), where a plain
    ``'mean'`` would not be."""
    bound = _bind(loss, pred, args, kwargs)
    bound.arguments.update(avg_factor=pred.numel(), reduction_override='mean')
    return loss(*bound.args, **bound.kwargs)


def _mean_over_classes(loss: nn.Module, pred: Tensor, args: tuple, kwargs: dict) -> Tensor:
    """A per-pixel softmax loss divided by C: the mean over N x C x H x W."""
    value = loss(pred, *args, **kwargs)
    return value if _cross_entropy(loss) != 'inverse_softmax' else value / pred.size(1)


def _cross_entropy(loss: nn.Module) -> str:
    # mmdet/mmseg CrossEntropyLoss: sigmoid (also the per-class mask BCE) or softmax.
    sigmoid = getattr(loss, 'use_sigmoid', False) or getattr(loss, 'use_mask', False)
    return 'flip_probability' if sigmoid else 'inverse_softmax'


_REGRESSION = ('L1Loss', 'SmoothL1Loss', 'BalancedL1Loss', 'MSELoss', 'IoULoss',
               'BoundedIoULoss', 'GIoULoss', 'DIoULoss', 'CIoULoss', 'EIoULoss', 'SIoULoss',
               'GHMR')

# 'package.ClassName' -> the inversion's name, or a function of the loss module that
# picks it (the same class can be sigmoid or softmax). Exact classes only: a subclass
# may change the math, so it has to be listed explicitly.
INVERSIONS: Dict[str, Any] = {
    'mmdet.FocalLoss': 'flip_probability',
    'mmdet.DiceLoss': _dice,  # mask heads of SOLO, CondInst, RTMDet-Ins, Mask2Former
    'mmdet.CrossEntropyLoss': _cross_entropy,
    # the same forward, with a custom number of output channels (class + background)
    'mmdet.CrossEntropyCustomLoss': _cross_entropy,
    'mmdet.QualityFocalLoss': 'flip_probability_binary_target',  # GFL, TOOD, RTMDet
    'mmdet.VarifocalLoss': 'flip_probability_binary_target',  # VFNet
    'mmdet.DistributionFocalLoss': 'inverse_softmax_bins',  # GFL's box distributions
    'mmdet.GaussianFocalLoss': 'flip_probability',  # CenterNet, CornerNet heatmaps
    # GHM-C weights by the density of |p - y|: recomputed on the flipped problem
    'mmdet.GHMC': 'flip_probability',
    # SCNet's global context head: multi-label image classes, torch's own module
    # (pos_weight / weight kept: they weight the flipped problem's positives the same)
    'torch.BCEWithLogitsLoss': 'flip_probability',
    'mmdet.SeesawLoss': 'inverse_softmax_split',
    # CornerNet / CentripetalNet corner embeddings: a metric loss (pull the two corners
    # of an object together, push objects apart, hinge at margin 1), negated as
    # regression is: the inverse pulls the corners apart and the objects together.
    'mmdet.AssociativeEmbeddingLoss': 'negate',
    'mmseg.CrossEntropyLoss': _cross_entropy,
    # PIDNet: OHEM on -log(1 - p_y) keeps the pixels with 1 - p_y below the threshold,
    # i.e. those the student is sure of: the hard examples of the inverse problem.
    'mmseg.OhemCrossEntropy': 'inverse_softmax',
    'mmseg.FocalLoss': 'flip_probability',  # sigmoid only (use_sigmoid=False asserts)
    'mmseg.BoundaryLoss': 'flip_probability',  # PIDNet: class-balanced sigmoid BCE
    'mmseg.DiceLoss': _seg_dice,
    'mmseg.LovaszLoss': _lovasz,
    'mmseg.TverskyLoss': 'inverse_softmax',  # a softmax over the classes inside
    **{f'mmdet.{name}': 'negate' for name in _REGRESSION},
}

# Loss modules a head reads as something other than its loss: left as they are (the
# head's own losses are inverted by inline_inverses). 'package.HeadClass' -> attributes.
NOT_TASK_LOSSES: Dict[str, Tuple[str, ...]] = {
    # the localisation confidence P_loc = exp(-loss_bbox) inside their positive losses
    'mmdet.FreeAnchorRetinaHead': ('loss_bbox', ),
    'mmdet.AutoAssignHead': ('loss_bbox', ),
}

# Dense focal losses, averaged over every element under 'mean' (module docstring).
_DENSE_FOCAL = {'mmdet.QualityFocalLoss': _mean_over_prediction,
                'mmdet.VarifocalLoss': _mean_over_prediction,
                'mmdet.GaussianFocalLoss': _mean_over_prediction}

# reduction setting -> {loss: how its inverse is reduced}; every inverse not listed
# keeps its task loss's reduction (module docstring).
INVERSE_REDUCTIONS: Dict[str, Dict[str, Callable]] = {
    'mean': {'mmdet.FocalLoss': _mean_over_elements, **_DENSE_FOCAL},
    'reference': {'mmdet.FocalLoss': _mean_over_elements, **_DENSE_FOCAL,
                  'mmseg.CrossEntropyLoss': _mean_over_classes},
    'task': {},
}

# inversion -> (loss, pred, args, kwargs) -> the arguments to call the loss with
_INPUT_TRANSFORMS: Dict[str, Callable] = {
    'flip_probability': _flip_probability,
    'flip_probability_binary_target': _flip_probability_binary_target,
    'inverse_softmax': _inverse_softmax,
    'inverse_softmax_split': _inverse_softmax_split,
}

# inversion -> (loss, pred, args, kwargs) -> the inverse loss itself
_INVERSE_LOSSES: Dict[str, Callable] = {
    'inverse_softmax_bins': _inverse_distribution_focal,
}

# GHM-C's running histogram (momentum > 0) counts |p - y| of the task; the flipped
# problem's histogram is its mirror image, so its inverse uses the batch's own.
_BATCH_STATISTICS = ('mmdet.GHMC', )


@contextmanager
def _state_kept(loss: nn.Module) -> Iterator[None]:
    """Puts back the buffers the loss's forward updates (GHM's ``acc_sum``, Seesaw's
    ``cum_samples``): they follow the task's batches, not the augmenter's."""
    saved = [(buf, buf.detach().clone()) for buf in loss.buffers()]
    batch_only = module_key(loss) in _BATCH_STATISTICS
    if batch_only:
        momentum, loss.momentum = loss.momentum, 0
    try:
        yield
    finally:
        if batch_only:
            loss.momentum = momentum
        with torch.no_grad():
            for buf, value in saved:
                # Only the changed ones: a buffer the loss computes with (torch's
                # pos_weight) is saved for backward, and an in-place copy would void it.
                if not torch.equal(buf, value):
                    buf.copy_(value)


def inversion_of(loss: nn.Module) -> str:
    """Names how ``loss`` is inverted: 'flip_probability', 'inverse_softmax', 'negate',
    or one of the loss-specific forms ('flip_probability_binary_target',
    'inverse_softmax_bins', 'inverse_softmax_split').

    Args:
        loss (nn.Module): An mmdet or mmseg task-loss module.

    Returns:
        str: The inversion's name.
    """
    cls = type(loss)
    key = module_key(loss)
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
        reduction (str): ``'mean'``, ``'reference'`` or ``'task'``, see the module
            docstring. Defaults to ``'mean'``.
    """

    def __init__(self, loss: nn.Module, reduction: str = 'mean') -> None:
        super().__init__()
        if isinstance(loss, InvertedTaskLoss):
            raise ValueError(f'{loss!r} is already inverted; do not nest '
                             'inverted_task_losses() blocks')
        if reduction not in INVERSE_REDUCTIONS:
            raise ValueError(f'inverse reduction must be one of '
                             f'{tuple(INVERSE_REDUCTIONS)}, got {reduction!r}')
        self.inversion = inversion_of(loss)
        self.reduction = reduction
        self._reduce = INVERSE_REDUCTIONS[reduction].get(module_key(loss))
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
        with _state_kept(self.original):
            return self._inverse(args, kwargs)

    def _inverse(self, args: tuple, kwargs: dict) -> Any:
        if self.inversion == 'negate':
            return negate(self.original(*args, **kwargs))
        if args:
            pred, args = args[0], args[1:]
        elif self._pred_name in kwargs:
            pred = kwargs.pop(self._pred_name)
        else:
            raise TypeError(f'{type(self.original).__name__} was called without a '
                            'prediction')
        if self.inversion in _INVERSE_LOSSES:
            return _INVERSE_LOSSES[self.inversion](self.original, pred, args, kwargs)
        pred, args, kwargs = _INPUT_TRANSFORMS[self.inversion](self.original, pred, args,
                                                               kwargs)
        if self._reduce is not None and not _elementwise(self.original, pred, args, kwargs):
            return self._reduce(self.original, pred, args, kwargs)
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
        return f'inversion={self.inversion!r}, reduction={self.reduction!r}'


def _is_task_loss(attr: str, child: nn.Module) -> bool:
    if attr.startswith('loss_'):
        return True
    if not (attr == 'criterion' or 'loss' in attr):
        return False
    if module_key(child) in INVERSIONS:
        return True
    # A holder of loss_* modules (DDQ's aux_loss_for_dense) is searched, not inverted.
    holder = any(name.startswith('loss_') for name, _ in child.named_children())
    return type(child).__name__.endswith('Loss') and not holder


def find_task_losses(model: nn.Module) -> List[Tuple[nn.Module, str, nn.Module]]:
    """Finds the task-loss submodules of an mmdet or mmseg model.

    A task loss is a child module whose attribute name starts with ``loss_`` (mmdet's
    ``loss_cls``, ``loss_bbox``, ``loss_centerness``, ...; mmseg's ``loss_decode``), or
    an element of such a child when it is a module container (mmseg's ``loss_decode``
    can be an ``nn.ModuleList``). A few heads keep a loss under another name: HTC's
    semantic head (``criterion``), TOOD's head in its first epochs
    (``initial_loss_cls``); such a child counts when its name says loss (``criterion``
    or containing ``loss``) and its class is one (it has an inverse, or its name ends
    with ``Loss`` and it holds no ``loss_*`` modules of its own: DDQ's
    ``aux_loss_for_dense`` is searched like a head). A module a head reads as something
    else (:data:`NOT_TASK_LOSSES`: FreeAnchor's ``loss_bbox``) is not one.

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
            if not _is_task_loss(attr, child) or \
                    attr in NOT_TASK_LOSSES.get(module_key(parent), ()):
                continue
            path = f'{name}.{attr}' if name else attr
            loss_paths.append(path)
            if isinstance(child, (nn.ModuleList, nn.ModuleDict, nn.Sequential)):
                found.extend((child, key, loss) for key, loss in child.named_children())
            else:
                found.append((parent, attr, child))
    return found


DIVERGENCE_INSTEAD = ('Train the augmenter on the divergence instead: TSTDistiller('
                      'augment_loss_weights=dict(student_inverse=0, divergence=1))')


def check_invertible(model: nn.Module) -> None:
    """Raises ``NotImplementedError`` naming what keeps :func:`inverted_task_losses`
    from inverting ``model``'s task losses: no ``loss_*`` submodules and no head whose
    inline losses :mod:`.inline_inverses` inverts, a subclass of such a head, or a loss
    without an inverse."""
    check_no_unlisted_subclass(model)
    task_losses = find_task_losses(model)
    if not task_losses and not inline_loss_heads(model):
        raise NotImplementedError(
            f'the student ({type(model).__name__}) has no task-loss submodules (named '
            'loss_*) and no head listed in tst_mm.distill.inline_inverses.INLINE_INVERSES'
            ": it computes its losses inline, so the augmenter's student-inverse term has "
            'nothing to invert. List its head there with the inverses of its losses, or '
            f'{DIVERGENCE_INSTEAD[0].lower()}{DIVERGENCE_INSTEAD[1:]}')
    for _, _, task_loss in task_losses:
        inversion_of(task_loss)


@contextmanager
def inverted_task_losses(model: nn.Module, reduction: str = 'mean') -> Iterator[nn.Module]:
    """Temporarily replaces every task loss of ``model`` by its inverse.

    Example::

        with inverted_task_losses(student):
            losses = student.loss(inputs, data_samples)  # same keys, inverted values

    Every loss is checked before anything is swapped, so an unsupported loss raises
    with the model untouched; the originals are put back on exit, also on exceptions.

    Args:
        model (nn.Module): An mmdet detector or mmseg segmentor (or any module whose
            losses are ``loss_*`` submodules of a type in :data:`INVERSIONS`, or are
            computed inline by a head in
            :data:`~tst_mm.distill.inline_inverses.INLINE_INVERSES`).
        reduction (str): ``'mean'``, ``'reference'`` or ``'task'`` (module
            docstring). Defaults to ``'mean'``.

    Yields:
        nn.Module: ``model`` itself.
    """
    found = find_task_losses(model)
    if not found and not inline_loss_heads(model):
        raise ValueError(f'found no task-loss submodules (named loss_*) in a '
                         f'{type(model).__name__}; nothing to invert')
    wrappers = [InvertedTaskLoss(loss, reduction) for _, _, loss in found]
    swapped = []
    try:
        for (parent, attr, loss), wrapper in zip(found, wrappers):
            setattr(parent, attr, wrapper)
            swapped.append((parent, attr, loss))
        with inline_losses_inverted(model, reduction):
            yield model
    finally:
        for parent, attr, loss in reversed(swapped):
            setattr(parent, attr, loss)
