"""TSTAugmenter: TST's differentiable augmenter for mmdet / mmseg batches.

Steps of one forward (``TSTAugmenter.forward``):

1. sample the policy for the batch (:meth:`TSTPolicy.sample`): which k ops per sample,
   their gates, signs, magnitudes and noise;
2. pixel ops, residual on the clean image as the reference:
   ``x + sum_i g_i * (T_i(x) - x)``, clamped to 0-255;
3. the sampled geometric ops compose into ONE affine matrix per sample (a gate scales its
   op's parameter, so "off" is the identity) and the image is warped once;
4. boxes and label maps of new data samples see the same matrix.
"""
from typing import List, Optional, Sequence, Tuple

import torch
from mmengine.registry import MODELS
from mmengine.structures import PixelData

from .geometry import (clip_and_filter_boxes, compose, project_boxes, sampling_theta,
                       warp_images, warp_label_maps)
from .ops import OPS, PIXEL_MAX, OpContext
from .policy import PolicySample, TSTPolicy

Tensor = torch.Tensor
BOX_FIELDS = ('gt_instances', 'ignored_instances')


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
        op_cfgs (dict, optional): per-op ``range`` / initial ``magnitude`` /
            ``probability`` overrides, see :class:`TSTPolicy`. Defaults to None.
        seg_ignore_index (int): label written where a warped label map has no source.
            Defaults to 255.
        min_box_size (float): a transformed box whose clipped side falls below this (in
            pixels) is dropped, with its label. Defaults to 1.
        init_cfg (dict, optional): mmengine init config. Defaults to None.
    """

    def __init__(self, ops: Optional[Sequence[str]] = None, num_ops: int = 4,
                 temperature: float = 0.05, per_sample: bool = True,
                 hard_gates: bool = False, op_cfgs: Optional[dict] = None,
                 seg_ignore_index: int = 255, min_box_size: float = 1.0,
                 init_cfg: Optional[dict] = None) -> None:
        super().__init__(ops, num_ops, temperature, per_sample, hard_gates, op_cfgs,
                         init_cfg)
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
            ``ignored_instances`` and ``gt_sem_seg`` (None if none were given).
        """
        n, _, h, w = inputs.shape
        device = inputs.device
        dtype = inputs.dtype if inputs.dtype == torch.float64 else torch.float32
        _check_samples(data_samples, n)
        with torch.autocast(device.type, enabled=False):
            x = inputs.to(dtype)
            hw = _real_sizes(data_samples, n, (h, w)).to(device=device, dtype=dtype)
            ys = torch.arange(h, device=device, dtype=dtype).view(1, 1, h, 1)
            xs = torch.arange(w, device=device, dtype=dtype).view(1, 1, 1, w)
            valid = (ys < hw[:, 0].view(n, 1, 1, 1)) & (xs < hw[:, 1].view(n, 1, 1, 1))
            draw = self.sample(n, device, dtype)
            x = self._apply_pixel_ops(x, draw, OpContext(valid, hw, draw.noise))
            rows = _rows(draw.selected[:, self._geometric_ops].any(1))
            if rows is None:  # no sample drew a geometric op: nothing to warp
                return x, _clone(data_samples)
            idx = rows.to(device, non_blocking=True)
            matrix = compose(torch.stack([
                OPS[self.op_names[j]].fn(draw.weights[:, j] * draw.values[:, j], hw)
                for j in self._geometric_ops])).index_select(0, idx)
            theta = sampling_theta(matrix, (h, w))
            identity = (matrix == torch.eye(3, device=device, dtype=dtype)).flatten(1).all(1)
            # Warp inside the real image only (padding keeps its value); gate-off exact.
            change = valid.index_select(0, idx) & ~identity.view(-1, 1, 1, 1)
            xr = x.index_select(0, idx)
            warped = torch.where(change, warp_images(xr, theta).clamp(0, PIXEL_MAX), xr)
            x = warped if len(rows) == n else x.index_copy(0, idx, warped)
            samples = self._warp_samples(_clone(data_samples), rows.tolist(), matrix, theta,
                                         change, identity, hw.index_select(0, idx))
        return x, samples

    def _apply_pixel_ops(self, x: Tensor, draw: PolicySample, ctx: OpContext) -> Tensor:
        """``clamp(x + sum_i w_i * (T_i(x) - x))``, each op only on the samples that drew
        it (their indices are known on the host, so nothing is read back)."""
        delta = None
        for j in self._pixel_ops:
            rows = _rows(draw.selected[:, j])
            if rows is None:
                continue
            fn, full = OPS[self.op_names[j]].fn, len(rows) == len(x)
            idx = rows.to(x.device, non_blocking=True)
            xr, sub = (x, ctx) if full else (x[idx], OpContext(*(t[idx] for t in ctx)))
            weight, value = draw.weights[idx, j], draw.values[idx, j]
            change = weight.view(-1, 1, 1, 1) * (fn(xr, value, sub) - xr)
            if full:
                delta = change if delta is None else delta + change
            else:
                delta = x.new_zeros(x.shape) if delta is None else delta
                delta = delta.index_add(0, idx, change)
        return x if delta is None else (x + delta).clamp(0, PIXEL_MAX)

    def _warp_samples(self, samples: Optional[list], rows_list: List[int], matrix: Tensor,
                      theta: Tensor, change: Tensor, identity: Tensor, hw: Tensor
                      ) -> Optional[list]:
        """Transform boxes and label maps of the warped samples in place.

        ``matrix``, ``theta``, ``change``, ``identity`` and ``hw`` hold one entry per warped
        sample, whose batch indices are ``rows_list``.
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
            keep_host = (keep | same).cpu()  # the one sync: boxes are dropped on the host
            for (r, _, f), inst, b, k, mask in zip(groups, insts, clipped.split(counts),
                                                    boxes, keep_host.split(counts)):
                inst = inst.clone()  # a new InstanceData: the caller's stays as it was
                raw = inst.bboxes
                inst.bboxes = type(raw)(b) if not isinstance(raw, Tensor) else b
                setattr(samples[r], f, inst[mask])
        # Label maps, all warped samples at once.
        seg_rows = [k for k, r in enumerate(rows_list) if hasattr(samples[r], 'gt_sem_seg')]
        if seg_rows:
            h, w = change.shape[-2:]
            maps = [samples[rows_list[k]].gt_sem_seg.data for k in seg_rows]
            seg = torch.stack([_pad_to(m, (h, w), self.seg_ignore_index) for m in maps])
            pick = torch.tensor(seg_rows, device=theta.device)
            warped = warp_label_maps(seg, theta[pick], self.seg_ignore_index)
            seg = torch.where(change[pick], warped, seg)
            for k, m, s in zip(seg_rows, maps, seg):
                data = s[:, :m.shape[-2], :m.shape[-1]].to(m.dtype)
                samples[rows_list[k]].gt_sem_seg = PixelData(
                    data=data, metainfo=samples[rows_list[k]].gt_sem_seg.metainfo)
        return samples


def _rows(mask: Tensor) -> Optional[Tensor]:
    """Indices (host tensor) of the True entries of a host bool mask, None if none."""
    idx = mask.nonzero().flatten()
    return idx if len(idx) else None


def _real_sizes(samples: Optional[list], n: int, size: Tuple[int, int]) -> Tensor:
    """N x 2 real (h, w) per sample, on the host; the batch size where unknown."""
    h, w = size
    shapes = [s.metainfo.get('img_shape', size) for s in samples] if samples else [size] * n
    return torch.tensor([[min(s[0], h), min(s[1], w)] for s in shapes], dtype=torch.float64)


def _check_samples(samples: Optional[list], n: int) -> None:
    if samples is None:
        return
    if len(samples) != n:
        raise ValueError(f'got {len(samples)} data samples for a batch of {n}')
    for s in samples:
        for f in BOX_FIELDS:
            inst = _instances(s, f)
            if inst is not None and 'masks' in inst:
                raise ValueError(f'TSTAugmenter does not transform instance masks ({f})')


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
