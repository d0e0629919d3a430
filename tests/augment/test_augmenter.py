"""TSTAugmenter on mmdet / mmseg batches: build, identity, consistency, samples, RNG."""
import pytest
import torch
from mmdet.structures import DetDataSample
from mmdet.structures.bbox import HorizontalBoxes
from mmengine.registry import MODELS
from mmengine.structures import InstanceData, PixelData
from mmseg.structures import SegDataSample

from tst_mm.augment import OPS, TSTAugmenter
from tst_mm.augment.geometry import compose, sampling_theta, warp_images
from tst_mm.augment.ops import OpContext

H, W = 64, 96
GEOMETRIC_OPS = [n for n, s in OPS.items() if s.geometric]
RECT = [30., 20., 62., 40.]  # x1, y1, x2, y2 of the drawn rectangle


def forced(ops, magnitude=0.95, **kwargs):
    """Every op in ``ops`` drawn and gated on, at ``magnitude`` of its range."""
    cfgs = {n: dict(probability=1 - 1e-9) for n in ops}
    for n in ops:
        if OPS[n].magnitude_range is not None:
            cfgs[n]['magnitude'] = magnitude
    return TSTAugmenter(ops=ops, num_ops=len(ops), op_cfgs=cfgs, **kwargs)


def det_sample(boxes, labels, img_shape=(H, W), ignored=None):
    s = DetDataSample(metainfo=dict(img_shape=img_shape, pad_shape=(H, W), img_id=7))
    s.gt_instances = InstanceData(bboxes=HorizontalBoxes(torch.tensor(boxes).view(-1, 4)),
                                  labels=torch.tensor(labels))
    if ignored is not None:
        s.ignored_instances = InstanceData(bboxes=HorizontalBoxes(torch.tensor(ignored)),
                                           labels=torch.zeros(len(ignored), dtype=torch.long))
    return s


def seg_sample(seg, img_shape=(H, W)):
    s = SegDataSample(metainfo=dict(img_shape=img_shape, pad_shape=(H, W)))
    s.gt_sem_seg = PixelData(data=seg)
    return s


def rectangle_batch(n=1, img_shape=(H - 4, W - 8)):
    img = torch.zeros(n, 3, H, W)
    x1, y1, x2, y2 = map(int, RECT)
    img[:, :, y1:y2, x1:x2] = 255.
    seg = torch.full((1, H, W), 255, dtype=torch.long)
    seg[:, :img_shape[0], :img_shape[1]] = 0
    seg[:, y1:y2, x1:x2] = 3
    dets = [det_sample([RECT], [3], img_shape) for _ in range(n)]
    segs = [seg_sample(seg.clone(), img_shape) for _ in range(n)]
    return img, dets, segs


def extent(mask):
    ys, xs = torch.nonzero(mask, as_tuple=True)
    return torch.stack([xs.min(), ys.min(), xs.max() + 1, ys.max() + 1]).float()


def iou(a, b):
    lt, rb = torch.maximum(a[:2], b[:2]), torch.minimum(a[2:], b[2:])
    inter = (rb - lt).clamp(min=0).prod()
    return inter / ((a[2:] - a[:2]).prod() + (b[2:] - b[:2]).prod() - inter)


def test_builds_from_the_root_mmdet_and_mmseg_registries():
    from mmdet.registry import MODELS as DET_MODELS
    from mmseg.registry import MODELS as SEG_MODELS
    for registry in (MODELS, DET_MODELS, SEG_MODELS):
        aug = registry.build(dict(type='TSTAugmenter', num_ops=4, temperature=0.05))
        assert isinstance(aug, TSTAugmenter) and aug.op_names == list(OPS)
    assert {n for n, _ in aug.named_parameters()} == {'magnitude_logits',
                                                      'probability_logits'}


def test_identity_when_every_probability_vanishes():
    aug = TSTAugmenter(num_ops=14, op_cfgs={n: dict(probability=1e-12) for n in OPS})
    torch.manual_seed(0)
    img = torch.rand(2, 3, H, W) * 255  # not even integer-valued
    dets = [det_sample([RECT, [0., 0., 5., 3.]], [3, 1], (H - 10, W), ignored=[[1., 1., 4, 4]]),
            det_sample([[90., 50., 96., 64.]], [2])]
    out, new = aug(img, dets)
    assert torch.equal(out, img)
    for a, b in zip(new, dets):
        assert torch.equal(a.gt_instances.bboxes.tensor, b.gt_instances.bboxes.tensor)
        assert torch.equal(a.gt_instances.labels, b.gt_instances.labels)
    assert torch.equal(new[0].ignored_instances.bboxes.tensor,
                       dets[0].ignored_instances.bboxes.tensor)
    seg = torch.randint(0, 19, (1, H, W))
    out, new = aug(img[:1], [seg_sample(seg)])
    assert torch.equal(out, img[:1]) and torch.equal(new[0].gt_sem_seg.data, seg)


@pytest.mark.parametrize('per_sample', [True, False])
def test_matches_a_dense_reference(per_sample):
    """Every op on every sample, weight 0 where not drawn, one warp per sample: the same
    image as the augmenter's row subsets, folded gates and shared warp."""
    n, real = 5, [(H, W), (H - 6, W), (H, W - 9), (40, 50), (H, W)]
    aug = TSTAugmenter(num_ops=6, per_sample=per_sample, temperature=0.5)
    img = (torch.rand(n, 3, H, W, generator=torch.Generator().manual_seed(0)) * 255).round()
    samples = [det_sample([RECT], [1], shape) for shape in real]
    for seed in range(3):
        torch.manual_seed(seed)
        draw = aug.sample(n, torch.device('cpu'))
        torch.manual_seed(seed)
        out, _ = aug(img, samples)
        hw = torch.tensor(real, dtype=torch.float32)
        ys, xs = torch.arange(H).view(1, 1, H, 1), torch.arange(W).view(1, 1, 1, W)
        valid = (ys < hw[:, :1, None, None]) & (xs < hw[:, 1:, None, None])
        ctx = OpContext(valid.float(), hw, draw.noise, True)
        weight = draw.weights * draw.selected
        total = torch.zeros_like(img)
        for j, name in enumerate(aug.op_names):
            if not OPS[name].geometric:
                total = total + weight[:, j, None, None, None] * OPS[name].fn(
                    img, draw.values[:, j], ctx)
        ref = (img + valid * total).clamp(0, 255)  # the padding keeps its values
        matrix = compose(torch.stack([
            OPS[name].fn(weight[:, j] * draw.values[:, j], hw)
            for j, name in enumerate(aug.op_names) if OPS[name].geometric]))
        warped = warp_images(ref, sampling_theta(matrix, (H, W)))
        moved = ~(matrix == torch.eye(3)).flatten(1).all(1)
        ref = torch.where(valid & moved[:, None, None, None], warped, ref)
        assert torch.allclose(out, ref, atol=1e-3), (seed, (out - ref).abs().max())


def test_padding_is_untouched_by_every_op():
    real = [(H - 10, W - 20), (H, W - 3), (H - 1, W)]
    aug = forced(list(OPS))
    img = torch.rand(3, 3, H, W, generator=torch.Generator().manual_seed(2)) * 255
    torch.manual_seed(0)
    out, _ = aug(img, [det_sample([RECT], [1], shape) for shape in real])
    for k, (h, w) in enumerate(real):
        assert torch.equal(out[k, :, h:], img[k, :, h:])
        assert torch.equal(out[k, :, :, w:], img[k, :, :, w:])
        assert not torch.allclose(out[k, :, :h, :w], img[k, :, :h, :w])


def test_callers_samples_are_not_mutated_and_metainfo_is_kept():
    img, dets, segs = rectangle_batch(2)
    before = [d.gt_instances.bboxes.tensor.clone() for d in dets]
    seg_before = segs[0].gt_sem_seg.data.clone()
    torch.manual_seed(1)
    _, new = forced(['Rotate', 'TranslateX'])(img, dets)
    _, new_seg = forced(['Rotate', 'TranslateX'])(img, segs)
    for d, b, n in zip(dets, before, new):
        assert torch.equal(d.gt_instances.bboxes.tensor, b) and n is not d
        assert n.metainfo == d.metainfo
        assert not torch.equal(n.gt_instances.bboxes.tensor, b)
    assert torch.equal(segs[0].gt_sem_seg.data, seg_before)
    assert new_seg[0].gt_sem_seg.data.shape == (1, H, W)


@pytest.mark.parametrize('ops', [[n] for n in GEOMETRIC_OPS] + [GEOMETRIC_OPS])
@pytest.mark.parametrize('seed', [0, 1])
def test_boxes_and_label_maps_follow_the_warped_image(ops, seed):
    """A drawn rectangle, its box and its label-map pixels end up in the same place."""
    img, dets, segs = rectangle_batch()
    aug = forced(ops, magnitude=0.95 if len(ops) == 1 else 0.6)
    torch.manual_seed(seed)
    out, new = aug(img, dets)
    torch.manual_seed(seed)
    _, new_seg = aug(img, segs)
    warped = out[0, 0] > 127
    assert not torch.equal(warped, img[0, 0] > 127)  # the op did something
    box = new[0].gt_instances.bboxes.tensor
    assert box.shape == (1, 4) and new[0].gt_instances.labels.tolist() == [3]
    assert iou(box[0], extent(warped)) > 0.9
    label = new_seg[0].gt_sem_seg.data[0] == 3
    assert (label & warped).sum() / (label | warped).sum() > 0.9
    assert iou(box[0], extent(label)) > 0.9


def test_panoptic_label_maps_keep_their_mmdet_field():
    """mmdet's panoptic pipeline packs the label map as ``gt_sem_seg.sem_seg``: it is
    warped like mmseg's ``data`` and stays under its own name."""
    img, dets, segs = rectangle_batch()
    dets[0].gt_sem_seg = PixelData(sem_seg=segs[0].gt_sem_seg.data.clone())
    aug = forced(['Rotate'], magnitude=0.95)
    torch.manual_seed(0)
    _, new = aug(img, dets)
    torch.manual_seed(0)
    _, new_seg = aug(img, segs)
    assert 'data' not in new[0].gt_sem_seg
    assert torch.equal(new[0].gt_sem_seg.sem_seg, new_seg[0].gt_sem_seg.data)


def test_boxes_are_clipped_to_the_real_image_and_dropped_with_their_labels():
    real = (H - 10, W - 20)  # the batch is padded beyond it
    aug = TSTAugmenter(
        ops=['TranslateX'], num_ops=1,
        op_cfgs=dict(TranslateX=dict(range=(0.5, 0.5), probability=1 - 1e-9)))
    torch.manual_seed(0)
    img = torch.rand(4, 3, H, W) * 255
    boxes = [[2., 5., 20., 30.], [60., 5., 75., 30.], [30., 40., 45., 50.]]
    dets = [det_sample(boxes, [0, 1, 2], real, ignored=boxes) for _ in range(4)]
    out, new = aug(img, dets)
    shift = 0.5 * real[1]
    for k, s in enumerate(new):
        b, labels = s.gt_instances.bboxes.tensor, s.gt_instances.labels
        # ignored boxes see the same transform, clip and filter
        ignored = s.ignored_instances.bboxes.tensor
        assert torch.equal(ignored, b) and len(s.ignored_instances.labels) == len(b)
        assert (b[:, 0::2] >= 0).all() and (b[:, 2] <= real[1]).all()
        s_ = int(shift)
        moved_right = torch.allclose(out[k, :, :real[0], s_:real[1]],
                                     img[k, :, :real[0], :real[1] - s_], atol=1e-2)
        moved_left = torch.allclose(out[k, :, :real[0], :real[1] - s_],
                                    img[k, :, :real[0], s_:real[1]], atol=1e-2)
        assert moved_right != moved_left
        if moved_right:  # box 1 leaves, box 2 is clipped at the real width (not W)
            assert labels.tolist() == [0, 2]
            assert b.tolist() == [[2 + shift, 5., 20 + shift, 30.],
                                  [30 + shift, 40., real[1], 50.]]
        else:  # box 0 leaves, box 2 is clipped at 0
            assert labels.tolist() == [1, 2]
            assert b.tolist() == [[60 - shift, 5., 75 - shift, 30.], [0., 40., 45 - shift, 50.]]
        # the padding beyond the real image is left as it was
        assert torch.equal(out[k, :, real[0]:], img[k, :, real[0]:])
        assert torch.equal(out[k, :, :, real[1]:], img[k, :, :, real[1]:])


def test_fixed_seed_is_deterministic_and_samples_differ_per_sample():
    img = (torch.rand(1, 3, H, W) * 255).expand(4, 3, H, W).contiguous()
    dets = [det_sample([RECT], [3]) for _ in range(4)]
    aug = TSTAugmenter()
    runs = []
    for seed in (5, 5, 6):
        torch.manual_seed(seed)
        runs.append(aug(img, dets))
    assert torch.equal(runs[0][0], runs[1][0])
    assert all(torch.equal(a.gt_instances.bboxes.tensor, b.gt_instances.bboxes.tensor)
               for a, b in zip(runs[0][1], runs[1][1]))
    assert not torch.equal(runs[0][0], runs[2][0])
    out = runs[0][0]
    assert len({tuple(o.flatten()[::97].tolist()) for o in out}) == 4  # 4 different views
    batch = TSTAugmenter(per_sample=False)
    torch.manual_seed(5)
    out, _ = batch(img, dets)
    assert all(torch.equal(o, out[0]) for o in out)


def test_inference_samples_without_ground_truth_pass():
    aug = forced(['Rotate', 'Color'])
    img = torch.rand(2, 3, H, W) * 255
    samples = [DetDataSample(metainfo=dict(img_shape=(H, W))), SegDataSample()]
    out, new = aug(img, samples)
    assert out.shape == img.shape and len(new) == 2
    assert not hasattr(new[0], 'gt_instances') or 'bboxes' not in new[0].gt_instances
    out2, none = aug(img)
    assert none is None and out2.shape == img.shape


def test_autocast_no_grad_and_dtype():
    aug = TSTAugmenter(num_ops=14)
    img, dets, _ = rectangle_batch(2)
    torch.manual_seed(3)
    ref, ref_samples = aug(img, dets)
    torch.manual_seed(3)
    with torch.no_grad(), torch.autocast('cpu', dtype=torch.bfloat16):
        out, samples = aug(img, dets)
    assert out.dtype == torch.float32 and not out.requires_grad
    assert torch.equal(out, ref.detach())
    assert torch.equal(samples[0].gt_instances.bboxes.tensor,
                       ref_samples[0].gt_instances.bboxes.tensor)
    assert 0 <= out.min() and out.max() <= 255 + 1e-3  # bilinear: in range to rounding


@pytest.mark.parametrize('kind', ['boxes', 'label_map'])
def test_samples_on_another_device_than_the_images_are_named(kind):
    """Boxes or label maps on another device (here 'meta', standing in for CPU samples
    beside CUDA images) get an error naming both devices and the fix, before any op."""
    img, dets, segs = rectangle_batch(2)
    samples = dets if kind == 'boxes' else segs
    moved = samples[1].to('meta')
    with pytest.raises(ValueError, match=r'data_samples\[1\].* is on meta but the '
                       r'images are on cpu.*s\.to\(device\)'):
        forced(['Rotate'])(img, [samples[0], moved])
