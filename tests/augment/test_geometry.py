"""The shared warp frame: images, mmdet boxes and label maps agree on one matrix."""
import math

import kornia
import torch
import torch.nn.functional as F
from mmdet.structures.bbox import HorizontalBoxes

from tst_mm.augment import OPS
from tst_mm.augment.geometry import (clip_and_filter_boxes, compose, invert_affine,
                                     project_boxes, sampling_theta, warp_images,
                                     sampling_grid, warp_label_maps)

H, W = 20, 30


def _affine(n, seed=0):
    g = torch.Generator().manual_seed(seed)
    hw = torch.tensor([[H, W]], dtype=torch.float64).expand(n, 2)
    parts = [OPS['Rotate'].fn((torch.rand(n, generator=g, dtype=torch.float64) - .5) * 40, hw),
             OPS['ShearX'].fn((torch.rand(n, generator=g, dtype=torch.float64) - .5) * .4, hw),
             OPS['TranslateY'].fn((torch.rand(n, generator=g, dtype=torch.float64) - .5), hw)]
    return compose(torch.stack(parts))


def _flip(n):
    return torch.tensor([[-1., 0., W], [0., 1., 0.], [0., 0., 1.]]).expand(n, 3, 3)


def test_compose_order_and_inverse():
    m = _affine(4)
    assert torch.allclose(invert_affine(m), torch.linalg.inv(m), atol=1e-12)
    a, b = _affine(4, 1), _affine(4, 2)
    assert torch.allclose(compose(torch.stack([a, b])), b @ a)


def test_grid_is_affine_grid():
    theta = sampling_theta(_affine(3, 4), (H, W))
    ours = sampling_grid(theta, torch.Size([3, 1, H, W]))
    assert torch.allclose(ours, F.affine_grid(theta, [3, 1, H, W], align_corners=False),
                          atol=1e-12)


def test_flip_matches_tensor_flip_and_mmdet_flip():
    img = torch.rand(2, 3, H, W) * 255
    out = warp_images(img, sampling_theta(_flip(2), (H, W)))
    assert torch.allclose(out, img.flip(-1), atol=1e-2)
    boxes = torch.tensor([[1., 2., 11., 9.], [0., 0., 30., 20.], [20.5, 3., 29., 4.5]])
    ref = HorizontalBoxes(boxes.clone())
    ref.flip_((H, W), direction='horizontal')
    assert torch.allclose(project_boxes(boxes, _flip(3)), ref.tensor)


def test_project_clip_and_inside_match_mmdet():
    g = torch.Generator().manual_seed(3)
    xy = torch.rand(12, 2, generator=g) * torch.tensor([W, H])
    boxes = torch.cat([xy, xy + torch.rand(12, 2, generator=g) * 15], 1)
    m = _affine(1, 5)[0].float()
    ref = HorizontalBoxes(boxes.clone())
    ref.project_(m)
    new = project_boxes(boxes, m.expand(12, 3, 3))
    assert torch.allclose(new, ref.tensor, atol=1e-4)
    clipped, keep = clip_and_filter_boxes(boxes, new, torch.tensor([[H, W]]).expand(12, 2), 0)
    inside = ref.is_inside((H, W))
    ref.clip_((H, W))
    assert torch.allclose(clipped, ref.tensor, atol=1e-4)
    assert torch.equal(keep, inside)  # min_size 0: only leaving the image drops a box


def test_boxes_that_shrink_or_leave_are_dropped_but_small_ones_kept():
    old = torch.tensor([[2., 2., 8., 8.], [2., 2., 8., 8.], [2., 2., 2.5, 8.],
                        [25., 2., 29., 8.]])
    new = torch.tensor([[-20., 2., -14., 8.], [-5.5, 2., 0.5, 8.], [2., 2., 2.5, 8.],
                        [27., 2., 31., 8.]])
    clipped, keep = clip_and_filter_boxes(old, new, torch.tensor([[H, W]]).expand(4, 2), 1.)
    # left the image / clipped to 0.5 px wide / was 0.5 px wide already / clipped to 3 px
    assert keep.tolist() == [False, False, True, True]
    assert clipped[3].tolist() == [27., 2., 30., 8.]


def test_warp_agrees_with_kornia_warp_affine():
    """Independent reference: kornia's pixel-index frame is ours shifted by half a pixel."""
    img = torch.rand(3, 3, H, W, dtype=torch.float64)
    m = _affine(3, 7)
    shift = torch.eye(3, dtype=torch.float64)
    shift[:2, 2] = 0.5
    m_index = torch.linalg.inv(shift) @ m @ shift
    ref = kornia.geometry.transform.warp_affine(img, m_index[:, :2], (H, W),
                                                align_corners=True)
    ours = warp_images(img, sampling_theta(m, (H, W)))
    assert torch.allclose(ours, ref, atol=1e-6)


def test_label_map_translation_is_exact_with_ignore_fill():
    seg = torch.randint(0, 19, (2, 1, H, W))
    seg[:, :, -3:] = 255  # padding already ignored
    hw = torch.tensor([[H, W], [H, W]], dtype=torch.float32)
    m = OPS['TranslateX'].fn(torch.tensor([4 / W, -5 / W]), hw)
    out = warp_label_maps(seg, sampling_theta(m, (H, W)))
    assert torch.equal(out[0, :, :, 4:], seg[0, :, :, :-4])
    assert (out[0, :, :, :4] == 255).all() and (out[1, :, :, -5:] == 255).all()
    assert torch.equal(out[1, :, :, :-5], seg[1, :, :, 5:])
    rot = warp_label_maps(seg, sampling_theta(OPS['Rotate'].fn(torch.full((2,), 17.), hw),
                                              (H, W)))
    assert set(rot.unique().tolist()) <= set(seg.unique().tolist())  # nearest: no new labels
    assert rot.dtype == seg.dtype


def test_rotation_moves_corners_where_the_image_goes():
    """A bright pixel's centre and its projected point land in the same place."""
    img = torch.zeros(1, 1, 41, 61)
    img[0, 0, 10, 45] = 255.
    hw = torch.tensor([[41., 61.]])
    m = OPS['Rotate'].fn(torch.tensor([30.]), hw)
    out = warp_images(img, sampling_theta(m, (41, 61)))
    ys, xs = torch.meshgrid(torch.arange(41.) + .5, torch.arange(61.) + .5, indexing='ij')
    mass = out[0, 0]
    centroid = torch.stack([(xs * mass).sum(), (ys * mass).sum()]) / mass.sum()
    point = m[0] @ torch.tensor([45.5, 10.5, 1.])
    assert (centroid - point[:2]).norm() < 0.05
    # counter-clockwise on screen: a point right of centre moves up
    assert point[1] < 10.5 and math.isclose(float(m[0, 0, 0]), math.cos(math.pi / 6),
                                            rel_tol=1e-6)
