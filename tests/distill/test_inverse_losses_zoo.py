"""Inverses of the model-zoo losses beyond the common ones (GFL / TOOD / RTMDet's QFL and
DFL, VFNet, CenterNet, GHM, Seesaw, mmseg's Dice / Focal / OHEM / Lovasz / Boundary /
Tversky): each against a hand computation in float64, a finite-difference gradient
check, and a check that minimising the inverse increases the original loss."""
from contextlib import contextmanager

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F
from mmdet.models.losses import (GHMC, GHMR, AssociativeEmbeddingLoss, CrossEntropyCustomLoss,
                                 DistributionFocalLoss)
from mmdet.models.losses import GaussianFocalLoss, QualityFocalLoss, SeesawLoss, VarifocalLoss
from mmseg.models.losses import BoundaryLoss
from mmseg.models.losses import DiceLoss as SegDice
from mmseg.models.losses import FocalLoss as SegFocal
from mmseg.models.losses import LovaszLoss, OhemCrossEntropy, TverskyLoss

from tst_mm.distill import InvertedTaskLoss, inversion_of


def _inverse_softmax_probs(x, y):
    """The inverse softmax distribution from its definition: ``q_y = 1 - p_y`` and
    ``q_c = p_y / (C - 1)`` for every other class (classes on dim 1)."""
    p = torch.softmax(x.double(), 1)
    onehot = F.one_hot(y, x.size(1)).movedim(-1, 1).double()
    p_y = (p * onehot).sum(1, keepdim=True)
    return onehot * (1 - p_y) + (1 - onehot) * p_y / (x.size(1) - 1), onehot


@contextmanager
def _float64():
    old = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    try:
        yield
    finally:
        torch.set_default_dtype(old)


def _central_differences(fn, x, eps=1e-2):
    """The analytic gradient against central differences in float32, for losses that
    compute in float32 inside (GHM-C and BoundaryLoss cast their targets, mmseg's
    Lovasz its Jaccard increments), where float64's gradcheck cannot resolve the
    differences."""
    x = x.detach().float().requires_grad_(True)
    fn(x).backward()
    numeric = torch.zeros(x.numel())
    with torch.no_grad():
        for i in range(x.numel()):
            step = torch.zeros(x.numel())
            step[i] = eps
            step = step.view_as(x)
            numeric[i] = (fn(x + step) - fn(x - step)) / (2 * eps)
    torch.testing.assert_close(x.grad, numeric.view_as(x), rtol=2e-2, atol=1e-3)


# --------------------------------------------------------------------------- QFL


def _qfl_inverse_elem(x, label, beta=2.0):
    """(N, C): ``-log(1 - p) p^beta`` on the positive, ``-log(p) (1 - p)^beta`` else."""
    p = torch.sigmoid(x.double())
    t = F.one_hot(label, x.size(1) + 1)[:, :x.size(1)].double()  # label C = background
    return -t * torch.log(1 - p) * p**beta - (1 - t) * torch.log(p) * (1 - p)**beta


def _qfl_case():
    torch.manual_seed(0)
    x = torch.randn(6, 3)
    label = torch.tensor([0, 2, 3, 1, 3, 2])
    score = torch.rand(6)  # IoU of the positives; ignored on negatives
    w = torch.tensor([1.0, 1.0, 0.0, 1.0, 1.0, 0.5])  # label weights (0: ignored)
    return x, label, score, w


def test_quality_focal_loss_flips_with_binary_quality():
    x, label, score, w = _qfl_case()
    original = QualityFocalLoss(beta=2.0, loss_weight=2.0)
    assert inversion_of(original) == 'flip_probability_binary_target'
    elem = _qfl_inverse_elem(x, label)
    task = InvertedTaskLoss(original, 'task')(x, (label, score), weight=w, avg_factor=3.0)
    torch.testing.assert_close(task.double(), 2.0 * (elem.sum(1) * w).sum() / 3.0)
    # 'mean': the dense-focal rule, a sum over every anchor x class / (N x C)
    mean = InvertedTaskLoss(original)(x, (label, score), weight=w, avg_factor=3.0)
    torch.testing.assert_close(mean.double(), 2.0 * (elem.sum(1) * w).sum() / 18)
    # activated: probabilities, flipped as 1 - p
    on_probs = InvertedTaskLoss(QualityFocalLoss(activated=True, loss_weight=2.0), 'task')(
        torch.sigmoid(x), (label, score), weight=w, avg_factor=3.0)
    torch.testing.assert_close(on_probs, task, rtol=1e-4, atol=1e-5)
    # the (N, C) soft-target form: the same positives, the same inverse
    soft = torch.zeros(6, 3)
    pos = label < 3
    soft[pos.nonzero()[:, 0], label[pos]] = score[pos]
    tensor = InvertedTaskLoss(original, 'task')(x, soft, weight=w, avg_factor=3.0)
    torch.testing.assert_close(tensor, task)
    # the target the caller passed is left as it was
    assert torch.equal(soft[pos.nonzero()[:, 0], label[pos]], score[pos])


def test_quality_focal_loss_inverse_lowers_a_positive_of_any_quality():
    """With the soft target kept, the flipped QFL would be minimised at p = 1 - y: at
    y = p = 0.5 it would not move, at y < 0.5 it would raise the score. Binarised, it
    lowers every positive's score."""
    for y in (0.2, 0.5, 0.9):
        x = torch.zeros(1, 2, requires_grad=True)  # p = 0.5
        InvertedTaskLoss(QualityFocalLoss(), 'task')(
            x, (torch.tensor([0]), torch.tensor([y]))).backward()
        assert x.grad[0, 0] > 0.1, y  # a descent step lowers the logit


def test_quality_focal_loss_is_finite_when_confident_and_right():
    x = torch.tensor([[30.0, -30.0], [-30.0, -30.0]], requires_grad=True)
    target = (torch.tensor([0, 2]), torch.tensor([0.9, 0.0]))
    loss = InvertedTaskLoss(QualityFocalLoss(), 'task')(x, target)
    loss.backward()
    assert torch.isfinite(loss) and loss > 10  # -log(1 - p) ~ 30 at the positive
    # d/dx of -log(1 - p) p^2 -> 1 as p -> 1 (not saturated), / 2 rows
    assert torch.isfinite(x.grad).all() and x.grad[0, 0] > 0.45


# --------------------------------------------------------------------------- VFL


def test_varifocal_loss_flips_with_binary_quality_and_keeps_iou_weighting():
    torch.manual_seed(0)
    x = torch.randn(5, 3)
    y = torch.zeros(5, 3)
    y[0, 1], y[2, 0], y[3, 2] = 0.8, 0.3, 0.6  # IoU-aware targets of the positives
    w = torch.rand(5, 1)
    p, yd = torch.sigmoid(x.double()), y.double()
    pos = (yd > 0).double()
    for iou_weighted in (True, False):
        original = VarifocalLoss(alpha=0.75, gamma=2.0, iou_weighted=iou_weighted,
                                 loss_weight=2.0)
        assert inversion_of(original) == 'flip_probability_binary_target'
        pos_weight = yd if iou_weighted else pos
        elem = -pos_weight * torch.log(1 - p) - \
            (1 - pos) * 0.75 * (1 - p)**2 * torch.log(p)
        task = InvertedTaskLoss(original, 'task')(x, y, weight=w, avg_factor=2.0)
        torch.testing.assert_close(task.double(), 2.0 * (elem * w).sum() / 2.0)
        mean = InvertedTaskLoss(original)(x, y, avg_factor=2.0)
        torch.testing.assert_close(mean.double(), 2.0 * elem.sum() / 15)
    assert y[0, 1] == 0.8 and (y > 0).sum() == 3  # the caller's target is untouched


# --------------------------------------------------------------------------- DFL


def test_distribution_focal_loss_inverts_each_bin():
    torch.manual_seed(0)
    x = torch.randn(5, 8)
    t = torch.tensor([0.3, 2.0, 6.99, 4.5, 0.0])
    w = torch.rand(5)
    original = DistributionFocalLoss(loss_weight=0.25)
    assert inversion_of(original) == 'inverse_softmax_bins'
    p = torch.softmax(x.double(), 1)
    left = t.long()
    w_left, w_right = (left + 1).double() - t.double(), t.double() - left.double()
    p_left = p.gather(1, left[:, None])[:, 0]
    p_right = p.gather(1, (left + 1).clamp(max=7)[:, None])[:, 0]
    elem = -w_left * torch.log(1 - p_left) - w_right * torch.log(1 - p_right)
    loss = InvertedTaskLoss(original)(x, t, weight=w, avg_factor=4.0)
    torch.testing.assert_close(loss.double(), 0.25 * (elem * w).sum() / 4.0)
    none = InvertedTaskLoss(original)(x, target=t, reduction_override='none')
    torch.testing.assert_close(none.double(), 0.25 * elem)
    # p_left rounds to 1: the inverse is finite (-log(1 - p) ~ 40 - log 7)
    x = torch.full((1, 8), -20.0)
    x[0, 2] = 20.0
    big = InvertedTaskLoss(original)(x.requires_grad_(True), torch.tensor([2.0]))
    big.backward()
    assert torch.isfinite(big) and big.item() > 0.25 * 35
    assert torch.isfinite(x.grad).all()


# --------------------------------------------------------------------- Gaussian


def test_gaussian_focal_loss_flips_the_heatmap():
    torch.manual_seed(0)
    pred = torch.rand(2, 3, 4, 4) * 0.98 + 0.01  # heatmaps, already through a sigmoid
    target = torch.rand(2, 3, 4, 4) * 0.9
    target[0, 1, 2, 2] = target[1, 0, 0, 3] = 1.0  # object centres
    original = GaussianFocalLoss(alpha=2.0, gamma=4.0, loss_weight=1.5)
    assert inversion_of(original) == 'flip_probability'
    p, t = pred.double(), target.double()
    pos = (t == 1).double()
    elem = -torch.log(1 - p) * p**2 * pos - torch.log(p) * (1 - p)**2 * (1 - t)**4
    task = InvertedTaskLoss(original, 'task')(pred, target, avg_factor=2.0)
    torch.testing.assert_close(task.double(), 1.5 * elem.sum() / 2.0)
    mean = InvertedTaskLoss(original)(pred, target, avg_factor=2.0)
    torch.testing.assert_close(mean.double(), 1.5 * elem.sum() / pred.numel())


def test_gaussian_focal_loss_with_pos_inds_mean_over_every_element():
    """CenterNet-update: positives passed as indices, reduced apart from negatives."""
    torch.manual_seed(0)
    pred = torch.rand(10, 3) * 0.98 + 0.01
    target = torch.rand(10, 3) * 0.9
    pos_inds, pos_labels = torch.tensor([1, 7]), torch.tensor([2, 0])
    original = GaussianFocalLoss()
    p, t = pred.double(), target.double()
    pp = p[pos_inds, pos_labels]
    pos_sum = (-torch.log(1 - pp) * pp**2).sum()
    neg_sum = (-torch.log(p) * (1 - p)**2 * (1 - t)**4).sum()
    kw = dict(pos_inds=pos_inds, pos_labels=pos_labels, avg_factor=2.0)
    task = InvertedTaskLoss(original, 'task')(pred, target, **kw)
    torch.testing.assert_close(task.double(), (pos_sum + neg_sum) / 2.0)
    mean = InvertedTaskLoss(original)(pred, target, **kw)
    torch.testing.assert_close(mean.double(), (pos_sum + neg_sum) / 30)


# -------------------------------------------------------------------------- GHM


def _ghm_weights(g, valid, bins=10):
    """GHM's gradient-density weights, from the paper: ``tot / (count of the element's
    bin * number of non-empty bins)``; the last edge is open."""
    idx = (g * bins).floor().clamp(max=bins - 1).long()
    counts = torch.bincount(idx[valid], minlength=bins).double()
    weights = valid.sum() / counts[idx].clamp(min=1) / (counts > 0).sum()
    return weights * valid


@pytest.mark.parametrize('momentum', [0.0, 0.75])
def test_ghmc_on_the_flipped_problem_with_its_own_density(momentum):
    torch.manual_seed(0)
    x = torch.randn(6, 4) * 3
    label = torch.tensor([0, 4, 2, 4, 1, 3])  # 4 = background
    lw = torch.tensor([1.0, 1.0, 1.0, 0.0, 1.0, 1.0])
    original = GHMC(bins=10, momentum=momentum, loss_weight=2.0)
    if momentum:
        original(x, label, lw)  # a task step: a running histogram to keep
    state = original.acc_sum.clone() if momentum else None
    assert inversion_of(original) == 'flip_probability'
    loss = InvertedTaskLoss(original)(x, label, lw)
    q = 1 - torch.sigmoid(x.double())  # the flipped probability
    t = F.one_hot(label, 5)[:, :4].double()
    valid = lw[:, None].expand(6, 4) > 0
    weights = _ghm_weights((q - t).abs(), valid)
    bce = -(t * torch.log(q) + (1 - t) * torch.log(1 - q))
    torch.testing.assert_close(loss.double(), 2.0 * (bce * weights).sum() / valid.sum())
    if momentum:  # the task's running histogram is as it was
        assert original.momentum == momentum and torch.equal(original.acc_sum, state)


def test_ghmr_is_negated_and_keeps_its_running_histogram():
    torch.manual_seed(0)
    pred, target = torch.randn(6, 4), torch.randn(6, 4)
    lw = torch.ones(6, 4)
    lw[0] = 0
    original = GHMR(mu=0.02, momentum=0.75)
    original(pred, target, lw)
    state = original.acc_sum.clone()
    assert inversion_of(original) == 'negate'
    inverted = InvertedTaskLoss(original)(pred, target, lw)
    assert torch.equal(original.acc_sum, state)
    expected = original(pred, target, lw)  # one more task step, from the same state
    torch.testing.assert_close(inverted, -expected)
    # by hand, momentum 0: Authentic Smooth L1 with the gradient-density weights
    d = (pred - target).double()
    asl1 = torch.sqrt(d * d + 0.02**2) - 0.02
    weights = _ghm_weights((d / torch.sqrt(d * d + 0.02**2)).abs(), lw > 0)
    torch.testing.assert_close(InvertedTaskLoss(GHMR())(pred, target, lw).double(),
                               -(asl1 * weights).sum() / (lw > 0).sum())


# ------------------------------------------------------- associative embedding


# One image, two objects, 1-d embeddings: (top-left, bottom-right) corners at
# [[tl_y, tl_x], [br_y, br_x]].
AE_MATCH = [[[[0, 0], [1, 1]], [[0, 1], [1, 0]]]]


def test_associative_embedding_pull_and_push_are_negated():
    tl = torch.tensor([[[[0.2, 1.0], [0.0, 0.0]]]])
    br = torch.tensor([[[[0.0, 0.0], [1.4, 0.6]]]])
    # means 0.4 and 1.2: pull (0.2^2 x 4) / 2 objects = 0.08; push: margin 1 - |0.4 -
    # 1.2| = 0.2 for both ordered pairs, / (2 x 1) = 0.2; both weighted 0.25
    original = AssociativeEmbeddingLoss()
    assert inversion_of(original) == 'negate'
    pull, push = InvertedTaskLoss(original)(tl, br, AE_MATCH)
    torch.testing.assert_close(pull, torch.tensor(-0.02))
    torch.testing.assert_close(push, torch.tensor(-0.05))


# ------------------------------------------------------------------------ Seesaw


def test_seesaw_inverts_classes_and_objectness_and_keeps_class_counts():
    torch.manual_seed(0)
    num_classes = 4
    x = torch.randn(7, num_classes + 2)
    labels = torch.tensor([0, 3, 4, 1, 4, 2, 0])  # 4 = background
    # p = q = 0: no re-weighting, so by hand both parts are -log(1 - p_y)
    plain = SeesawLoss(p=0.0, q=0.0, num_classes=num_classes, loss_weight=2.0)
    assert inversion_of(plain) == 'inverse_softmax_split'
    loss = InvertedTaskLoss(plain)(x, labels)
    pos = labels < num_classes
    p_cls = torch.softmax(x[:, :-2].double(), 1)[pos, labels[pos]]
    p_obj = torch.softmax(x[:, -2:].double(), 1)[torch.arange(7), (~pos).long()]
    torch.testing.assert_close(loss['loss_cls_classes'].double(),
                               2.0 * -torch.log(1 - p_cls).mean())
    torch.testing.assert_close(loss['loss_cls_objectness'].double(),
                               2.0 * -torch.log(1 - p_obj).mean())
    # with the re-weighting: finite, and the class counts follow the task only
    seesaw = SeesawLoss(num_classes=num_classes)
    seesaw(x, labels)
    counts = seesaw.cum_samples.clone()
    xg = x.clone().requires_grad_(True)
    out = InvertedTaskLoss(seesaw)(xg, labels)
    sum(out.values()).backward()
    assert torch.equal(seesaw.cum_samples, counts)
    assert all(torch.isfinite(v) for v in out.values()) and torch.isfinite(xg.grad).all()


def test_cross_entropy_custom_loss():
    torch.manual_seed(0)
    x, y = torch.randn(6, 4), torch.tensor([0, 3, 1, 2, 3, 0])  # 3 classes + background
    original = CrossEntropyCustomLoss(num_classes=3)
    assert inversion_of(original) == 'inverse_softmax'
    p_y = torch.softmax(x.double(), 1)[torch.arange(6), y]
    torch.testing.assert_close(InvertedTaskLoss(original)(x, y).double(),
                               -torch.log(1 - p_y).mean())
    sigmoid = CrossEntropyCustomLoss(num_classes=3, use_sigmoid=True)
    assert inversion_of(sigmoid) == 'flip_probability'


# ------------------------------------------------------------------------- mmseg


def _seg_case(num_classes=4, ignore=True):
    torch.manual_seed(0)
    x = torch.randn(2, num_classes, 3, 4)
    y = torch.randint(0, num_classes, (2, 3, 4))
    if ignore:
        y[0, 0, :2] = 255
    return x, y


def _vnet_dice(p, t, eps=1e-3):
    p, t = p.flatten(1), t.flatten(1)
    return 1 - 2 * (p * t).sum(1) / ((p * p).sum(1) + eps + (t * t).sum(1) + eps)


def test_seg_dice_loss():
    x, y = _seg_case()
    onehot = F.one_hot(y.clamp(max=4), 5)[..., :4].movedim(-1, 1).double()  # 255: zeros
    sigmoid = SegDice(loss_weight=2.0)  # use_sigmoid=True is mmseg's default
    assert inversion_of(sigmoid) == 'flip_probability'
    torch.testing.assert_close(InvertedTaskLoss(sigmoid)(x, y).double(),
                               2.0 * _vnet_dice(1 - torch.sigmoid(x.double()), onehot).mean())
    probs = InvertedTaskLoss(SegDice(activate=False, loss_weight=2.0))(torch.sigmoid(x), y)
    torch.testing.assert_close(probs, InvertedTaskLoss(sigmoid)(x, y), rtol=1e-5, atol=1e-6)
    # softmax: Dice on the inverse softmax distribution (no ignored pixels here, whose
    # inverse probabilities are arbitrary and, as the original's, in the denominator)
    x, y = _seg_case(ignore=False)
    softmax = SegDice(use_sigmoid=False)
    assert inversion_of(softmax) == 'inverse_softmax'
    q, onehot = _inverse_softmax_probs(x, y)
    torch.testing.assert_close(InvertedTaskLoss(softmax)(x, y).double(),
                               _vnet_dice(q, onehot).mean())


def test_seg_focal_loss_on_flipped_probability():
    x, y = _seg_case(ignore=False)
    onehot = F.one_hot(y, 4).movedim(-1, 1).float()  # mmseg's CPU path wants one-hot
    original = SegFocal(gamma=2.0, alpha=0.5, loss_weight=2.0)
    assert inversion_of(original) == 'flip_probability'
    q = 1 - torch.sigmoid(x.double())  # the flipped probability
    t = onehot.double()
    elem = -(0.5 * t * (1 - q)**2 * torch.log(q) + 0.5 * (1 - t) * q**2 * torch.log(1 - q))
    torch.testing.assert_close(InvertedTaskLoss(original)(x, onehot).double(),
                               2.0 * elem.mean())


def test_ohem_cross_entropy_keeps_the_pixels_the_student_is_sure_of():
    x, y = _seg_case()
    cw = [1.0, 2.0, 0.5, 1.0]
    original = OhemCrossEntropy(thres=0.7, min_kept=5, class_weight=cw, loss_weight=2.0)
    assert inversion_of(original) == 'inverse_softmax'
    loss = InvertedTaskLoss(original)(x, y)
    valid = y != 255
    p_y = torch.softmax(x.double(), 1).gather(1, y.clamp(max=3)[:, None])[:, 0]
    q_y = (1 - p_y)[valid]  # the inverse problem's probability of the label
    elem = (-torch.log(1 - p_y) * torch.tensor(cw, dtype=torch.float64)[y.clamp(max=3)])
    elem = elem[valid]
    threshold = max(q_y.sort().values[5].item(), 0.7)
    kept = q_y < threshold
    assert 0 < kept.sum() < valid.sum()
    torch.testing.assert_close(loss.double(), 2.0 * elem[kept].mean())


def _lovasz_extension(errors, fg):
    """Sorted errors dotted with the Jaccard loss's increments (Berman et al., Alg. 1)."""
    errors, perm = errors.sort(descending=True)
    fg = fg[perm]
    inter = fg.sum() - fg.cumsum(0)
    union = fg.sum() + (1 - fg).cumsum(0)
    jaccard = 1 - inter / union
    jaccard[1:] = jaccard[1:] - jaccard[:-1].clone()
    return (errors * jaccard).sum()


def test_lovasz_softmax_on_the_inverse_distribution():
    x, y = _seg_case()
    original = LovaszLoss(loss_type='multi_class', reduction='none', loss_weight=2.0)
    assert inversion_of(original) == 'inverse_softmax'
    loss = InvertedTaskLoss(original)(x, y, ignore_index=255)
    q, _ = _inverse_softmax_probs(x, y.clamp(max=3))
    valid = (y != 255).flatten()
    q = q.movedim(1, -1).reshape(-1, 4)[valid]
    labels = y.flatten()[valid]
    per_class = [_lovasz_extension(((labels == c).double() - q[:, c]).abs(),
                                   (labels == c).double())
                 for c in range(4) if (labels == c).any()]  # 'present' classes
    torch.testing.assert_close(loss.double(), 2.0 * torch.stack(per_class).mean())


def test_lovasz_hinge_on_negated_logits():
    torch.manual_seed(0)
    x = torch.randn(2, 3, 4)
    y = torch.randint(0, 2, (2, 3, 4))
    original = LovaszLoss(loss_type='binary', reduction='none')
    assert inversion_of(original) == 'flip_probability'
    loss = InvertedTaskLoss(original)(x, y, ignore_index=255)
    sign = 2 * y.flatten().double() - 1
    errors = F.relu(1 + x.flatten().double() * sign)  # the hinge of -x
    torch.testing.assert_close(loss.double(), _lovasz_extension(errors, y.flatten().double()))


def test_boundary_loss_flips():
    torch.manual_seed(0)
    x = torch.randn(2, 1, 4, 5)
    t = (torch.rand(2, 4, 5) > 0.7).float()
    original = BoundaryLoss(loss_weight=3.0)
    assert inversion_of(original) == 'flip_probability'
    p, td = torch.sigmoid(x.double()).flatten(), t.double().flatten()
    n_pos, n_neg = td.sum(), (1 - td).sum()
    weight = td * n_neg / td.numel() + (1 - td) * n_pos / td.numel()
    bce = -(td * torch.log(1 - p) + (1 - td) * torch.log(p))
    torch.testing.assert_close(InvertedTaskLoss(original)(x, t).double(),
                               3.0 * (weight * bce).mean())


def test_torch_bce_with_logits_flips_and_keeps_pos_weight():
    """SCNet's global context head: ``nn.BCEWithLogitsLoss`` on multi-label targets."""
    torch.manual_seed(0)
    x, t = torch.randn(3, 4), (torch.rand(3, 4) > 0.5).float()
    pos_weight = torch.tensor([1.0, 2.0, 0.5, 3.0])
    original = nn.BCEWithLogitsLoss(pos_weight=pos_weight)
    assert inversion_of(original) == 'flip_probability'
    p, td = torch.sigmoid(x.double()), t.double()
    elem = -(pos_weight.double() * td * torch.log(1 - p) + (1 - td) * torch.log(p))
    torch.testing.assert_close(InvertedTaskLoss(original)(x, t).double(), elem.mean())


def test_tversky_loss_on_the_inverse_distribution():
    x, y = _seg_case()
    original = TverskyLoss(alpha=0.3, beta=0.7, class_weight=[1.0, 2.0, 1.0, 0.5])
    assert inversion_of(original) == 'inverse_softmax'
    loss = InvertedTaskLoss(original)(x, y)
    q, onehot = _inverse_softmax_probs(x, y.clamp(max=3))
    valid = (y != 255).double()[:, None]
    tp = (q * onehot * valid).flatten(2).sum(2)  # (N, C)
    fp = (q * (1 - onehot) * valid).flatten(2).sum(2)
    fn = ((1 - q) * onehot * valid).flatten(2).sum(2)
    per_class = 1 - (tp + 1) / (tp + 0.3 * fp + 0.7 * fn + 1)
    cw = torch.tensor([1.0, 2.0, 1.0, 0.5], dtype=torch.float64)
    torch.testing.assert_close(loss.double(), (per_class.mean(0) * cw).sum() / 4)


# ------------------------------------------------- gradients and direction, all losses


def _cases():
    """name -> (original loss, prediction, call(loss, prediction) -> scalar, lr)."""
    x, label, score, w = _qfl_case()
    vfl_target = torch.zeros(5, 3)
    vfl_target[0, 1], vfl_target[2, 0], vfl_target[3, 2] = 0.8, 0.3, 0.6
    heat = torch.rand(1, 2, 4, 4, generator=torch.Generator().manual_seed(1)) * 0.9
    heat[0, 0, 1, 1] = heat[0, 1, 2, 3] = 1.0
    seg_x, seg_y = _seg_case()
    seg_x3, seg_y3 = _seg_case(num_classes=3)
    torch.manual_seed(0)
    return {
        'qfl': (QualityFocalLoss(), x,
                lambda f, p: f(p, (label, score), weight=w, avg_factor=3.0), 5.0),
        'vfl': (VarifocalLoss(), torch.randn(5, 3),
                lambda f, p: f(p, vfl_target, avg_factor=2.0), 5.0),
        'dfl': (DistributionFocalLoss(), torch.randn(4, 6),
                lambda f, p: f(p, torch.tensor([0.3, 2.0, 4.5, 1.7])), 1.0),
        # the prediction is a logit mapped to a heatmap inside the call
        'gaussian': (GaussianFocalLoss(), torch.randn(1, 2, 4, 4),
                     lambda f, p: f(torch.sigmoid(p), heat, avg_factor=2.0), 20.0),
        'ghmc': (GHMC(), torch.randn(6, 3),
                 lambda f, p: f(p, torch.tensor([0, 3, 2, 1, 3, 0]), torch.ones(6)), 1.0),
        'ghmr': (GHMR(), torch.randn(5, 4),
                 lambda f, p: f(p, torch.zeros(5, 4), torch.ones(5, 4)), 0.5),
        'seesaw': (SeesawLoss(num_classes=3, return_dict=False), torch.randn(6, 5),
                   lambda f, p: f(p, torch.tensor([0, 3, 2, 1, 3, 0])), 1.0),
        # Seesaw's compensation factor is computed from detached scores, which the
        # finite differences would see
        'seesaw_mitigation': (SeesawLoss(q=0.0, num_classes=3, return_dict=False),
                              torch.randn(6, 5),
                              lambda f, p: f(p, torch.tensor([0, 3, 2, 1, 3, 0])), 1.0),
        'ce_custom': (CrossEntropyCustomLoss(num_classes=3), torch.randn(6, 4),
                      lambda f, p: f(p, torch.tensor([0, 3, 2, 1, 3, 0])), 1.0),
        'seg_dice': (SegDice(), seg_x, lambda f, p: f(p, seg_y), 20.0),
        'seg_dice_softmax': (SegDice(use_sigmoid=False), seg_x,
                             lambda f, p: f(p, seg_y), 20.0),
        'seg_focal': (SegFocal(), seg_x,
                      lambda f, p: f(p, F.one_hot(seg_y.clamp(max=3), 4).movedim(-1, 1)
                                     .to(p)), 20.0),
        'ohem': (OhemCrossEntropy(min_kept=5), seg_x, lambda f, p: f(p, seg_y), 2.0),
        'lovasz_softmax': (LovaszLoss(reduction='none'), seg_x,
                           lambda f, p: f(p, seg_y, ignore_index=255), 20.0),
        'lovasz_hinge': (LovaszLoss(loss_type='binary', reduction='none'),
                         seg_x[:, 0], lambda f, p: f(p, seg_y.clamp(max=1)), 2.0),
        'boundary': (BoundaryLoss(), seg_x[:, :1],
                     lambda f, p: f(p, (seg_y3 == 1).float()), 5.0),
        'tversky': (TverskyLoss(), seg_x3, lambda f, p: f(p, seg_y3), 20.0),
        'torch_bce': (nn.BCEWithLogitsLoss(pos_weight=torch.tensor([1.0, 2.0, 0.5])),
                      torch.randn(4, 3),
                      lambda f, p: f(p, torch.tensor([[1.0, 0, 1], [0, 0, 1], [1, 1, 0],
                                                      [0, 1, 0]])), 5.0),
        # channel 0: top-left embeddings, channel 1: bottom-right
        'associative_embedding': (
            AssociativeEmbeddingLoss(), torch.randn(1, 2, 2, 2) * 0.3,
            lambda f, p: sum(f(p[:, :1], p[:, 1:], AE_MATCH)), 1.0),
    }


_NAMES = list(_cases())


@pytest.mark.parametrize('name', [n for n in _NAMES if n != 'seesaw'])
def test_inverse_gradient_matches_finite_differences(name):
    if name in ('ghmc', 'boundary', 'lovasz_softmax', 'lovasz_hinge'):
        original, x, call, _ = _cases()[name]
        _central_differences(lambda p: call(InvertedTaskLoss(original), p), x)
        return
    with _float64():  # every tensor of the case in float64, targets included
        original, x, call, _ = _cases()[name]
        inverted = InvertedTaskLoss(original).double()
        x = x.detach().requires_grad_(True)
        assert torch.autograd.gradcheck(lambda p: call(inverted, p), (x, ), eps=1e-6,
                                        atol=1e-5, rtol=1e-3)


@pytest.mark.parametrize('name', _NAMES)
def test_minimising_the_inverse_increases_the_original(name):
    original, x, call, lr = _cases()[name]
    inverted = InvertedTaskLoss(original)
    x = x.clone().requires_grad_(True)
    before = call(original, x).item()
    opt = torch.optim.SGD([x], lr=lr)
    for _ in range(30):
        opt.zero_grad()
        value = call(inverted, x)
        assert torch.isfinite(value)
        value.backward()
        opt.step()
    after = call(original, x).item()
    assert after > before + 1e-2, (before, after)
