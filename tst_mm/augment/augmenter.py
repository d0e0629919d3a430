"""TSTAugmenter: TST's differentiable augmenter for mmdet / mmseg batches.

Steps of one forward (``TSTAugmenter.forward``):

1. sample the policy for the batch (:meth:`TSTPolicy.sample`): which k ops per sample,
   their gates, signs, magnitudes and noise;
2. pixel ops, residual on the clean image as the reference:
   ``x + sum_i g_i * (T_i(x) - x)``, clamped to 0-255 (each op's fn returns its change
   ``T_i(x) - x`` directly);
3. the sampled geometric ops compose into ONE affine matrix per sample (a gate scales its
   op's parameter, so "off" is the identity) and the image is warped once;
4. boxes, label maps and instance masks of new data samples see the same matrix.
"""
from typing import Callable, List, Optional, Sequence, Tuple, Union

import numpy as np
import torch
from mmengine.registry import MODELS
from mmengine.structures import PixelData

from .geometry import (clip_and_filter_boxes, compose, project_boxes, project_polygons,
                       sampling_theta, warp_images, warp_label_maps, warp_masks)
from .ops import OPS, PIXEL_MAX, OpContext
from .policy import PolicySample, TSTPolicy

Tensor = torch.Tensor
BOX_FIELDS = ('gt_instances', 'ignored_instances')
MASK_TYPES = ('BitmapMasks', 'PolygonMasks')


@MODELS.register_module()
class TSTAugmenter(TSTPolicy):
    """Learned, differentiable augmentation of a padded pixel-space batch (TST).

    Args:
        ops (Sequence[str], optional): op names from :data:`tst_mm.augment.OPS`; None means
            all 14. Defaults to None.
        num_ops (int): ops drawn per sample (or per batch). Defaults to 4.
        temperature (float): relaxed-Bernoulli temperature of the gates. Defaults to 0.05.
        per_sample (bool): each sample draws its own ops, gates, signs and noise. True
            gives more varied views per step and averages each parameter's gradient over
            more draws; the cost is that every op drawn by any sample runs (only on the
            samples that drew it). False reproduces the reference: one draw per batch.
            Defaults to True.
        hard_gates (bool): straight-through gates (hard 0/1 forward, relaxed backward).
            Defaults to False; gates are always hard in eval mode.
        gate_estimator (str): ``'relaxed'`` (the reference's relaxed Bernoulli) or
            ``'straight_through'`` (hard Bernoulli gates, the gradient of their mean:
            every draw gives the probabilities a gradient), see :class:`TSTPolicy`.
            Defaults to 'relaxed'.
        op_cfgs (dict, optional): per-op ``range`` / initial ``magnitude`` /
            ``probability`` overrides, see :class:`TSTPolicy`. Defaults to None.
        seg_ignore_index (int): label written where a warped label map has no source.
            Defaults to 255.
        min_box_size (float): a transformed box whose clipped side falls below this (in
            pixels) is dropped, with its label. Defaults to 1.
        init_cfg (dict, optional): mmengine init config. Defaults to None.

    Instance masks (``gt_instances.masks``, ``ignored_instances.masks``) follow the
    warp and keep their type: ``BitmapMasks`` by a nearest warp in the image's pixel
    frame (nearest, not bilinear + threshold: a mask pixel is then exactly the label of
    the image pixel it was warped with, as for label maps), ``PolygonMasks`` by moving
    every point exactly and clipping to the image (mmdet's own ``crop``). Masks are host
    (numpy) data, so they are warped on the host, with the matrices brought over in the
    same copy as the kept-box mask. An instance whose box is dropped loses its mask.

    Randomness: which ops each sample applies comes from torch's CPU generator (so the
    host knows, without reading the device, which ops and rows to compute); gates, signs
    and noise are drawn on the inputs' device. ``torch.manual_seed`` seeds both. The only
    device-to-host copy is the kept-box mask (with the matrices when there are masks),
    once per batch that has boxes and a warp.
    """

    def __init__(self, ops: Optional[Sequence[str]] = None, num_ops: int = 4,
                 temperature: float = 0.05, per_sample: bool = True,
                 hard_gates: bool = False, op_cfgs: Optional[dict] = None,
                 seg_ignore_index: int = 255, min_box_size: float = 1.0,
                 init_cfg: Optional[dict] = None, gate_estimator: str = 'relaxed') -> None:
        super().__init__(ops, num_ops, temperature, per_sample, hard_gates, op_cfgs,
                         init_cfg, gate_estimator)
        if min_box_size < 0:
            raise ValueError(f'min_box_size must be >= 0, got {min_box_size!r}')
        self.seg_ignore_index, self.min_box_size = seg_ignore_index, float(min_box_size)
        self._pixel_ops = [j for j, n in enumerate(self.op_names) if not OPS[n].geometric]
        self._geometric_ops = [j for j, n in enumerate(self.op_names) if OPS[n].geometric]

    def forward(self, inputs: Tensor, data_samples: Optional[list] = None
                ) -> Tuple[Tensor, Optional[list]]:
        """Augment a batch; the caller's data samples are left untouched.

        Args:
            inputs (Tensor): N x 3 x H x W float, RGB pixel values 0-255, padded
                bottom/right beyond each sample's ``metainfo['img_shape']``.
            data_samples (list, optional): mmdet ``DetDataSample`` / mmseg
                ``SegDataSample``, with or without ground truth. Defaults to None.

        Returns:
            tuple: the augmented batch (fp32, or fp64 for fp64 inputs; autocast is off
            inside) and new data samples with transformed ``gt_instances``,
            ``ignored_instances`` (boxes and masks) and ``gt_sem_seg`` (None if none
            were given).
        """
        n, _, h, w = inputs.shape
        device = inputs.device
        dtype = inputs.dtype if inputs.dtype == torch.float64 else torch.float32
        _check_samples(data_samples, n, device)
        with torch.autocast(device.type, enabled=False):
            x = inputs.to(dtype)
            draw = self.sample(n, device, dtype)
            ctx = _context(data_samples, x, draw.noise)
            x = self._apply_pixel_ops(x, draw, ctx)
            drawn = [j for j in self._geometric_ops if draw.selected[:, j].any()]
            if not drawn:  # no sample drew a geometric op: nothing to warp
                return x, _clone(data_samples)
            rows = _rows(draw.selected[:, drawn].any(1))
            sel = _selector(rows, device)
            matrix = compose(torch.stack([  # table order; an op not drawn is the identity
                OPS[self.op_names[j]].fn(draw.weights[sel, j] * draw.values[sel, j],
                                         ctx.hw[sel])
                for j in drawn]))
            theta = sampling_theta(matrix, (h, w))
            # Warp inside the real image only (the padding keeps its value); a sample whose
            # gates are all off keeps its exact pixels.
            identity = (matrix == torch.eye(3, device=device, dtype=dtype)).flatten(1).all(1)
            move = (~identity).to(dtype).view(-1, 1, 1, 1)
            if ctx.padded:
                move = move * ctx.valid[sel]
            xr, put = _take_rows(x, sel)
            # lerp is exact at weights 0 and 1 (and cheaper than where on CPU)
            x = put(torch.lerp(xr, warp_images(xr, theta), move))
            samples = self._warp_samples(_clone(data_samples), rows.tolist(), (h, w), matrix,
                                         theta, move, identity, ctx.hw[sel])
        return x, samples

    def _apply_pixel_ops(self, x: Tensor, draw: PolicySample, ctx: OpContext) -> Tensor:
        """``clamp(x + sum_i w_i * change_i(x), 0, 255)``, each op only on the samples that
        drew it (their indices are known on the host, so nothing is read back).

        A linear op's change is ``v * fn(x, 1)``: its unit change is computed without
        autograd and ``w * v`` becomes its coefficient; other ops keep their own graph
        (straight-through) with coefficient ``w``. :class:`_ResidualSum` adds them up.
        """
        sels, coefs, changes = [], [], []
        for j in self._pixel_ops:
            rows = _rows(draw.selected[:, j])
            if rows is None:
                continue
            sel = _selector(rows, x.device)
            sub = ctx._replace(valid=ctx.valid[sel], hw=ctx.hw[sel], noise=ctx.noise[sel])
            change, coef = self._pixel_change(self.op_names[j], x[sel],
                                              draw.weights[sel, j], draw.values[sel, j],
                                              sub)
            changes.append(change)
            coefs.append(coef)
            sels.append(sel)
        if not changes:
            return x
        return _ResidualSum.apply(x, sels, ctx.valid if ctx.padded else None, *coefs,
                                  *changes)

    def _pixel_change(self, name: str, img: Tensor, weight: Tensor, value: Tensor,
                      ctx: OpContext) -> Tuple[Tensor, Tensor]:
        """Op ``name``'s change on ``img`` and its coefficient in the residual sum."""
        spec = OPS[name]
        if spec.linear:
            with torch.no_grad():
                change = spec.fn(img, torch.ones_like(value), ctx)
            return change, weight * value
        return spec.fn(img, value, ctx), weight

    def _warp_samples(self, samples: Optional[list], rows_list: List[int],
                      size: Tuple[int, int], matrix: Tensor, theta: Tensor, move: Tensor,
                      identity: Tensor, hw: Tensor) -> Optional[list]:
        """Transform boxes and label maps of the warped samples in place.

        ``matrix``, ``theta``, ``move``, ``identity`` and ``hw`` hold one entry per warped
        sample, whose batch indices are ``rows_list``; ``size`` is the batch's (H, W).
        """
        if samples is None:
            return None
        # Boxes of every warped sample and field in one batch, then split back.
        groups = [(r, k, f) for k, r in enumerate(rows_list) for f in BOX_FIELDS
                  if _instances(samples[r], f) is not None]
        if groups:
            insts = [getattr(samples[r], f) for r, _, f in groups]
            boxes = [_box_tensor(i.bboxes) for i in insts]
            counts = [len(b) for b in boxes]
            owner = torch.repeat_interleave(torch.tensor([k for _, k, _ in groups]),
                                            torch.tensor(counts)).to(matrix.device)
            old = torch.cat(boxes)
            new = project_boxes(old, matrix.detach()[owner])  # no gradient to boxes
            clipped, keep = clip_and_filter_boxes(old, new, hw[owner].to(old.dtype),
                                                  self.min_box_size)
            same = identity[owner].to(old.device)
            clipped = torch.where(same[:, None], old, clipped)
            keep = keep | same
            matrix_host = None
            if any('masks' in inst for inst in insts):  # the matrices ride along
                host = torch.cat([keep.to(matrix.dtype), matrix.detach().flatten()]).cpu()
                keep_host, matrix_host = host[:len(keep)] > 0.5, host[len(keep):].view(-1, 3, 3)
            else:
                keep_host = keep.cpu()  # the one sync: boxes are dropped on the host
            parts = zip(groups, insts, clipped.split(counts), keep_host.split(counts))
            for (r, k, f), inst, b, mask in parts:
                inst = inst.clone()  # a new InstanceData: the caller's stays as it was
                if 'masks' in inst and not _is_identity(matrix_host[k]):
                    inst.masks, tight = _warp_instance_masks(
                        inst.masks, matrix_host[k], size, _real_size(samples[r], size))
                    # The box becomes the warped mask's tight box (a rotated box's
                    # corners enclose far more than the object); an instance whose
                    # mask left the image goes too.
                    mask = mask & (tight[:, 2:] > tight[:, :2]).all(1)
                    b = tight.to(b.device, b.dtype)
                raw = inst.bboxes
                inst.bboxes = type(raw)(b) if not isinstance(raw, Tensor) else b
                setattr(samples[r], f, _select(inst, mask))
        # Label maps, all warped samples at once.
        seg_rows = [k for k, r in enumerate(rows_list) if hasattr(samples[r], 'gt_sem_seg')]
        if seg_rows:
            h, w = size
            fields = [_label_field(samples[rows_list[k]].gt_sem_seg) for k in seg_rows]
            maps = [samples[rows_list[k]].gt_sem_seg.get(f) for k, f in zip(seg_rows, fields)]
            seg = torch.stack([_pad_to(m, (h, w), self.seg_ignore_index) for m in maps])
            pick = torch.tensor(seg_rows, device=theta.device)
            warped = warp_label_maps(seg, theta[pick], self.seg_ignore_index)
            seg = torch.where(move[pick] > 0, warped, seg)
            for k, field, m, s in zip(seg_rows, fields, maps, seg):
                data = s[:, :m.shape[-2], :m.shape[-1]].to(m.dtype)
                samples[rows_list[k]].gt_sem_seg = PixelData(
                    **{field: data}, metainfo=samples[rows_list[k]].gt_sem_seg.metainfo)
        return samples


def _label_field(label_map: PixelData) -> str:
    """The field holding the label map: mmseg packs it as ``data``, mmdet's panoptic
    pipeline as ``sem_seg``."""
    for field in ('data', 'sem_seg'):
        if field in label_map:
            return field
    raise KeyError(f'gt_sem_seg has neither a `data` (mmseg) nor a `sem_seg` (mmdet) '
                   f'field, only {list(label_map.keys())}')


class _ResidualSum(torch.autograd.Function):
    """``clamp(x + valid * sum_k coef_k * change_k, 0, 255)``, change_k on rows sel_k.

    ``valid`` (None: everywhere) keeps the padding beyond each real image as it was. One
    buffer, in-place ``addcmul_``: no full-size temporary per op, where autograd through
    per-op adds would copy one (in-place adds clone the gradient, slices zero-fill one,
    CPU ``index_add`` is a scatter). Backward: one masked gradient, a dot product per
    coefficient and ``grad * coef`` only for changes that need a gradient.
    """

    @staticmethod
    def forward(ctx, x: Tensor, sels: list, valid: Optional[Tensor],
                *tensors: Tensor) -> Tensor:
        coefs, changes = tensors[:len(sels)], tensors[len(sels):]
        acc = x.clone()
        for sel, coef, change in zip(sels, coefs, changes):
            if isinstance(sel, slice):
                acc[sel].addcmul_(change, coef.view(-1, 1, 1, 1))
            else:
                acc.index_add_(0, sel, change * coef.view(-1, 1, 1, 1))
        if valid is not None:
            acc = torch.lerp(x, acc, valid)  # exact where valid is 0 or 1
        # Clamped in place: a value lies strictly inside (0, 255) after the clamp iff it
        # did before, which is all hardtanh's backward asks.
        acc.clamp_(0, PIXEL_MAX)
        ctx.sels = sels
        ctx.save_for_backward(acc, valid, *coefs, *changes)
        return acc

    @staticmethod
    def backward(ctx, grad: Tensor):
        acc, valid, *tensors = ctx.saved_tensors
        n = len(ctx.sels)
        coefs, changes = tensors[:n], tensors[n:]
        # zero where the clamp saturated, as F.hardtanh's backward (one pass)
        grad_x = torch.ops.aten.hardtanh_backward(grad, acc, 0.0, PIXEL_MAX)
        grad = grad_x if valid is None else grad_x * valid
        grad_coefs, grad_changes = [], []
        for k, (sel, coef, change) in enumerate(zip(ctx.sels, coefs, changes)):
            rows = grad[sel] if isinstance(sel, slice) else grad.index_select(0, sel)
            grad_coefs.append(torch.linalg.vecdot(rows.flatten(1), change.flatten(1))
                              if ctx.needs_input_grad[3 + k] else None)
            grad_changes.append(rows * coef.view(-1, 1, 1, 1)
                                if ctx.needs_input_grad[3 + n + k] else None)
        return (grad_x if ctx.needs_input_grad[0] else None, None, None, *grad_coefs,
                *grad_changes)


def _rows(mask: Tensor) -> Optional[Tensor]:
    """Indices (host tensor) of the True entries of a host bool mask, None if none."""
    idx = mask.nonzero().flatten()
    return idx if len(idx) else None


def _selector(rows: Tensor, device: torch.device) -> Union[slice, Tensor]:
    """A slice for a contiguous run of rows (views, no copies), else a device index."""
    first, last = int(rows[0]), int(rows[-1])  # host tensor: no sync
    if last - first + 1 == len(rows):
        return slice(first, last + 1)
    return rows.to(device, non_blocking=True)


def _take_rows(x: Tensor, sel: Union[slice, Tensor]) -> Tuple[Tensor, Callable]:
    """``x[sel]`` and a function that returns x with those rows replaced (out of place).

    Contiguous rows go through ``split`` / ``cat``: their backward is one concatenation,
    where indexing a slice zero-fills a full-size gradient per slice and CPU ``index_add``
    is a slow scatter. Scattered rows use ``index_select`` / ``index_copy``.
    """
    if not isinstance(sel, slice):
        return x.index_select(0, sel), lambda rows: x.index_copy(0, sel, rows)
    n, a, b = len(x), sel.start, sel.stop
    if a == 0 and b == n:
        return x, lambda rows: rows
    head, mid, tail = x.split([a, b - a, n - b])
    return mid, lambda rows: torch.cat([head, rows, tail])


def _real_size(sample, size: Tuple[int, int]) -> Tuple[int, int]:
    """A sample's real (h, w) in the (H, W) batch: its ``img_shape``, else the batch's."""
    shape = sample.metainfo.get('img_shape', size)
    return min(shape[0], size[0]), min(shape[1], size[1])


def _context(samples: Optional[list], x: Tensor, noise: Tensor) -> OpContext:
    """Each sample's real size and mask (from ``img_shape``; the batch size where unknown)."""
    n, _, h, w = x.shape
    sizes = [_real_size(s, (h, w)) for s in samples] if samples else [(h, w)] * n
    hw = torch.tensor(sizes, dtype=x.dtype).to(x.device, non_blocking=True)
    padded = any(s != (h, w) for s in sizes)  # decided on the host: no sync
    if padded:
        ys = torch.arange(h, device=x.device, dtype=x.dtype).view(1, 1, h, 1)
        xs = torch.arange(w, device=x.device, dtype=x.dtype).view(1, 1, 1, w)
        valid = ((ys < hw[:, 0].view(n, 1, 1, 1)).to(x.dtype)
                 * (xs < hw[:, 1].view(n, 1, 1, 1)).to(x.dtype))
    else:
        valid = x.new_ones(1, 1, 1, 1).expand(n, 1, h, w)
    return OpContext(valid, hw, noise, padded)


def _select(inst, keep: Tensor):
    """``inst[keep]``, faster: nothing when all are kept, masks by one numpy index
    (InstanceData indexes them one instance at a time and concatenates)."""
    if keep.all():
        return inst
    masks = inst.pop('masks', None)
    kept = inst[keep]
    if isinstance(getattr(masks, 'masks', None), np.ndarray):  # BitmapMasks
        kept.masks = _bitmap_masks(type(masks), masks.masks[keep.numpy()], masks.height,
                                   masks.width)
    elif masks is not None:
        kept.masks = masks[keep.numpy()]
    return kept


def _is_identity(matrix: Tensor) -> bool:
    return torch.equal(matrix, torch.eye(3, dtype=matrix.dtype))


def _warp_instance_masks(masks, matrix: Tensor, size: Tuple[int, int],
                         real: Tuple[int, int]) -> tuple:
    """One sample's ``BitmapMasks`` / ``PolygonMasks`` warped by its 3 x 3 host matrix
    in the (H, W) batch ``size`` and clipped to the ``real`` (h, w) image, and the
    warped masks' tight boxes."""
    from mmdet.structures.bbox import HorizontalBoxes  # mmdet-only data
    from mmdet.structures.mask import PolygonMasks
    height, width = masks.height, masks.width
    if isinstance(masks, PolygonMasks):
        moved = PolygonMasks(project_polygons(masks.masks, matrix.double().numpy()),
                             height, width)
        clipped = moved.crop(np.array([0, 0, real[1], real[0]], dtype=np.float32))
        warped = PolygonMasks(clipped.masks, height, width)
        return warped, HorizontalBoxes.from_instance_masks(warped).tensor
    theta = sampling_theta(matrix[None], size)[0]  # as the image's, from the same matrix
    warped, boxes = warp_masks(masks.masks, theta, matrix, size, real)
    return _bitmap_masks(type(masks), warped, height, width), boxes


def _bitmap_masks(cls, array: np.ndarray, height: int, width: int):
    """``cls(array, height, width)`` without its copy: BitmapMasks(array) copies through
    np.stack, touching every (lazily zeroed) page of a new array."""
    masks = cls([], height, width)
    masks.masks = array
    return masks


def _check_samples(samples: Optional[list], n: int, device: torch.device) -> None:
    if samples is None:
        return
    if len(samples) != n:
        raise ValueError(f'got {len(samples)} data samples for a batch of {n}')
    for i, s in enumerate(samples):
        for f in BOX_FIELDS:
            inst = _instances(s, f)
            if inst is None:
                continue
            _check_device(_box_tensor(inst.bboxes), device, f'data_samples[{i}].{f}.bboxes')
            masks = inst.get('masks')
            if masks is not None and type(masks).__name__ not in MASK_TYPES:
                raise TypeError(f'{f}.masks is a {type(masks).__name__}; TSTAugmenter '
                                f'warps mmdet {" and ".join(MASK_TYPES)} (what '
                                "mmdet's LoadAnnotations(with_mask=True) gives)")
        if hasattr(s, 'gt_sem_seg'):
            seg = s.gt_sem_seg.get(_label_field(s.gt_sem_seg))
            _check_device(seg, device, f'data_samples[{i}].gt_sem_seg')


def _check_device(tensor: Tensor, device: torch.device, what: str) -> None:
    """Boxes and label maps are transformed on the images' device (a host-side check:
    ``Tensor.device`` needs no sync)."""
    if tensor.device != device:
        raise ValueError(
            f'{what} is on {tensor.device} but the images are on {device}: move the data '
            'samples to the images\' device first (mmdet\'s and mmseg\'s data '
            'preprocessors do; by hand: `[s.to(device) for s in data_samples]`)')


def _instances(sample, field: str):
    inst = getattr(sample, field, None)
    return inst if inst is not None and 'bboxes' in inst else None


def _box_tensor(boxes) -> Tensor:
    return boxes if isinstance(boxes, Tensor) else boxes.tensor


def _clone(samples: Optional[list]) -> Optional[list]:
    # Shallow: new sample objects; the fields we transform get new objects too.
    return None if samples is None else [s.clone() for s in samples]


def _pad_to(seg: Tensor, size: Tuple[int, int], value: int) -> Tensor:
    """Pad a 1 x h x w label map bottom/right to the batch size."""
    dh, dw = size[0] - seg.shape[-2], size[1] - seg.shape[-1]
    if dh == 0 and dw == 0:
        return seg
    return torch.nn.functional.pad(seg, (0, dw, 0, dh), value=value)
