"""The op table of TST's augmenter: name -> (pure batched fn, magnitude range, signed).

The 14 ops and their AutoAugment ranges follow the TST reference (Shao et al., "Teaching
What You Should Teach", IJCAI 2023), which takes them from AutoAugment (Cubuk et al., 2019)
and PIL's ``ImageEnhance`` / ``ImageOps``. Everything else in :mod:`tst_mm.augment` (the
policy's op list, the config vocabulary, the parametrised tests) is derived from ``OPS``.

Contract of every ``fn``:

- **pixel ops** ``fn(img, value, ctx) -> img``: ``img`` is an N x 3 x H x W float batch in
  pixel space (RGB, 0-255, padded bottom/right); ``value`` is an N-vector in the op's
  physical unit (signed where the op is signed); ``ctx`` carries the real-image mask and
  per-sample noise. Pure, batched, differentiable in ``value`` where the op is smooth,
  straight-through where it is piecewise constant (Posterize, Solarize).
- **geometric ops** ``fn(value, hw) -> N x 3 x 3``: a forward affine matrix in continuous
  pixel coordinates (pixel ``i`` spans ``[i, i + 1]``) about the real image's centre;
  ``hw`` holds each sample's real (h, w).

Each fn is the identity at value 0. Ops without a learned magnitude (``magnitude_range``
is None: Equalize, Invert, Cutout) are applied at a fixed full strength of 1, and 0 still
means "off", so one contract covers the whole table.
"""
import math
from typing import Callable, Dict, NamedTuple, Optional, Tuple

import torch
import torch.nn.functional as F

Tensor = torch.Tensor

PIXEL_MAX = 255.0
CUTOUT_FRACTION = 0.2  # Cutout's square side at full strength, as a fraction of min(h, w)
CUTOUT_FILL = 128.0  # mid grey, as AutoAugment's Cutout
ST_SOFTNESS = 8.0  # width (grey levels) of Solarize's sigmoid surrogate for the backward pass


class OpContext(NamedTuple):
    """What a pixel op may need beyond the image: sampled once, shared by all ops."""
    valid: Tensor  # N x 1 x H x W bool, True inside each sample's real image
    hw: Tensor  # N x 2 float, each sample's real (h, w)
    noise: Tensor  # N x 2 float in [0, 1), e.g. Cutout's centre (y, x) as a fraction of hw


class OpSpec(NamedTuple):
    fn: Callable
    magnitude_range: Optional[Tuple[float, float]]  # None: probability only
    signed: bool  # True: a random sign per sample
    geometric: bool  # True: fn returns an affine matrix instead of an image


def _per_sample(value: Tensor) -> Tensor:
    return value.reshape(-1, 1, 1, 1)


def _gray(img: Tensor) -> Tensor:
    """ITU-R 601-2 luma, as PIL's ``convert('L')``: N x 1 x H x W."""
    r, g, b = img.unbind(1)
    return (0.299 * r + 0.587 * g + 0.114 * b).unsqueeze(1)


def _blend(img: Tensor, degenerate: Tensor, value: Tensor) -> Tensor:
    """PIL ``ImageEnhance``: factor ``1 + value`` between ``degenerate`` and ``img``."""
    return img + _per_sample(value) * (img - degenerate)


# ---------------------------------------------------------------------------- pixel ops
def brightness(img: Tensor, value: Tensor, ctx: OpContext) -> Tensor:
    return _blend(img, torch.zeros_like(img), value)


def color(img: Tensor, value: Tensor, ctx: OpContext) -> Tensor:
    return _blend(img, _gray(img), value)


def contrast(img: Tensor, value: Tensor, ctx: OpContext) -> Tensor:
    # The mean grey level of the real image only, not of the padding.
    valid = ctx.valid.to(img.dtype)
    mean = (_gray(img) * valid).sum((2, 3), keepdim=True) / valid.sum((2, 3), keepdim=True)
    return _blend(img, mean, value)


def sharpness(img: Tensor, value: Tensor, ctx: OpContext) -> Tensor:
    # PIL's SMOOTH kernel; pixels whose 3x3 window leaves the real image keep their value.
    kernel = img.new_tensor([[1., 1., 1.], [1., 5., 1.], [1., 1., 1.]]) / 13.
    smooth = F.conv2d(img, kernel.expand(img.shape[1], 1, 3, 3), padding=1,
                      groups=img.shape[1])
    interior = F.avg_pool2d(ctx.valid.to(img.dtype), 3, 1, 1, count_include_pad=True)
    return _blend(img, torch.where(interior > 1 - 1e-3, smooth, img), value)


def posterize(img: Tensor, value: Tensor, ctx: OpContext) -> Tensor:
    # Drop `value` (0-4) low bits: floor(x / 2^v) * 2^v. Straight-through on the floor, so
    # d out / d v = -frac(x / 2^v) * 2^v * ln 2 (forward stays exact).
    step = torch.exp2(_per_sample(value))
    scaled = img / step
    quantised = scaled + (torch.floor(scaled) - scaled).detach()
    return torch.where(_per_sample(value) == 0, img, quantised * step)


def solarize(img: Tensor, value: Tensor, ctx: OpContext) -> Tensor:
    # Invert pixels above the threshold 255 - value (0-255). Forward: the exact step;
    # backward: a sigmoid of width ST_SOFTNESS grey levels (straight-through).
    over = img - (PIXEL_MAX - _per_sample(value))
    soft = torch.sigmoid(over / ST_SOFTNESS)
    hard = (over > 0).to(img.dtype)
    mask = hard + (soft - soft.detach())
    return img + mask * (PIXEL_MAX - 2 * img)


@torch.no_grad()
def _equalized(img: Tensor, valid: Tensor) -> Tensor:
    """PIL's ``ImageOps.equalize`` per sample and channel over the real image, batched."""
    n, c, h, w = img.shape
    levels = img.round().clamp(0, PIXEL_MAX).long()
    bins = (torch.arange(n * c, device=img.device).view(n, c, 1, 1) * 256 + levels)
    weight = valid.expand(n, c, h, w).to(img.dtype)
    hist = img.new_zeros(n * c * 256).scatter_add_(0, bins.flatten(), weight.flatten())
    hist = hist.view(n, c, 256)
    # PIL: step = (count of all but the last non-empty bin) // 255; identity when 0.
    last = (hist > 0).float() * torch.arange(256, device=img.device)
    last_count = hist.gather(2, last.argmax(2, keepdim=True))
    step = torch.div(hist.sum(2, keepdim=True) - last_count, 255, rounding_mode='floor')
    cdf = hist.cumsum(2) - hist  # exclusive
    lut = torch.div(cdf + torch.div(step, 2, rounding_mode='floor'), step.clamp(min=1),
                    rounding_mode='floor').clamp(max=PIXEL_MAX)
    lut = torch.where(step > 0, lut, torch.arange(256, device=img.device, dtype=img.dtype))
    return lut.gather(2, levels.view(n, c, -1)).view(n, c, h, w)


def equalize(img: Tensor, value: Tensor, ctx: OpContext) -> Tensor:
    eq = torch.where(ctx.valid, _equalized(img, ctx.valid), img)
    return img + _per_sample(value) * (eq - img)


def invert(img: Tensor, value: Tensor, ctx: OpContext) -> Tensor:
    return img + _per_sample(value) * (PIXEL_MAX - 2 * img)


def cutout(img: Tensor, value: Tensor, ctx: OpContext) -> Tensor:
    # A square of side value * CUTOUT_FRACTION * min(h, w), centred at a random point of the
    # real image, filled with CUTOUT_FILL.
    n, _, h, w = img.shape
    half = (value * CUTOUT_FRACTION * ctx.hw.min(1).values / 2).view(n, 1, 1)
    centre = ctx.noise * ctx.hw  # N x 2 (y, x)
    ys = torch.arange(h, device=img.device, dtype=img.dtype) + 0.5
    xs = torch.arange(w, device=img.device, dtype=img.dtype) + 0.5
    inside_y = (ys.view(1, h, 1) - centre[:, 0].view(n, 1, 1)).abs() < half
    inside_x = (xs.view(1, 1, w) - centre[:, 1].view(n, 1, 1)).abs() < half
    hole = (inside_y & inside_x).unsqueeze(1) & ctx.valid
    return torch.where(hole, torch.full_like(img, CUTOUT_FILL), img)


# ------------------------------------------------------------------------ geometric ops
def _about_centre(a: Tensor, b: Tensor, c: Tensor, d: Tensor, hw: Tensor) -> Tensor:
    """N x 3 x 3 matrix with linear part [[a, b], [c, d]] fixing the real image's centre."""
    cy, cx = hw[:, 0] / 2, hw[:, 1] / 2
    tx = cx - (a * cx + b * cy)
    ty = cy - (c * cx + d * cy)
    zero, one = torch.zeros_like(a), torch.ones_like(a)
    return torch.stack([a, b, tx, c, d, ty, zero, zero, one], 1).view(-1, 3, 3)


def _translation(tx: Tensor, ty: Tensor) -> Tensor:
    zero, one = torch.zeros_like(tx), torch.ones_like(tx)
    return torch.stack([one, zero, tx, zero, one, ty, zero, zero, one], 1).view(-1, 3, 3)


def shear_x(value: Tensor, hw: Tensor) -> Tensor:
    one, zero = torch.ones_like(value), torch.zeros_like(value)
    return _about_centre(one, value, zero, one, hw)


def shear_y(value: Tensor, hw: Tensor) -> Tensor:
    one, zero = torch.ones_like(value), torch.zeros_like(value)
    return _about_centre(one, zero, value, one, hw)


def translate_x(value: Tensor, hw: Tensor) -> Tensor:
    return _translation(value * hw[:, 1], torch.zeros_like(value))


def translate_y(value: Tensor, hw: Tensor) -> Tensor:
    return _translation(torch.zeros_like(value), value * hw[:, 0])


def rotate(value: Tensor, hw: Tensor) -> Tensor:
    # Counter-clockwise on screen (y points down) by `value` degrees, as PIL's rotate.
    rad = value * (math.pi / 180)
    cos, sin = torch.cos(rad), torch.sin(rad)
    return _about_centre(cos, sin, -sin, cos, hw)


OPS: Dict[str, OpSpec] = {
    # name: (fn, magnitude range in the op's unit, signed, geometric)
    'Brightness': OpSpec(brightness, (0.0, 0.9), True, False),  # factor 1 +- v
    'Color': OpSpec(color, (0.0, 0.9), True, False),  # saturation factor 1 +- v
    'Contrast': OpSpec(contrast, (0.0, 0.9), True, False),  # factor 1 +- v
    'Sharpness': OpSpec(sharpness, (0.0, 0.9), True, False),  # factor 1 +- v
    'Posterize': OpSpec(posterize, (0.0, 4.0), False, False),  # bits dropped: 8 -> 4 bits
    'Solarize': OpSpec(solarize, (0.0, 255.0), False, False),  # threshold 255 - v
    'ShearX': OpSpec(shear_x, (0.0, 0.3), True, True),  # x += v * (y - cy)
    'ShearY': OpSpec(shear_y, (0.0, 0.3), True, True),  # y += v * (x - cx)
    'TranslateX': OpSpec(translate_x, (0.0, 0.45), True, True),  # fraction of real w
    'TranslateY': OpSpec(translate_y, (0.0, 0.45), True, True),  # fraction of real h
    'Rotate': OpSpec(rotate, (0.0, 30.0), True, True),  # degrees
    'Equalize': OpSpec(equalize, None, False, False),
    'Invert': OpSpec(invert, None, False, False),
    'Cutout': OpSpec(cutout, None, False, False),
}
