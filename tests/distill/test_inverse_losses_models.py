"""Inverse task losses on real (tiny, randomly initialised) mmdet and mmseg models."""
import pytest
import torch
import torch.nn.functional as F

from tests.distill.tiny_models import (_mmdet_model, det_batch, seg_batch, tiny_faster_rcnn,
                                       tiny_fcos, tiny_retinanet, tiny_segmentor)
from tst_mm.distill import ModuleOutputRecorder, find_task_losses, inverted_task_losses


def _flat(value):
    return torch.stack([v.reshape(()) for v in value]) if isinstance(value, list) \
        else value.reshape(())


def _losses_twice(model, inputs, samples, seed=0):
    torch.manual_seed(seed)  # samplers (RandomSampler) draw the same boxes both times
    normal = model.loss(inputs, samples)
    torch.manual_seed(seed)
    with inverted_task_losses(model):
        inverted = model.loss(inputs, samples)
    return normal, inverted


def tiny_gfl():
    """GFL: QualityFocalLoss, GIoU and DistributionFocalLoss."""
    return _mmdet_model('gfl/gfl_r50_fpn_1x_coco.py',
                        **{'bbox_head.in_channels': 32, 'bbox_head.feat_channels': 32,
                           'bbox_head.stacked_convs': 1, 'bbox_head.num_classes': 3})


@pytest.mark.parametrize('build,regression', [
    (tiny_retinanet, ['loss_bbox']),
    (tiny_fcos, ['loss_bbox']),
    (tiny_faster_rcnn, ['loss_rpn_bbox', 'loss_bbox']),
    (tiny_gfl, ['loss_bbox']),
])
def test_detectors(build, regression):
    torch.manual_seed(0)
    model = build().train()
    originals = [loss for _, _, loss in find_task_losses(model)]
    inputs, samples = det_batch()
    normal, inverted = _losses_twice(model, inputs, samples)
    assert set(inverted) == set(normal)
    for key in normal:
        if not key.startswith('loss'):
            continue
        n, i = _flat(normal[key]), _flat(inverted[key])
        assert torch.isfinite(i).all(), key
        if key in regression:
            torch.testing.assert_close(i, -n, msg=key)
        else:
            assert not torch.allclose(i, n), key
    # The augmenter's gradient path: the inverse losses backpropagate to the input.
    x = inputs.clone().requires_grad_(True)
    with inverted_task_losses(model):
        losses = model.loss(x, samples)
    sum(_flat(v).sum() for k, v in losses.items() if k.startswith('loss')).backward()
    assert x.grad is not None and torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0
    assert [loss for _, _, loss in find_task_losses(model)] == originals


def test_segmentor_keys_ohem_and_hand_value():
    torch.manual_seed(0)
    model = tiny_segmentor().train()
    model.decode_head.dropout = None  # so one recorded forward equals the loss's forward
    inputs, samples = seg_batch()
    normal = model.loss(inputs, samples)
    rec = ModuleOutputRecorder(model, ['decode_head.conv_seg'])
    with rec, inverted_task_losses(model, reduction='task'):
        inverted = model.loss(inputs, samples)
    assert set(inverted) == set(normal) == {
        'decode.loss_ce', 'decode.acc_seg', 'aux.loss_ce', 'aux.loss_ce_valid',
        'aux.acc_seg'
    }
    for key in ('decode.loss_ce', 'aux.loss_ce', 'aux.loss_ce_valid'):
        assert torch.isfinite(inverted[key]) and inverted[key] != normal[key]
    assert inverted['decode.acc_seg'] == normal['decode.acc_seg']

    # By hand: -log(1 - p_y) on the head's upsampled logits, OHEM pixel weights,
    # ignored pixels out, averaged over all pixels (avg_non_ignore=False).
    label = torch.stack([s.gt_sem_seg.data for s in samples])
    logits = F.interpolate(rec['decode_head.conv_seg'].detach(), size=label.shape[2:],
                           mode='bilinear', align_corners=False)
    weight = model.decode_head.sampler.sample(logits, label)
    label = label.squeeze(1)
    valid = label != 255
    assert 0 < weight.sum() < valid.sum()  # OHEM actually dropped valid pixels
    p_y = torch.softmax(logits.double(), 1).gather(
        1, label.clamp(max=18).unsqueeze(1)).squeeze(1)
    expected = (-torch.log(1 - p_y) * valid * weight).sum() / label.numel()
    torch.testing.assert_close(inverted['decode.loss_ce'].double(), expected, rtol=1e-4,
                               atol=1e-6)
    # The reference's reduction averages over the 19 classes as well.
    with inverted_task_losses(model, reduction='reference'):
        reference = model.loss(inputs, samples)
    for key in ('decode.loss_ce', 'aux.loss_ce', 'aux.loss_ce_valid'):
        torch.testing.assert_close(reference[key], inverted[key] / 19, msg=key)
