"""Inverses of the losses SSD, PISA-SSD and YOLACT compute inline: SSD's against a hand
computation in float64 with a finite-difference gradient check, and each head's losses
on a real (tiny) model: inverted, finite, restored afterwards, and only for the head
instance inside the block."""
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from mmengine.registry import DefaultScope

from tests.distill.tiny_models import _mmdet_model, det_batch
from tst_mm.distill import inverted_task_losses
from tst_mm.distill.inline_inverses import (_flipped_mask_cross_entropy,
                                            inline_losses_inverted)
from tst_mm.distill.inverse_losses import check_invertible


def _mmdet_head(**cfg):
    from mmdet.registry import MODELS
    from mmdet.utils import register_all_modules
    register_all_modules(init_default_scope=False)
    with DefaultScope.overwrite_default_scope('mmdet'):
        return MODELS.build(cfg)


def _ssd_head(kind='SSDHead', **train_cfg):
    cfg = dict(smoothl1_beta=1.0, neg_pos_ratio=3, allowed_border=-1, pos_weight=-1,
               assigner=dict(type='MaxIoUAssigner', pos_iou_thr=0.5, neg_iou_thr=0.5,
                             min_pos_iou=0.0),
               sampler=dict(type='PseudoSampler'), debug=False, **train_cfg)
    return _mmdet_head(
        type=kind, num_classes=3, in_channels=(8, 8, 8), train_cfg=cfg,
        anchor_generator=dict(type='SSDAnchorGenerator', scale_major=False,
                              input_size=64, strides=[8, 16, 32], ratios=[[2]] * 3,
                              min_sizes=[10, 24, 40], max_sizes=[24, 40, 64]),
        bbox_coder=dict(type='DeltaXYWHBBoxCoder', target_means=[0.0] * 4,
                        target_stds=[0.1, 0.1, 0.2, 0.2]))


def _single_case():
    """One image's anchors: 2 positives, 11 negatives (more than 3 x 2), 1 ignored."""
    torch.manual_seed(0)
    n, c = 13, 3
    cls_score = torch.randn(n, c + 1, dtype=torch.float64)
    bbox_pred = torch.randn(n, 4, dtype=torch.float64)
    labels = torch.full((n, ), c)
    labels[[0, 4]] = torch.tensor([0, 2])
    label_weights = torch.ones(n, dtype=torch.float64)
    label_weights[12] = 0  # an ignored anchor is a negative of weight 0
    bbox_targets = torch.randn(n, 4, dtype=torch.float64)
    bbox_weights = torch.zeros(n, 4, dtype=torch.float64)
    bbox_weights[[0, 4]] = 1
    anchors = torch.rand(n, 4, dtype=torch.float64)
    return cls_score, bbox_pred, anchors, labels, label_weights, bbox_targets, bbox_weights


def _ssd_inverse_by_hand(cls_score, bbox_pred, labels, label_weights, bbox_targets,
                         bbox_weights, avg_factor, neg_pos_ratio=3, beta=1.0):
    p_y = torch.softmax(cls_score, 1).gather(1, labels[:, None]).squeeze(1)
    inverse = -torch.log(1 - p_y) * label_weights
    pos = labels < cls_score.size(1) - 1
    negatives = inverse[~pos]
    # hard negatives of the inverse problem: the background the student is surest of
    hardest = negatives.sort(descending=True).values[:neg_pos_ratio * int(pos.sum())]
    loss_cls = (inverse[pos].sum() + hardest.sum()) / avg_factor
    d = (bbox_pred - bbox_targets).abs()
    smooth_l1 = torch.where(d < beta, 0.5 * d**2 / beta, d - 0.5 * beta)
    return loss_cls, -(smooth_l1 * bbox_weights).sum() / avg_factor


def test_ssd_inverse_by_hand_and_restored():
    head = _ssd_head()
    case = _single_case()
    plain = head.loss_by_feat_single(*case, avg_factor=2)
    with inline_losses_inverted(head):
        loss_cls, loss_bbox = head.loss_by_feat_single(*case, avg_factor=2)
    cls_score, bbox_pred, _, labels, label_weights, bbox_targets, bbox_weights = case
    expected = _ssd_inverse_by_hand(cls_score, bbox_pred, labels, label_weights,
                                    bbox_targets, bbox_weights, avg_factor=2)
    # The case tells the mining apart: the task's hardest negatives are others.
    p_bg = torch.softmax(cls_score, 1)[:, -1]
    negatives = (labels == 3).nonzero().squeeze(1)
    by_task = set(negatives[(-torch.log(p_bg[negatives])).topk(6).indices].tolist())
    by_inverse = set(negatives[(-torch.log1p(-p_bg[negatives])).topk(6).indices].tolist())
    assert by_task != by_inverse
    torch.testing.assert_close(loss_cls.reshape(()), expected[0])
    torch.testing.assert_close(loss_bbox.reshape(()), expected[1])
    # the task loss itself is untouched outside the block
    assert 'loss_by_feat_single' not in vars(head)
    torch.testing.assert_close(head.loss_by_feat_single(*case, avg_factor=2), plain)
    assert not torch.allclose(loss_cls, plain[0])


def test_ssd_inverse_is_finite_when_confident_and_right():
    head = _ssd_head()
    cls_score, bbox_pred, anchors, labels, *rest = _single_case()
    confident = F.one_hot(labels, 4).double() * 200 - 100  # p_y rounds to 1
    with inline_losses_inverted(head):
        loss_cls, _ = head.loss_by_feat_single(confident, bbox_pred, anchors, labels, *rest,
                                               avg_factor=2)
    assert torch.isfinite(loss_cls) and loss_cls > 10


def test_ssd_inverse_gradient_matches_finite_differences():
    head = _ssd_head()
    cls_score, bbox_pred, anchors, *rest = _single_case()

    def inverse(cls_score, bbox_pred):
        with inline_losses_inverted(head):
            loss_cls, loss_bbox = head.loss_by_feat_single(cls_score, bbox_pred, anchors,
                                                           *rest, avg_factor=2)
        return loss_cls + loss_bbox

    assert torch.autograd.gradcheck(inverse, (cls_score.requires_grad_(True),
                                              bbox_pred.requires_grad_(True)))


def test_ssd_minimising_the_inverse_increases_the_original():
    head = _ssd_head()
    cls_score, bbox_pred, anchors, *rest = _single_case()
    x = cls_score.clone().requires_grad_(True)
    before = head.loss_by_feat_single(x, bbox_pred, anchors, *rest, avg_factor=2)[0].item()
    opt = torch.optim.SGD([x], lr=1.0)
    for _ in range(20):
        opt.zero_grad()
        with inline_losses_inverted(head):
            head.loss_by_feat_single(x, bbox_pred, anchors, *rest, avg_factor=2)[0].backward()
        opt.step()
    after = head.loss_by_feat_single(x, bbox_pred, anchors, *rest, avg_factor=2)[0].item()
    assert after > before + 0.5, (before, after)


def _feats(batch=2):
    torch.manual_seed(0)
    return [torch.randn(batch, 8, 8, 8, requires_grad=True),
            torch.randn(batch, 8, 4, 4, requires_grad=True),
            torch.randn(batch, 8, 2, 2, requires_grad=True)]


@pytest.mark.parametrize('kind', ['SSDHead', 'PISASSDHead'])
def test_ssd_heads_on_a_batch(kind):
    """Both heads' losses: the classification changes, the regression (PISA's CARL too)
    is negated, both reach the features; the teacher's head of the same class (another
    instance) keeps its task loss inside the block."""
    extra = dict(isr=dict(k=2., bias=0.), carl=dict(k=1., bias=0.2)) \
        if kind == 'PISASSDHead' else {}
    head, teacher_head = _ssd_head(kind, **extra), _ssd_head(kind, **extra)
    feats = _feats()
    _, samples = det_batch()
    plain = head.loss(feats, samples)
    with inverted_task_losses(head):
        inverted = head.loss(feats, samples)
        torch.testing.assert_close(teacher_head.loss(feats, samples),
                                   teacher_head.loss(feats, samples))
        assert 'loss_by_feat_single' not in vars(teacher_head)
    assert set(inverted) == set(plain)
    assert ('loss_carl' in plain) == bool(extra)
    regression = ['loss_bbox'] + (['loss_carl'] if extra else [])
    for key in plain:
        n, i = torch.stack(plain[key]) if isinstance(plain[key], list) else plain[key], \
            torch.stack(inverted[key]) if isinstance(inverted[key], list) else inverted[key]
        assert torch.isfinite(i).all(), key
        if key in regression:
            torch.testing.assert_close(i, -n, msg=key)
        else:
            assert not torch.allclose(i, n), key
    total = sum(torch.stack(v).sum() if isinstance(v, list) else v.sum()
                for v in inverted.values())
    grads = torch.autograd.grad(total, feats)
    assert all(torch.isfinite(g).all() and g.abs().sum() > 0 for g in grads)


def test_nesting_is_refused_and_restores():
    head = _ssd_head()
    with inline_losses_inverted(head):
        with pytest.raises(ValueError, match='already inverted'):
            with inline_losses_inverted(head):
                pass
        assert 'loss_by_feat_single' in vars(head)
    assert 'loss_by_feat_single' not in vars(head)


def test_a_subclass_of_a_listed_head_is_refused():
    """A subclass may compute other losses in the methods it overrides."""
    from mmdet.models.dense_heads import SSDHead

    class MySSDHead(SSDHead):
        pass

    head = _ssd_head()
    head.__class__ = MySSDHead
    with pytest.raises(NotImplementedError, match='MySSDHead derives from SSDHead.*'
                       'add it to INLINE_INVERSES.*divergence=1'):
        check_invertible(head)
    check_invertible(_ssd_head())
    check_invertible(_ssd_head('PISASSDHead'))  # listed itself


def test_flipped_mask_cross_entropy_by_hand():
    p = torch.tensor([[0.9, 0.2], [0.0, 0.0]], dtype=torch.float64)
    y = torch.tensor([[1.0, 0.0], [0.0, 1.0]], dtype=torch.float64)
    # [1, 0]: cropped away (p = 0 on background), 0; [1, 1]: -log(1 - 0) = 0
    expected = torch.tensor([[-np.log(0.1), -np.log(0.2)], [0.0, 0.0]],
                            dtype=torch.float64)
    torch.testing.assert_close(_flipped_mask_cross_entropy(p, y, reduction='none'),
                               expected)
    torch.testing.assert_close(_flipped_mask_cross_entropy(p, y), expected.mean())
    torch.testing.assert_close(_flipped_mask_cross_entropy(p, y, reduction='sum'),
                               expected.sum())


def _tiny_yolact():
    return _mmdet_model('yolact/yolact_r50_1xb8-55e_coco.py', **{
        'bbox_head.in_channels': 32, 'bbox_head.feat_channels': 32,
        'bbox_head.num_classes': 3, 'bbox_head.num_protos': 8,
        'mask_head.in_channels': 32, 'mask_head.num_protos': 8, 'mask_head.num_classes': 3,
        'mask_head.proto_channels': (8, 8, 8, None, 8, 8)})


def _batch_with_masks():
    from mmdet.structures.mask import BitmapMasks
    inputs, samples = det_batch()
    for sample in samples:
        boxes = sample.gt_instances.bboxes.int().tolist()
        masks = np.zeros((len(boxes), 64, 64), np.uint8)
        for k, (x0, y0, x1, y1) in enumerate(boxes):
            masks[k, y0:(y0 + y1) // 2, x0:x1] = 1  # the top half of the box
        sample.gt_instances.masks = BitmapMasks(masks, 64, 64)
    return inputs, samples


def test_yolact_mask_loss_is_inverted_on_the_pixels_inside_the_box():
    torch.manual_seed(0)
    model = _tiny_yolact().train()
    check_invertible(model)  # no longer refused at build
    inputs, samples = _batch_with_masks()
    torch.manual_seed(1)
    plain = model.loss(inputs, samples)
    x = inputs.clone().requires_grad_(True)
    torch.manual_seed(1)
    with inverted_task_losses(model):
        inverted = model.loss(x, samples)
    mask_plain = torch.stack(plain['loss_mask'])
    mask_inverse = torch.stack(inverted['loss_mask'])
    assert torch.isfinite(mask_inverse).all()
    assert not torch.allclose(mask_inverse, mask_plain)
    # The cropped-away pixels do not add -log(0) = 100 each: the same scale as the task.
    assert (mask_inverse < 10 * mask_plain).all(), (mask_inverse, mask_plain)
    mask_inverse.sum().backward()
    assert torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0
    assert 'loss_by_feat' not in vars(model.mask_head)


# ---------------------------------------------------------------------- FreeAnchor


def _free_anchor_head():
    return _mmdet_head(
        type='FreeAnchorRetinaHead', num_classes=3, in_channels=8, stacked_convs=1,
        feat_channels=8, pre_anchor_topk=5,
        anchor_generator=dict(type='AnchorGenerator', octave_base_scale=4,
                              scales_per_octave=1, ratios=[0.5, 1.0, 2.0],
                              strides=[8, 16, 32]),
        bbox_coder=dict(type='DeltaXYWHBBoxCoder', target_means=[0.0] * 4,
                        target_stds=[0.1, 0.1, 0.2, 0.2]),
        loss_bbox=dict(type='SmoothL1Loss', beta=0.11, loss_weight=0.75))


def _bag_case():
    torch.manual_seed(0)
    cls_prob = torch.rand(2, 5, dtype=torch.float64) * 0.98 + 0.01  # (num_gt, topk)
    box_prob = torch.rand(2, 5, dtype=torch.float64) * 0.98 + 0.01
    return cls_prob, box_prob


def test_free_anchor_positive_bag_by_hand():
    """-alpha log(mean-max(P_cls P_loc)) -> -alpha log(1 - mean-max(...))."""
    head = _free_anchor_head()
    cls_prob, box_prob = _bag_case()
    p = cls_prob * box_prob
    weight = 1 / (1 - p)
    bag = (weight / weight.sum(1, keepdim=True) * p).sum(1)  # mean-max, as the task's
    plain = head.positive_bag_loss(cls_prob, box_prob)
    torch.testing.assert_close(plain, -head.alpha * torch.log(bag))
    with inline_losses_inverted(head):
        inverse = head.positive_bag_loss(cls_prob, box_prob)
    torch.testing.assert_close(inverse, -head.alpha * torch.log(1 - bag))


def test_free_anchor_negative_bag_by_hand():
    """Focal on p = P_cls (1 - P_box) -> the same on (1 - P_cls)(1 - P_box): the class
    confidence flipped, the exemption of likely objects (P_box near 1) kept."""
    head = _free_anchor_head()
    cls_prob, box_prob = _bag_case()
    flipped = (1 - cls_prob) * (1 - box_prob)
    with inline_losses_inverted(head):
        inverse = head.negative_bag_loss(cls_prob, box_prob)
    expected = (1 - head.alpha) * flipped**head.gamma * -torch.log(1 - flipped)
    torch.testing.assert_close(inverse, expected)
    # finite where the student is sure there is no object, and largest there
    no_object = torch.zeros_like(box_prob)
    with inline_losses_inverted(head):
        sure = head.negative_bag_loss(torch.zeros_like(cls_prob), no_object)
        exempt = head.negative_bag_loss(torch.zeros_like(cls_prob), torch.ones_like(box_prob))
    assert torch.isfinite(sure).all() and (sure > 10).all()
    assert (exempt < 1e-6).all()


@pytest.mark.parametrize('method', ['positive_bag_loss', 'negative_bag_loss'])
def test_free_anchor_inverse_gradients_match_finite_differences(method):
    head = _free_anchor_head()
    cls_prob, box_prob = _bag_case()

    def inverse(cls_prob, box_prob):
        with inline_losses_inverted(head):
            return getattr(head, method)(cls_prob, box_prob).sum()

    assert torch.autograd.gradcheck(inverse, (cls_prob.requires_grad_(True),
                                              box_prob.requires_grad_(True)))


def test_free_anchor_minimising_the_negative_inverse_increases_the_original():
    head = _free_anchor_head()
    _, box_prob = _bag_case()
    logits = torch.full((2, 5), -3.0, dtype=torch.float64, requires_grad=True)
    before = head.negative_bag_loss(logits.sigmoid(), box_prob).sum().item()
    opt = torch.optim.SGD([logits], lr=1.0)
    for _ in range(20):
        opt.zero_grad()
        with inline_losses_inverted(head):
            head.negative_bag_loss(logits.sigmoid(), box_prob).sum().backward()
        opt.step()
    after = head.negative_bag_loss(logits.sigmoid(), box_prob).sum().item()
    assert after > 10 * before, (before, after)


def test_free_anchor_head_on_a_batch():
    """Both bags inverted, finite and reaching the features; its loss_bbox stays the
    task's (it is the localisation confidence exp(-loss_bbox)); under 'mean' the negative
    bag is averaged over every anchor x class instead of divided by num_gts x topk."""
    from mmdet.models.losses import SmoothL1Loss
    head = _free_anchor_head()
    feats = _feats()
    _, samples = det_batch()
    plain = head.loss(feats, samples)
    inverted = {}
    for reduction in ('task', 'mean'):
        with inverted_task_losses(head, reduction):
            assert type(head.loss_bbox) is SmoothL1Loss
            inverted[reduction] = head.loss(feats, samples)
    for key in ('positive_bag_loss', 'negative_bag_loss'):
        for losses in inverted.values():
            assert torch.isfinite(losses[key]) and not torch.allclose(losses[key], plain[key])
    torch.testing.assert_close(inverted['mean']['positive_bag_loss'],
                               inverted['task']['positive_bag_loss'])
    num_gts, elements = 4, 2 * 3 * 3 * (8 * 8 + 4 * 4 + 2 * 2)  # images x anchors x classes
    torch.testing.assert_close(inverted['mean']['negative_bag_loss'],
                               inverted['task']['negative_bag_loss'] * num_gts * 5 / elements)
    total = sum(inverted['mean'].values())
    grads = torch.autograd.grad(total, feats)
    assert all(torch.isfinite(g).all() and g.abs().sum() > 0 for g in grads)
    assert not {'positive_bag_loss', 'negative_bag_loss', 'loss_by_feat'} & set(vars(head))


# ---------------------------------------------------------------------- AutoAssign


def _autoassign_head():
    return _mmdet_head(
        type='AutoAssignHead', num_classes=3, in_channels=8, stacked_convs=1,
        feat_channels=8, strides=[8, 16, 32], norm_cfg=None,
        loss_bbox=dict(type='GIoULoss', loss_weight=5.0))


def _points_case(points=7, classes=3):
    torch.manual_seed(0)
    cls_score = torch.rand(points, classes, dtype=torch.float64) * 0.98 + 0.01
    objectness = torch.rand(points, 1, dtype=torch.float64) * 0.98 + 0.01
    return cls_score, objectness


def test_autoassign_positive_loss_by_hand():
    """-log(sum_j w_j p_j) per object -> -log(1 - sum_j w_j p_j), the confidence
    weights w_j (exp(3 p_j) x centre prior, normalised) kept."""
    from mmengine.structures import InstanceData
    head = _autoassign_head()
    cls_score, objectness = _points_case()
    reg_loss = torch.rand(7, 2, dtype=torch.float64)
    prior = torch.rand(7, 2, dtype=torch.float64)
    gts = InstanceData(labels=torch.tensor([2, 0]))
    p = cls_score[:, [2, 0]] * objectness * torch.exp(-reg_loss)
    w = torch.exp(3 * p) * prior
    reweighted = (p * w / w.sum(0, keepdim=True)).sum(0)
    with inline_losses_inverted(head):
        inverse, = head.get_pos_loss_single(cls_score, objectness, reg_loss, gts, prior)
    expected = -torch.log(1 - reweighted).sum() * head.pos_loss_weight
    torch.testing.assert_close(inverse, expected)


def test_autoassign_negative_loss_by_hand():
    """No object in the image (every weight 1): the focal loss on j = P_cls P_obj ->
    the same on 1 - j, (1 - j)^2 (-log j)."""
    from mmengine.structures import InstanceData
    head = _autoassign_head()
    cls_score, objectness = _points_case()
    gts = InstanceData(labels=torch.zeros(0, dtype=torch.long))
    empty = torch.zeros(7, 0, dtype=torch.float64)
    with inline_losses_inverted(head):
        inverse, = head.get_neg_loss_single(cls_score, objectness, gts, empty,
                                            empty.bool())
    joint = cls_score * objectness
    expected = ((1 - joint)**2 * -torch.log(joint)).sum() * head.neg_loss_weight
    torch.testing.assert_close(inverse, expected)


def test_autoassign_head_on_a_batch():
    """Its loss_bbox stays the task's (P_loc = exp(-loss_bbox)); loss_pos and loss_neg
    are inverted and finite, loss_center negated; every term reaches the features."""
    from mmdet.models.losses import GIoULoss
    head = _autoassign_head()
    feats = _feats()
    _, samples = det_batch()
    plain = head.loss(feats, samples)
    with inverted_task_losses(head):
        assert type(head.loss_bbox) is GIoULoss
        inverted = head.loss(feats, samples)
    assert set(inverted) == {'loss_pos', 'loss_neg', 'loss_center'}
    torch.testing.assert_close(inverted['loss_center'], -plain['loss_center'])
    for key in ('loss_pos', 'loss_neg'):
        assert torch.isfinite(inverted[key]) and not torch.allclose(inverted[key], plain[key])
    for key in ('loss_pos', 'loss_neg'):
        grads = torch.autograd.grad(inverted[key], feats, retain_graph=True,
                                    allow_unused=True)
        assert any(g is not None and g.abs().sum() > 0 for g in grads), key
    assert not {'get_pos_loss_single', 'get_neg_loss_single', 'loss_by_feat'} & set(vars(head))


def test_a_model_with_neither_loss_modules_nor_a_listed_head_is_refused():
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 1))
    with pytest.raises(NotImplementedError, match=r'Sequential\) has no task-loss '
                       'submodules.*computes its losses inline.*divergence=1'):
        check_invertible(model)
