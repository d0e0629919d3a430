"""One affine warp shared by an image, its boxes, its label map and its instance masks.

Frame (see docs/DESIGN): continuous pixel coordinates, pixel ``i`` spans ``[i, i + 1]``,
matrices map *source* points to *destination* points. ``F.affine_grid`` wants the inverse
map in normalised coordinates, ``theta = (N @ inv(M) @ inv(N))[:, :2]`` with
``N = [[2/W, 0, -1], [0, 2/H, -1], [0, 0, 1]]`` for the padded batch size (W, H) and
``align_corners=False``. In this frame a flip reproduces ``tensor.flip(-1)`` and boxes
agree with mmdet's ``HorizontalBoxes`` (``flip_``, ``project_``, ``clip_``, ``is_inside``).
All functions are batched: one matrix per sample (or per box), no Python loop over samples.
"""
from typing import Tuple

import numpy as np
import torch
import torch.nn.functional as F

Tensor = torch.Tensor


def compose(matrices: Tensor) -> Tensor:
    """Compose K x N x 3 x 3 matrices applied in order 0, 1, ..., K-1 -> N x 3 x 3."""
    out = matrices[0]
    for m in matrices[1:]:
        out = m @ out
    return out


def invert_affine(matrix: Tensor) -> Tensor:
    """Closed-form inverse of N x 3 x 3 affine matrices (no solver, so no device sync)."""
    a, b, tx = matrix[:, 0, 0], matrix[:, 0, 1], matrix[:, 0, 2]
    c, d, ty = matrix[:, 1, 0], matrix[:, 1, 1], matrix[:, 1, 2]
    det = a * d - b * c
    ia, ib, ic, id_ = d / det, -b / det, -c / det, a / det
    itx, ity = -(ia * tx + ib * ty), -(ic * tx + id_ * ty)
    zero, one = torch.zeros_like(a), torch.ones_like(a)
    return torch.stack([ia, ib, itx, ic, id_, ity, zero, zero, one], 1).view(-1, 3, 3)


def sampling_theta(matrix: Tensor, size: Tuple[int, int]) -> Tensor:
    """The N x 2 x 3 ``affine_grid`` theta that warps a (H, W) batch by ``matrix``."""
    h, w = size
    norm = matrix.new_tensor([[2 / w, 0, -1], [0, 2 / h, -1], [0, 0, 1]])
    denorm = matrix.new_tensor([[w / 2, 0, w / 2], [0, h / 2, h / 2], [0, 0, 1]])
    return (norm @ invert_affine(matrix) @ denorm)[:, :2]


def _precise(t: Tensor) -> Tensor:
    return t.to(torch.promote_types(t.dtype, torch.float32))


def sampling_grid(theta: Tensor, shape: torch.Size) -> Tensor:
    """``F.affine_grid(theta, shape, align_corners=False)``, built by broadcasting.

    The same N x H x W x 2 grid, as one broadcast sum of a row term and a column term (no
    base grid and no batched matmul): several times cheaper on CPU, forward and backward.
    fp32 at least: in fp16 a 1333-pixel row is off by a pixel.
    """
    n, _, h, w = shape
    theta = _precise(theta)
    xs = ((torch.arange(w, device=theta.device, dtype=theta.dtype) * 2 + 1) / w - 1)
    ys = ((torch.arange(h, device=theta.device, dtype=theta.dtype) * 2 + 1) / h - 1)
    cols = theta[:, None, None, :, 0] * xs.view(1, 1, w, 1)  # N x 1 x W x 2
    rows = theta[:, None, None, :, 1] * ys.view(1, h, 1, 1) + theta[:, None, None, :, 2]
    return cols + rows  # N x H x W x 2


def warp_images(img: Tensor, theta: Tensor) -> Tensor:
    """Bilinear warp of N x C x H x W images; points from outside the source read 0."""
    grid = sampling_grid(theta, img.shape)
    out = F.grid_sample(_precise(img), grid.to(_precise(img).dtype), mode='bilinear',
                        padding_mode='zeros', align_corners=False)
    return out.to(img.dtype)


def warp_label_maps(seg: Tensor, theta: Tensor, ignore_index: int = 255) -> Tensor:
    """Nearest warp of N x 1 x H x W integer label maps; outside the source -> ignore."""
    grid = sampling_grid(theta, seg.shape)
    shifted = (seg.to(grid.dtype) + 1).masked_fill(seg == ignore_index, 0)
    out = F.grid_sample(shifted, grid, mode='nearest', padding_mode='zeros',
                        align_corners=False)
    out = out.round().long() - 1
    return out.masked_fill(out < 0, ignore_index).to(seg.dtype)


def warp_masks(masks: np.ndarray, theta: Tensor, matrix: Tensor, batch_hw: Tuple[int, int],
               valid_hw: Tuple[int, int]) -> Tuple[np.ndarray, Tensor]:
    """Nearest warp of one image's K x h x w binary masks (any dtype, e.g. uint8).

    Each destination pixel reads the source pixel ``F.grid_sample(mode='nearest',
    align_corners=False)`` would read on the same ``theta`` (round half to even, as its
    ``nearbyint``), without a float copy of the masks; destinations that read from
    outside the source, or lie outside the real image ``valid_hw`` (the padding keeps
    its zeros), are 0. Only the destination box each mask can reach (its source extent,
    projected by ``matrix``, one pixel of margin) is computed: the work is the objects'
    area, not K whole images.

    Args:
        masks (np.ndarray): K x h x w masks (mmdet's ``BitmapMasks.masks``), top-left
            aligned in the H x W batch.
        theta (Tensor): The image's 2 x 3 ``affine_grid`` theta for the H x W batch
            (:func:`sampling_theta`).
        matrix (Tensor): The same transform as a 3 x 3 source -> destination matrix.
        batch_hw (tuple[int, int]): (H, W) of the batch ``theta`` was made for.
        valid_hw (tuple[int, int]): The real image's (h, w) inside the batch.

    Returns:
        tuple[np.ndarray, Tensor]: The warped K x h x w masks (dtype of ``masks``) and
        their K x 4 tight boxes (x1, y1, x2, y2; zeros for an empty mask).
    """
    k, h, w = masks.shape
    # numpy's zeros are lazily zeroed pages: only the regions written below cost
    out = np.zeros(masks.shape, masks.dtype)  # (np.zeros_like fills: not lazy)
    boxes = torch.zeros(k, 4)
    # numpy: one pass per axis, several times faster than torch's bool reductions
    rows, cols = torch.from_numpy(masks.any(2)), torch.from_numpy(masks.any(1))
    source, target = torch.from_numpy(masks), torch.from_numpy(out)
    grid = sampling_grid(theta[None], (1, 1, *batch_hw))[0, :h, :w]
    src_x = torch.round(((grid[..., 0] + 1) * batch_hw[1] - 1) / 2)
    src_y = torch.round(((grid[..., 1] + 1) * batch_hw[0] - 1) / 2)
    reads = (src_x >= 0) & (src_x < w) & (src_y >= 0) & (src_y < h)
    src_y, src_x = src_y.clamp(0, h - 1).long(), src_x.clamp(0, w - 1).long()
    limit = torch.tensor([min(valid_hw[1], w), min(valid_hw[0], h)] * 2)
    for i in range(k):
        ys, xs = rows[i].nonzero(), cols[i].nonzero()
        if not len(ys):
            continue
        extent = torch.tensor([[xs[0, 0], ys[0, 0], xs[-1, 0] + 1, ys[-1, 0] + 1]],
                              dtype=matrix.dtype)
        reach = project_boxes(extent, matrix[None])[0]
        x1, y1 = (reach[:2].floor() - 1).clamp(min=0).long().tolist()
        x2, y2 = torch.minimum(reach[2:].ceil() + 1, limit[2:]).long().tolist()
        if x2 <= x1 or y2 <= y1:
            continue
        box = (slice(y1, y2), slice(x1, x2))
        # 2-D indices: a strided mask is read in place, not copied whole
        region = source[i][src_y[box], src_x[box]] * reads[box].to(source.dtype)
        target[i][box] = region
        on_y, on_x = region.any(1).nonzero(), region.any(0).nonzero()
        if len(on_y):
            boxes[i] = torch.tensor([x1 + on_x[0, 0], y1 + on_y[0, 0],
                                     x1 + on_x[-1, 0] + 1, y1 + on_y[-1, 0] + 1])
    return out, boxes


def project_polygons(polygons: list, matrix) -> list:
    """Each point of mmdet ``PolygonMasks.masks`` (instances x parts x flat xy arrays)
    moved by one 3 x 3 numpy ``matrix``: exact, in the frame of the boxes."""
    linear, shift = matrix[:2, :2].T, matrix[:2, 2]
    return [[(part.reshape(-1, 2) @ linear + shift).reshape(-1).astype(part.dtype)
             for part in parts] for parts in polygons]


def project_boxes(boxes: Tensor, matrix: Tensor) -> Tensor:
    """Enclosing boxes of the 4 projected corners, K x 4 (x1, y1, x2, y2) with K x 3 x 3.

    The same corner transform as ``HorizontalBoxes.project_``, one matrix per box.
    """
    x1, y1, x2, y2 = boxes.unbind(-1)
    xs = torch.stack([x1, x2, x1, x2], -1)  # K x 4 corners
    ys = torch.stack([y1, y1, y2, y2], -1)
    m = matrix.to(boxes.dtype)
    px = m[:, 0, 0:1] * xs + m[:, 0, 1:2] * ys + m[:, 0, 2:3]
    py = m[:, 1, 0:1] * xs + m[:, 1, 1:2] * ys + m[:, 1, 2:3]
    return torch.stack(
        [px.min(-1).values, py.min(-1).values, px.max(-1).values, py.max(-1).values], -1)


def clip_and_filter_boxes(old: Tensor, new: Tensor, hw: Tensor,
                          min_size: float) -> Tuple[Tensor, Tensor]:
    """Clip projected boxes to each real image and mark the ones to keep.

    A box is dropped when it leaves its image (mmdet's ``is_inside`` test on the unclipped
    box) or when clipping made a side shorter than ``min_size`` that was not already
    shorter before the transform (so the identity never drops a box).

    Args:
        old (Tensor): K x 4 boxes before the transform.
        new (Tensor): K x 4 boxes after it (``project_boxes``).
        hw (Tensor): K x 2 real (h, w) of each box's image.
        min_size (float): shortest side a transformed box may have.

    Returns:
        tuple[Tensor, Tensor]: clipped K x 4 boxes and a K bool keep mask.
    """
    h, w = hw[:, 0].to(new.dtype), hw[:, 1].to(new.dtype)
    inside = (new[:, 0] < w) & (new[:, 1] < h) & (new[:, 2] > 0) & (new[:, 3] > 0)
    x1, x2 = new[:, 0].clamp(min=0), new[:, 2]
    y1, y2 = new[:, 1].clamp(min=0), new[:, 3]
    x1, x2 = torch.minimum(x1, w), torch.minimum(x2, w).clamp(min=0)
    y1, y2 = torch.minimum(y1, h), torch.minimum(y2, h).clamp(min=0)
    clipped = torch.stack([x1, y1, x2, y2], -1)
    old_w, old_h = old[:, 2] - old[:, 0], old[:, 3] - old[:, 1]
    big_enough = ((x2 - x1 >= torch.clamp(old_w, max=min_size))
                  & (y2 - y1 >= torch.clamp(old_h, max=min_size)))
    return clipped, inside & big_enough
