"""Numerical checks of each inverse against a hand computation, gradient signs and the
swap/restore behaviour of ``inverted_task_losses`` on toy modules."""
import math

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from mmdet.models.losses import CrossEntropyLoss as DetCE
from mmdet.models.losses import DiceLoss, FocalLoss, GIoULoss, IoULoss, L1Loss, SmoothL1Loss
from mmseg.models.losses import CrossEntropyLoss as SegCE
from tst_mm.distill import (InvertedTaskLoss, find_task_losses, inverse_softmax_logits,
                            inversion_of, inverted_task_losses)


def _inverse_softmax_ce(x, y, ignore=None):
    """-log(1 - p_y) in float64 (0 where ignored), straight from the definition."""
    p = torch.softmax(x.double(), 1)
    valid = torch.ones_like(y, dtype=torch.bool) if ignore is None else y != ignore
    p_y = p.gather(1, y.clamp(0, x.size(1) - 1).unsqueeze(1)).squeeze(1)
    return -torch.log(1 - p_y) * valid, valid


def test_inverse_softmax_logits_definition_and_stability():
    torch.manual_seed(0)
    x, y = torch.randn(7, 5, dtype=torch.float64), torch.randint(0, 5, (7,))
    z = inverse_softmax_logits(x, y)
    torch.testing.assert_close(F.cross_entropy(z, y, reduction='none'),
                               _inverse_softmax_ce(x, y)[0])
    torch.testing.assert_close(z.logsumexp(1), x.logsumexp(1))
    # p_y rounds to 1 in float32: the naive -log(1 - p_y) is inf, the inverse is not.
    x = torch.tensor([[300.0, 0.0, 0.0, 0.0]], requires_grad=True)
    loss = F.cross_entropy(inverse_softmax_logits(x, torch.tensor([0])), torch.tensor([0]))
    assert torch.isinf(-torch.log(1 - torch.softmax(x, 1)[0, 0]))
    assert math.isclose(loss.item(), 300 - math.log(3), rel_tol=1e-6)
    loss.backward()
    assert torch.isfinite(x.grad).all()


def test_inverse_softmax_logits_rejects_bad_inputs():
    with pytest.raises(ValueError, match='soft or one-hot'):
        inverse_softmax_logits(torch.randn(3, 4), torch.rand(3, 4))
    with pytest.raises(ValueError, match='1 class'):
        inverse_softmax_logits(torch.randn(3, 1), torch.zeros(3, dtype=torch.long))


@pytest.mark.parametrize('case', ['weight_avg_factor', 'class_weight_sum', 'ignore',
                                  'none'])
def test_mmdet_softmax_cross_entropy(case):
    torch.manual_seed(0)
    x, y = torch.randn(8, 4), torch.randint(0, 4, (8,))
    w = torch.rand(8)
    cw = [0.5, 1.0, 2.0, 3.0]
    elem, valid = _inverse_softmax_ce(x, y)
    if case == 'weight_avg_factor':
        loss = InvertedTaskLoss(DetCE(loss_weight=0.7))(x, y, w, avg_factor=3.0)
        expected = 0.7 * (elem * w).sum() / 3.0
    elif case == 'class_weight_sum':
        loss = InvertedTaskLoss(DetCE(class_weight=cw))(x, y, w, reduction_override='sum')
        expected = (elem * torch.tensor(cw, dtype=torch.float64)[y] * w).sum()
    elif case == 'ignore':
        y[:3] = 2
        elem, valid = _inverse_softmax_ce(x, y, ignore=2)
        loss = InvertedTaskLoss(DetCE(ignore_index=2, avg_non_ignore=True))(x, y)
        expected = elem.sum() / valid.sum()
    else:
        loss = InvertedTaskLoss(DetCE())(x, y, w, reduction_override='none')
        expected = elem * w
    torch.testing.assert_close(loss.double(), expected, rtol=1e-5, atol=1e-6)


def test_mmdet_sigmoid_cross_entropy_flips_probabilities():
    torch.manual_seed(0)
    x, y, w = torch.randn(6, 3), torch.tensor([0, 1, 2, 3, 3, 1]), torch.rand(6)
    loss = InvertedTaskLoss(DetCE(use_sigmoid=True))(x, y, w, avg_factor=4.0)
    p = torch.sigmoid(x.double())
    t = F.one_hot(y, 4)[:, :3].double()  # label 3 = background
    elem = -(t * torch.log(1 - p) + (1 - t) * torch.log(p))
    torch.testing.assert_close(loss.double(), (elem * w[:, None]).sum() / 4.0)


def _inverse_focal(x, y, gamma=2.0, alpha=0.25):
    """Focal loss on the flipped probability, element-wise, straight from the formula."""
    q = 1 - torch.sigmoid(x.double())  # the flipped probability
    t = F.one_hot(y, x.size(1) + 1)[:, :x.size(1)].double()  # label C = background
    return -(alpha * t * (1 - q)**gamma * torch.log(q) +
             (1 - alpha) * (1 - t) * q**gamma * torch.log(1 - q))


def test_focal_loss_on_flipped_probability_task_reduction():
    torch.manual_seed(0)
    x, y, w = torch.randn(10, 4), torch.randint(0, 5, (10,)), torch.rand(10)
    loss = InvertedTaskLoss(FocalLoss(gamma=2.0, alpha=0.25, loss_weight=2.0),
                            reduction='task')(x, y, w, avg_factor=5.0)
    elem = _inverse_focal(x, y)
    torch.testing.assert_close(loss.double(), 2.0 * (elem * w[:, None]).sum() / 5.0)
    # The activated variant takes probabilities and flips them the same way.
    on_probs = InvertedTaskLoss(FocalLoss(activated=True, loss_weight=2.0),
                                reduction='task')(torch.sigmoid(x), y, w, avg_factor=5.0)
    torch.testing.assert_close(on_probs, loss, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize('keywords', [False, True])
def test_focal_loss_mean_reduction_averages_every_anchor_and_class(keywords):
    """The reference's reduction: a mean over all anchors x classes, not a sum divided
    by the number of positives; ignored anchors (weight 0) add nothing."""
    torch.manual_seed(0)
    x, y = torch.randn(10, 4), torch.randint(0, 5, (10,))
    w = torch.ones(10)
    w[:3] = 0  # ignored anchors
    inverse = InvertedTaskLoss(FocalLoss(loss_weight=2.0))  # 'mean' is the default
    loss = inverse(pred=x, target=y, weight=w, avg_factor=2.0) if keywords \
        else inverse(x, y, w, avg_factor=2.0)
    elem = _inverse_focal(x, y)
    torch.testing.assert_close(loss.double(), 2.0 * (elem * w[:, None]).sum() / 40)
    # mmdet's RetinaHead calls it positionally, with avg_factor as a keyword
    assert 'reduction=' in repr(inverse) and inverse.reduction == 'mean'


@pytest.mark.parametrize('how', ['module', 'override'])
def test_element_wise_calls_stay_element_wise_under_every_reduction(how):
    """FSAF configures its focal loss with reduction='none' and re-weights the
    per-anchor losses itself: the inverse must hand back per-element values too."""
    torch.manual_seed(0)
    x, y = torch.randn(10, 4), torch.randint(0, 5, (10,))
    if how == 'module':
        inverse = InvertedTaskLoss(FocalLoss(loss_weight=2.0, reduction='none'))
        loss = inverse(x, y)
    else:
        inverse = InvertedTaskLoss(FocalLoss(loss_weight=2.0))
        loss = inverse(x, y, reduction_override='none')
    assert loss.shape == x.shape
    torch.testing.assert_close(loss.double(), 2.0 * _inverse_focal(x, y))


def _dice(p, t, eps=1e-3):
    """1 - the V-Net Dice coefficient per sample (eps in each squared sum, as mmdet)."""
    p, t = p.flatten(1).double(), t.flatten(1).double()
    return 1 - 2 * (p * t).sum(1) / ((p * p).sum(1) + (t * t).sum(1) + 2 * eps)


def test_dice_loss_on_flipped_probability():
    torch.manual_seed(0)
    x, t = torch.randn(3, 7, 7), (torch.rand(3, 7, 7) > 0.5).float()
    loss = InvertedTaskLoss(DiceLoss(loss_weight=2.0))(x, t)
    torch.testing.assert_close(loss.double(), 2.0 * _dice(1 - torch.sigmoid(x), t).mean())
    # activate=False: the predictions are probabilities, flipped as 1 - p
    on_probs = InvertedTaskLoss(DiceLoss(activate=False, loss_weight=2.0))(
        torch.sigmoid(x), t)
    torch.testing.assert_close(on_probs, loss, rtol=1e-5, atol=1e-6)
    with pytest.raises(NotImplementedError, match='use_sigmoid=False'):
        InvertedTaskLoss(DiceLoss(use_sigmoid=False))


def _boxes(n, seed):
    g = torch.Generator().manual_seed(seed)
    xy = torch.rand(n, 2, generator=g) * 20
    return torch.cat([xy, xy + 5 + torch.rand(n, 2, generator=g) * 20], 1)


@pytest.mark.parametrize('make', [L1Loss, lambda: SmoothL1Loss(beta=0.5), IoULoss,
                                  lambda: IoULoss(mode='log'), GIoULoss])
def test_regression_losses_are_negated(make):
    pred, target, w = _boxes(6, 0), _boxes(6, 1), torch.rand(6)
    original = make()
    if isinstance(original, (L1Loss, SmoothL1Loss)):  # element-wise weights
        w = w[:, None].expand(6, 4).contiguous()
    inverted = InvertedTaskLoss(original)(pred, target, w, avg_factor=3.0)
    expected = original(pred, target, w, avg_factor=3.0)
    assert expected.item() > 0
    torch.testing.assert_close(inverted, -expected)
    if isinstance(original, L1Loss):  # and by hand once
        torch.testing.assert_close(inverted, -((pred - target).abs() * w).sum() / 3.0)


@pytest.mark.parametrize('avg_non_ignore', [False, True])
def test_mmseg_cross_entropy_per_pixel(avg_non_ignore):
    torch.manual_seed(0)
    x = torch.randn(2, 19, 5, 6)
    y = torch.randint(0, 19, (2, 5, 6))
    y[:, 0] = 255
    w = (torch.rand(2, 5, 6) > 0.3).float()  # e.g. OHEM's 0/1 pixel weights
    original = SegCE(avg_non_ignore=avg_non_ignore)
    loss = InvertedTaskLoss(original, reduction='task')(x, y, weight=w, ignore_index=255)
    elem, valid = _inverse_softmax_ce(x, y, ignore=255)
    count = valid.sum() if avg_non_ignore else y.numel()
    torch.testing.assert_close(loss.double(), (elem * w).sum() / count)
    # The default keeps the per-pixel mean; the reference's reduction averages
    # -log(1 - p_y) on one-hot targets over N x C x H x W: divided by the 19 classes.
    default = InvertedTaskLoss(original)(x, y, weight=w, ignore_index=255)
    torch.testing.assert_close(default, loss)
    reference = InvertedTaskLoss(original, 'reference')(x, y, weight=w, ignore_index=255)
    torch.testing.assert_close(reference.double(), (elem * w).sum() / count / 19)


def test_mmseg_cross_entropy_class_weight():
    torch.manual_seed(0)
    x, y = torch.randn(1, 3, 4, 4), torch.randint(0, 3, (1, 4, 4))
    cw = torch.tensor([1.0, 2.0, 0.5], dtype=torch.float64)
    loss = InvertedTaskLoss(SegCE(class_weight=cw.tolist()))(x, y)
    elem, _ = _inverse_softmax_ce(x, y)
    torch.testing.assert_close(loss.double(), (elem * cw[y]).sum() / cw[y].sum())


def _sgd(param, objective, steps=30, lr=0.1):
    opt = torch.optim.SGD([param], lr=lr)
    for _ in range(steps):
        opt.zero_grad()
        objective().backward()
        opt.step()


@pytest.mark.parametrize('name', ['softmax_ce', 'sigmoid_ce', 'focal', 'l1', 'giou',
                                  'seg_ce', 'dice'])
def test_minimising_the_inverse_increases_the_original(name):
    torch.manual_seed(0)
    kwargs, lr = {}, 0.1
    if name == 'softmax_ce':
        loss, x, target = DetCE(), torch.randn(6, 4), torch.randint(0, 4, (6,))
    elif name == 'sigmoid_ce':
        loss, x = DetCE(use_sigmoid=True), torch.randn(6, 3)
        target = torch.randint(0, 4, (6,))
    elif name == 'focal':
        # The modulating factor and alpha make focal gradients small.
        loss, x, target = FocalLoss(), torch.randn(6, 3), torch.randint(0, 4, (6,))
        lr = 2.0
    elif name == 'l1':
        loss, x, target = L1Loss(), torch.randn(6, 4), torch.randn(6, 4)
    elif name == 'giou':
        # Box coordinates are in pixels, where the GIoU gradient is small.
        loss, x, target, lr = GIoULoss(), _boxes(6, 0), _boxes(6, 1), 20.0
    elif name == 'dice':
        loss, x = DiceLoss(), torch.randn(4, 6, 6)
        target, lr = (torch.rand(4, 6, 6) > 0.5).float(), 2.0
    else:
        loss, x = SegCE(avg_non_ignore=True), torch.randn(1, 5, 4, 4)
        target = torch.randint(0, 5, (1, 4, 4))
        target[0, 0] = 255
        kwargs = dict(ignore_index=255)
    x.requires_grad_(True)
    inverted = InvertedTaskLoss(loss)
    before = loss(x, target, **kwargs).item()
    _sgd(x, lambda: inverted(x, target, **kwargs), lr=lr)
    after = loss(x, target, **kwargs).item()
    assert after > before + 1e-2, (before, after)


class ToyHead(nn.Module):

    def __init__(self):
        super().__init__()
        self.conv = nn.Linear(4, 3)
        self.loss_cls = DetCE()
        self.loss_bbox = L1Loss()
        self.loss_decode = nn.ModuleList([SegCE(loss_name='loss_a'),
                                          SegCE(loss_name='loss_b')])
        self.not_a_loss = nn.Identity()


def test_context_manager_swaps_and_restores():
    model = nn.Sequential(ToyHead())
    head = model[0]
    originals = (head.loss_cls, head.loss_bbox, head.loss_decode[0], head.loss_decode[1])
    with inverted_task_losses(model) as same:
        assert same is model
        assert isinstance(head.loss_cls, InvertedTaskLoss)
        assert head.loss_cls.inversion == 'inverse_softmax'
        assert head.loss_bbox.inversion == 'negate'
        assert [m.loss_name for m in head.loss_decode] == ['loss_a', 'loss_b']
        assert head.loss_cls.use_sigmoid is False  # attributes are forwarded
        assert isinstance(head.not_a_loss, nn.Identity)
    assert (head.loss_cls, head.loss_bbox, head.loss_decode[0],
            head.loss_decode[1]) == originals
    with pytest.raises(RuntimeError, match='boom'):
        with inverted_task_losses(model):
            raise RuntimeError('boom')
    assert head.loss_cls is originals[0] and head.loss_decode[1] is originals[3]


class HolderLoss(nn.Module):

    def __init__(self):
        super().__init__()
        self.loss_cls = FocalLoss()


def test_losses_under_other_names_are_found():
    """HTC's semantic head keeps its loss as ``criterion``, TOOD's head as
    ``initial_loss_cls`` in its first epochs: both are task losses; a module that is not
    a loss is not one because of its name."""
    head = nn.Module()
    head.criterion = DetCE()
    head.initial_loss_cls = FocalLoss()
    head.aux_loss_gate = nn.Linear(2, 2)  # 'loss' in the name, not a loss
    head.criterion_net = nn.Identity()
    head.aux_loss_for_dense = HolderLoss()  # DDQ's DDQAuxLoss: searched, not inverted
    found = {attr for _, attr, _ in find_task_losses(head)}
    assert found == {'criterion', 'initial_loss_cls', 'loss_cls'}


def test_htc_semantic_head_loss_is_inverted():
    from mmdet.models.roi_heads.mask_heads import FusedSemanticHead
    from mmengine.registry import DefaultScope
    torch.manual_seed(0)
    with DefaultScope.overwrite_default_scope('mmdet'):  # its loss is built by name
        head = FusedSemanticHead(num_ins=2, fusion_level=1, num_convs=1, in_channels=4,
                                 conv_out_channels=4, num_classes=3)
    logits = torch.randn(2, 3, 8, 8)
    # A correct prediction; the head scales the labels by 1/8 to the logits' size.
    labels = F.interpolate(logits.argmax(1, keepdim=True).float(), scale_factor=8).long()
    plain = head.loss(logits, labels)
    with inverted_task_losses(head):
        inverted = head.loss(logits, labels)
    assert isinstance(head.criterion, DetCE)
    small = labels[:, 0, ::8, ::8]
    p = logits.softmax(1).gather(1, small[:, None])
    expected = head.criterion.loss_weight * -torch.log1p(-p).mean()
    assert inverted.item() == pytest.approx(expected.item(), rel=1e-5)
    assert inverted.item() > plain.item()


def test_nesting_is_refused_and_restores():
    model = ToyHead()
    with inverted_task_losses(model):
        with pytest.raises(ValueError, match='already inverted'):
            with inverted_task_losses(model):
                pass
        assert isinstance(model.loss_cls, InvertedTaskLoss)
    assert isinstance(model.loss_cls, DetCE)


def test_unsupported_loss_names_the_class_and_the_alternative():
    model = ToyHead()
    model.loss_iou = nn.MSELoss()
    with pytest.raises(NotImplementedError,
                       match=r'torch\.MSELoss.*distillation-divergence term'):
        with inverted_task_losses(model):
            pass
    # Nothing was swapped before the error.
    assert isinstance(model.loss_cls, DetCE)
    with pytest.raises(NotImplementedError, match='torch.MSELoss'):
        inversion_of(nn.MSELoss())


def test_model_without_losses_is_an_error():
    with pytest.raises(ValueError, match='no task-loss'):
        with inverted_task_losses(nn.Linear(2, 2)):
            pass
