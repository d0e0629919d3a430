"""Instance masks follow the warp: bitmap and polygon, with their boxes, exactly where
the geometry is exact, untouched by the identity and the padding."""
import sys

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from mmdet.structures.mask import BitmapMasks, PolygonMasks

from tests.augment.test_augmenter import GEOMETRIC_OPS, H, W, det_sample, forced, iou
from tst_mm.augment import TSTAugmenter
from tst_mm.augment.geometry import sampling_grid, sampling_theta, warp_masks

# Two instances: an axis-aligned rectangle and a triangle (x, y points).
RECT = [20., 14., 44., 40.]
TRIANGLE = np.array([56., 12., 84., 24., 62., 48.])


def _raster(polygon: np.ndarray) -> np.ndarray:
    """Pixels whose centre lies inside a convex polygon (counter/clockwise alike)."""
    pts = polygon.reshape(-1, 2)
    ys, xs = np.mgrid[0:H, 0:W] + 0.5
    signs = []
    for (x0, y0), (x1, y1) in zip(pts, np.roll(pts, -1, 0)):
        signs.append((x1 - x0) * (ys - y0) - (y1 - y0) * (xs - x0))
    signs = np.stack(signs)
    return ((signs >= 0).all(0) | (signs <= 0).all(0)).astype(np.uint8)


def _rect_polygon(box):
    x1, y1, x2, y2 = box
    return np.array([x1, y1, x2, y1, x2, y2, x1, y2])


def _bbox(points: np.ndarray):
    pts = points.reshape(-1, 2)
    return [*pts.min(0), *pts.max(0)]


def shapes_batch(kind: str, n: int = 1, img_shape=(H, W)):
    """Images with a white rectangle and a grey triangle, their boxes and masks."""
    polygons = [_rect_polygon(RECT), TRIANGLE]
    bitmaps = np.stack([_raster(p) for p in polygons])
    img = torch.zeros(n, 3, H, W)
    img[:, :, bitmaps[0] > 0] = 255.
    img[:, :, bitmaps[1] > 0] = 128.
    boxes = [_bbox(p) for p in polygons]
    samples = []
    for _ in range(n):
        s = det_sample(boxes, [1, 2], img_shape)
        s.gt_instances.masks = BitmapMasks(bitmaps.copy(), H, W) if kind == 'bitmap' \
            else PolygonMasks([[p.copy()] for p in polygons], H, W)
        samples.append(s)
    return img, samples


def _mask_boxes(masks) -> torch.Tensor:
    """Tight boxes of each instance's mask (pixel extents / polygon extents)."""
    if isinstance(masks, BitmapMasks):
        return masks.get_bboxes(dst_type='hbox').tensor
    return torch.tensor([_bbox(np.concatenate(parts)) for parts in masks.masks],
                        dtype=torch.float32)


def _tight(masks: torch.Tensor) -> torch.Tensor:
    boxes = torch.zeros(len(masks), 4)
    for i, m in enumerate(masks):
        if m.any():
            ys, xs = m.nonzero(as_tuple=True)
            boxes[i] = torch.tensor([xs.min(), ys.min(), xs.max() + 1, ys.max() + 1])
    return boxes


@pytest.mark.parametrize('blobs', [False, True])
def test_warp_masks_is_grid_sample_nearest(blobs):
    """The same pixels as grid_sample's nearest mode on the same theta, whether the
    masks cover the image (noise) or small regions (only those are computed)."""
    torch.manual_seed(0)
    masks = (torch.rand(3, H, W) > 0.5).to(torch.uint8)
    if blobs:
        masks.zero_()
        masks[0, 5:20, 10:30] = 1
        masks[1, 40:60, 70:95] = 1  # partly rotated out of the image
        masks[2, 30:31, 40:41] = 1  # one pixel
    angle, shear = 0.4, 0.2
    matrix = torch.tensor([[np.cos(angle), -np.sin(angle) + shear, 7.3],
                           [np.sin(angle), np.cos(angle), -4.6], [0., 0., 1.]]).float()
    theta = sampling_theta(matrix[None], (H, W))[0]
    reference = F.grid_sample(masks[None].float(), sampling_grid(theta[None], (1, 3, H, W)),
                              mode='nearest', padding_mode='zeros', align_corners=False)
    reference = reference[0].to(torch.uint8)
    warped, boxes = warp_masks(masks.numpy(), theta, matrix, (H, W), (H, W))
    assert torch.equal(torch.from_numpy(warped), reference)
    assert torch.equal(boxes, _tight(reference))
    # destinations beyond the real image stay 0 (the padding)
    cut, _ = warp_masks(masks.numpy(), theta, matrix, (H, W), (H - 10, W - 20))
    cut = torch.from_numpy(cut)
    assert not cut[:, H - 10:].any() and not cut[:, :, W - 20:].any()
    assert torch.equal(cut[:, :H - 10, :W - 20], reference[:, :H - 10, :W - 20])
    # masks smaller than the batch (no mask padding): the same pixels, cropped
    small, _ = warp_masks(masks[:, :H - 10, :W - 20].numpy(), theta, matrix, (H, W),
                          (H - 10, W - 20))  # a strided view, as numpy slices give
    small = torch.from_numpy(small)
    expected = F.grid_sample(
        F.pad(masks[:, :H - 10, :W - 20], (0, 20, 0, 10))[None].float(),
        sampling_grid(theta[None], (1, 3, H, W)), mode='nearest', padding_mode='zeros',
        align_corners=False)[0, :, :H - 10, :W - 20].to(torch.uint8)
    assert torch.equal(small, expected)


@pytest.mark.parametrize('kind', ['bitmap', 'polygon'])
@pytest.mark.parametrize('ops', [['Rotate'], ['ShearX'], ['ShearY'], GEOMETRIC_OPS])
@pytest.mark.parametrize('seed', [0, 1])
def test_masks_and_boxes_follow_the_warped_image(kind, ops, seed):
    img, dets = shapes_batch(kind)
    aug = forced(ops, magnitude=0.9 if len(ops) == 1 else 0.5)
    torch.manual_seed(seed)
    out, new = aug(img, dets)
    inst = new[0].gt_instances
    masks = inst.masks
    assert type(masks) is type(dets[0].gt_instances.masks)  # the pipeline's type
    assert len(masks) == len(inst.bboxes) == len(inst.labels) > 0
    boxes = inst.bboxes.tensor
    for box, mask_box in zip(boxes, _mask_boxes(masks)):
        assert iou(box, mask_box) > 0.9, (box, mask_box)
    # the masks sit on the warped shapes of the image
    drawn = {1: out[0, 0] > 191, 2: (out[0, 0] > 64) & (out[0, 0] < 191)}
    bitmaps = masks.to_ndarray() if kind == 'bitmap' else masks.to_bitmap().to_ndarray()
    for label, bitmap in zip(inst.labels.tolist(), torch.from_numpy(bitmaps).bool()):
        shape = drawn[label]
        assert (bitmap & shape).sum() / (bitmap | shape).sum() > 0.8, label


@pytest.mark.parametrize('kind', ['bitmap', 'polygon'])
def test_pure_translation_is_exact(kind):
    real_w, shift = 88, 22  # a shift of 0.25 of the real (unpadded) width: 22 pixels
    aug = TSTAugmenter(ops=['TranslateX'], num_ops=1, op_cfgs=dict(
        TranslateX=dict(range=(0.25, 0.25), probability=1 - 1e-9)))
    img, dets = shapes_batch(kind, n=4, img_shape=(H, real_w))
    torch.manual_seed(0)
    out, new = aug(img, dets)
    directions = set()
    for k, sample in enumerate(new):
        inst, before = sample.gt_instances, dets[k].gt_instances
        right = torch.allclose(out[k, :, :, shift:real_w], img[k, :, :, :real_w - shift],
                               atol=1e-2)
        directions.add(right)
        offset = shift if right else -shift
        assert inst.labels.tolist() == [1, 2]  # both stay (clipped)
        if kind == 'bitmap':
            expected = np.zeros_like(before.masks.masks)
            src = before.masks.masks[:, :, :real_w]
            if right:
                expected[:, :, shift:real_w] = src[:, :, :real_w - shift]
            else:
                expected[:, :, :real_w - shift] = src[:, :, shift:]
            assert np.array_equal(inst.masks.masks, expected)
        else:
            for parts, old in zip(inst.masks.masks, before.masks.masks):
                moved = old[0].reshape(-1, 2) + [offset, 0]
                moved[:, 0] = moved[:, 0].clip(0, real_w)
                assert np.allclose(_bbox(np.concatenate(parts)), _bbox(moved))
        # the box is the mask's tight box, clipped to the real image
        assert torch.equal(inst.bboxes.tensor.float(), _mask_boxes(inst.masks))
        assert (inst.bboxes.tensor[:, 2] <= real_w).all()
    assert directions == {True, False}  # both signs were drawn


@pytest.mark.parametrize('kind', ['bitmap', 'polygon'])
def test_identity_keeps_masks_and_ignored_masks_follow_too(kind):
    img, dets = shapes_batch(kind, n=2)
    off = TSTAugmenter(op_cfgs={n: dict(probability=1e-9) for n in GEOMETRIC_OPS},
                       ops=GEOMETRIC_OPS, num_ops=2)
    _, new = off(img, dets)
    for a, b in zip(dets, new):
        if kind == 'bitmap':
            assert np.array_equal(a.gt_instances.masks.masks, b.gt_instances.masks.masks)
        else:
            for pa, pb in zip(a.gt_instances.masks.masks, b.gt_instances.masks.masks):
                assert all(np.array_equal(x, y) for x, y in zip(pa, pb))

    for s in dets:
        s.ignored_instances = s.gt_instances.clone()
    torch.manual_seed(2)
    _, new = forced(['Rotate', 'TranslateY'], magnitude=0.6)(img, dets)
    for s in new:
        assert torch.equal(s.ignored_instances.bboxes.tensor, s.gt_instances.bboxes.tensor)
        assert torch.equal(_mask_boxes(s.ignored_instances.masks),
                           _mask_boxes(s.gt_instances.masks))


def test_masks_of_a_padded_image_stay_inside_it():
    real = (H - 8, W - 24)
    img, dets = shapes_batch('bitmap', n=2, img_shape=real)
    torch.manual_seed(0)
    _, new = forced(['Rotate', 'ShearX'], magnitude=0.9)(img, dets)
    for s in new:
        masks = s.gt_instances.masks.masks
        assert masks.shape[1:] == (H, W)  # the size the pipeline gave (padded here)
        assert not masks[:, real[0]:].any() and not masks[:, :, real[1]:].any()


def test_one_host_copy_per_batch_with_or_without_masks(monkeypatch):
    """Masks are warped on the host from the same copy that brings the kept-box mask
    over: the augmenter makes one ``.cpu()`` call per batch either way. (On this CPU
    machine only the augmenter's own calls are counted; mmengine's indexing of host
    tensors calls ``.cpu()`` too, on tensors already there.)"""
    calls = []
    real_cpu = torch.Tensor.cpu

    def counting_cpu(self, *args, **kwargs):
        if 'tst_mm' in sys._getframe(1).f_code.co_filename:
            calls.append(1)
        return real_cpu(self, *args, **kwargs)

    monkeypatch.setattr(torch.Tensor, 'cpu', counting_cpu)
    aug = forced(['Rotate'], magnitude=0.5)
    counts = []
    for with_masks in (True, False):
        img, dets = shapes_batch('bitmap', n=2)
        if not with_masks:
            for s in dets:
                del s.gt_instances.masks
        calls.clear()
        aug(img, dets)
        counts.append(len(calls))
    assert counts == [1, 1]


def test_masks_of_another_type_are_refused_clearly():
    s = det_sample([RECT], [1])
    s.gt_instances.masks = torch.zeros(1, H, W)
    with pytest.raises(TypeError, match='Tensor.*BitmapMasks and PolygonMasks'):
        TSTAugmenter()(torch.zeros(1, 3, H, W), [s])
