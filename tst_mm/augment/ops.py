"""The op table of TST's augmenter: name -> (pure batched fn, magnitude range, signed).

The 14 ops and their AutoAugment ranges follow the TST reference (Shao et al., "Teaching
What You Should Teach", IJCAI 2023), which takes them from AutoAugment (Cubuk et al., 2019)
and PIL's ``ImageEnhance`` / ``ImageOps``. Everything else in :mod:`tst_mm.augment` (the
policy's op list, the config vocabulary, the parametrised tests) is derived from ``OPS``.

Contract of every ``fn``:

- **pixel ops** ``fn(img, value, ctx) -> change``: ``img`` is an N x 3 x H x W float batch
  in pixel space (RGB, 0-255, padded bottom/right); ``value`` is an N-vector in the op's
  physical unit (signed where the op is signed); ``ctx`` carries the real-image mask and
  per-sample noise. The fn returns the *change* ``T(img) - img``, unclamped: the term the
  residual composition ``x + sum_i g_i * (T_i(x) - x)`` adds up, so no op materialises
  ``T(img)`` only to subtract ``img`` again. The augmenter masks changes to the real
  image; an op minds the padding only where it reads pixels (Contrast's mean, Equalize's
  histogram, Sharpness' border). Differentiable in ``value`` where the op is smooth,
  straight-through where it is piecewise constant (Posterize, Solarize). ``linear`` ops
  satisfy ``fn(img, a * v) == a * fn(img, v)``: the augmenter computes their unit change
  ``fn(img, 1)`` without autograd and scales it by gate x value (one dot product in
  backward).
- **geometric ops** ``fn(value, hw) -> N x 3 x 3``: a forward affine matrix in continuous
  pixel coordinates (pixel ``i`` spans ``[i, i + 1]``) about the real image's centre;
  ``hw`` holds each sample's real (h, w).

Each fn is the identity at value 0 (zero change, identity matrix). Ops without a learned
magnitude (``magnitude_range`` is None: Equalize, Invert, Cutout) are applied at a fixed
full strength of 1, and 0 still means "off", so one contract covers the whole table.
All pixel ops are a few memory passes over the batch (the augmenter is memory-bound),
with float rather than bool masks (bool-mask kernels are several times slower on CPU).
"""
import math
from typing import Callable, Dict, NamedTuple, Optional, Tuple

import torch

Tensor = torch.Tensor

PIXEL_MAX = 255.0
CUTOUT_FRACTION = 0.2  # Cutout's square side at full strength, as a fraction of min(h, w)
CUTOUT_FILL = 128.0  # mid grey, as AutoAugment's Cutout
ST_SOFTNESS = 8.0  # width (grey levels) of Solarize's sigmoid surrogate for the backward pass
LUMA = (0.299, 0.587, 0.114)  # ITU-R 601-2, as PIL's convert('L')


class OpContext(NamedTuple):
    """What a pixel op may need beyond the image: built once per batch, shared by all ops."""
    valid: Tensor  # N x 1 x H x W float in the images' dtype, 1 inside each real image
    hw: Tensor  # N x 2 float, each sample's real (h, w)
    noise: Tensor  # N x 2 float in [0, 1), e.g. Cutout's centre (y, x) as a fraction of hw
    padded: bool = True  # False: every real image fills the batch (masking can be skipped)


class OpSpec(NamedTuple):
    fn: Callable
    magnitude_range: Optional[Tuple[float, float]]  # None: probability only
    signed: bool  # True: a random sign per sample
    geometric: bool = False  # True: fn returns an affine matrix instead of a change
    linear: bool = False  # True: fn(img, a * v) == a * fn(img, v)


def _per_sample(value: Tensor) -> Tensor:
    return value.reshape(-1, 1, 1, 1)


def _gray(img: Tensor) -> Tensor:
    """Luma as PIL's ``convert('L')`` (unrounded): N x 1 x H x W."""
    r, g, b = img.unbind(1)
    return (LUMA[0] * r + LUMA[1] * g + LUMA[2] * b).unsqueeze(1)


# ---------------------------------------------------------------------------- pixel ops
# PIL's ImageEnhance ops blend towards a degenerate image D with factor 1 + v:
# T(x) = D + (1 + v) * (x - D), so the change is v * (x - D).
def brightness(img: Tensor, value: Tensor, ctx: OpContext) -> Tensor:
    return _per_sample(value) * img  # D = 0


def color(img: Tensor, value: Tensor, ctx: OpContext) -> Tensor:
    v = _per_sample(value)
    return torch.addcmul(-v * _gray(img), img, v)  # D = grey image


def contrast(img: Tensor, value: Tensor, ctx: OpContext) -> Tensor:
    # D = the mean grey level of the real image only, not of the padding.
    with torch.no_grad():
        if ctx.padded:
            sums = torch.linalg.vecdot(img.flatten(2), ctx.valid.flatten(2))
        else:
            sums = img.sum((2, 3))
        mean = (sums @ img.new_tensor(LUMA)) / ctx.hw.prod(1).to(img.dtype)
    v = _per_sample(value)
    return torch.addcmul(-v * _per_sample(mean), img, v)


def _inner_mask(ctx: OpContext, shape: torch.Size, dtype: torch.dtype) -> Tensor:
    """N x 1 x H x W float, 1 on pixels whose 3x3 window lies inside the real image."""
    n, _, h, w = shape
    ys = torch.arange(h, device=ctx.hw.device, dtype=dtype).view(1, h, 1)
    xs = torch.arange(w, device=ctx.hw.device, dtype=dtype).view(1, 1, w)
    hw = ctx.hw.to(dtype)
    row = ((ys >= 1) & (ys < hw[:, 0].view(n, 1, 1) - 1)).to(dtype)
    col = ((xs >= 1) & (xs < hw[:, 1].view(n, 1, 1) - 1)).to(dtype)
    return (row * col).unsqueeze(1)


def sharpness(img: Tensor, value: Tensor, ctx: OpContext) -> Tensor:
    # D = PIL's SMOOTH filter ([[1, 1, 1], [1, 5, 1], [1, 1, 1]] / 13), so x - D is
    # (9 x - box3x3(x)) / 13; pixels whose 3x3 window leaves the real image keep x (PIL
    # keeps the border). Separable shifted sums, in place: far cheaper than a depthwise
    # conv or a 3x3 pooling on CPU.
    with torch.no_grad():
        rows = torch.add(img[..., :-2], img[..., 1:-1]).add_(img[..., 2:])
        detail = torch.zeros_like(img)
        inner = detail[..., 1:-1, 1:-1]
        torch.add(rows[..., :-2, :], rows[..., 1:-1, :], out=inner)
        inner.add_(rows[..., 2:, :]).mul_(-1 / 13).add_(img[..., 1:-1, 1:-1], alpha=9 / 13)
        if ctx.padded:  # also zero on the last row / column of each real image
            detail.mul_(_inner_mask(ctx, img.shape, img.dtype))
    return _per_sample(value) * detail


def posterize(img: Tensor, value: Tensor, ctx: OpContext) -> Tensor:
    # Drop `value` (0-4) low bits: T(x) = floor(x / 2^v) * 2^v, so the change is
    # -(x mod 2^v). Straight-through on the floor: d change / d v = ln 2 * change, which
    # the per-sample scale below carries (its forward value is exactly 1, or 0 at v = 0).
    v = _per_sample(value)
    with torch.no_grad():
        step = torch.exp2(v)
        change = (img / step).floor_().mul_(step).sub_(img)
    scale = (v != 0).to(img.dtype) * (1 + math.log(2) * (v - v.detach()))
    return change * scale


class _SolarizeST(torch.autograd.Function):
    """Exact solarize change forward; gradient of a sigmoid-softened threshold backward."""

    @staticmethod
    def forward(ctx, img: Tensor, value: Tensor) -> Tensor:
        threshold = PIXEL_MAX - _per_sample(value)
        ctx.save_for_backward(img, threshold)
        # (255 - 2x) where x > t: arithmetic masks, bool ones are slow on CPU
        above = (img - threshold).sign_().clamp_(min=0)
        return above.mul_(img.mul(-2.0).add_(PIXEL_MAX))

    @staticmethod
    def backward(ctx, grad: Tensor):
        img, threshold = ctx.saved_tensors
        # d mask / d value = sigmoid'((x - t) / s) / s (the threshold t falls as the value
        # rises), times the change 255 - 2x; a handful of in-place passes.
        soft = img.sub(threshold).div_(ST_SOFTNESS).sigmoid_()
        slope = soft.sub_(soft * soft).mul_(img.mul(-2.0).add_(PIXEL_MAX))
        return None, torch.linalg.vecdot(grad.flatten(1), slope.flatten(1)) / ST_SOFTNESS


def solarize(img: Tensor, value: Tensor, ctx: OpContext) -> Tensor:
    # Invert pixels above the threshold 255 - value (0-255): change 255 - 2x there.
    return _SolarizeST.apply(img, value)


@torch.no_grad()
def _equalized(img: Tensor, ctx: OpContext) -> Tensor:
    """PIL's ``ImageOps.equalize`` per sample and channel over the real image, batched."""
    n, c = img.shape[:2]
    bins = n * c * 256
    offset = torch.arange(0.5, bins, 256, device=img.device, dtype=img.dtype)  # + rounding
    index = img.clamp(0, PIXEL_MAX).add_(offset.view(n, c, 1, 1))
    if ctx.padded:  # padding pixels count in a spare last bin
        index = torch.lerp(torch.full_like(index, bins), index, ctx.valid)
    index = index.long()
    hist = img.new_zeros(bins + 1).index_add_(0, index.flatten(),
                                              img.new_ones(1).expand(index.numel()))
    hist = hist[:bins].view(n * c, 256)
    # PIL: step = (count of all but the last non-empty bin) // 255; identity when 0.
    levels = torch.arange(256, device=img.device, dtype=img.dtype)
    last = hist.gather(1, ((hist > 0) * levels).argmax(1, keepdim=True))
    step = torch.div(hist.sum(1, keepdim=True) - last, 255, rounding_mode='floor')
    lut = torch.div(hist.cumsum(1) - hist + torch.div(step, 2, rounding_mode='floor'),
                    step.clamp(min=1), rounding_mode='floor').clamp(max=PIXEL_MAX)
    lut = torch.where(step > 0, lut, levels)
    return torch.cat([lut.flatten(), lut.new_zeros(1)]).take(index)


def equalize(img: Tensor, value: Tensor, ctx: OpContext) -> Tensor:
    with torch.no_grad():
        detail = _equalized(img, ctx).sub_(img)
    return _per_sample(value) * detail


def invert(img: Tensor, value: Tensor, ctx: OpContext) -> Tensor:
    v = _per_sample(value)
    return torch.addcmul(PIXEL_MAX * v, img, -2 * v)  # v * (255 - 2x)


def cutout(img: Tensor, value: Tensor, ctx: OpContext) -> Tensor:
    # A square of side value * CUTOUT_FRACTION * min(h, w), centred at a random point of the
    # real image, filled with CUTOUT_FILL.
    n, _, h, w = img.shape
    half = (value * CUTOUT_FRACTION * ctx.hw.min(1).values / 2).view(n, 1, 1)
    centre = ctx.noise * ctx.hw  # N x 2 (y, x)
    ys = torch.arange(h, device=img.device, dtype=img.dtype) + 0.5
    xs = torch.arange(w, device=img.device, dtype=img.dtype) + 0.5
    inside_y = ((ys.view(1, h, 1) - centre[:, 0].view(n, 1, 1)).abs() < half).to(img.dtype)
    inside_x = ((xs.view(1, 1, w) - centre[:, 1].view(n, 1, 1)).abs() < half).to(img.dtype)
    hole = (inside_y * inside_x).unsqueeze(1)  # float masks: bool ones are slow on CPU
    return (CUTOUT_FILL - img).mul_(hole)


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
    # name: (fn, magnitude range in the op's unit, signed, geometric, linear in value)
    'Brightness': OpSpec(brightness, (0.0, 0.9), True, linear=True),  # factor 1 +- v
    'Color': OpSpec(color, (0.0, 0.9), True, linear=True),  # saturation factor 1 +- v
    'Contrast': OpSpec(contrast, (0.0, 0.9), True, linear=True),  # factor 1 +- v
    'Sharpness': OpSpec(sharpness, (0.0, 0.9), True, linear=True),  # factor 1 +- v
    'Posterize': OpSpec(posterize, (0.0, 4.0), False),  # bits dropped: 8 -> 4 bits
    'Solarize': OpSpec(solarize, (0.0, 255.0), False),  # threshold 255 - v
    'ShearX': OpSpec(shear_x, (0.0, 0.3), True, geometric=True),  # x += v * (y - cy)
    'ShearY': OpSpec(shear_y, (0.0, 0.3), True, geometric=True),  # y += v * (x - cx)
    'TranslateX': OpSpec(translate_x, (0.0, 0.45), True, geometric=True),  # x real w
    'TranslateY': OpSpec(translate_y, (0.0, 0.45), True, geometric=True),  # x real h
    'Rotate': OpSpec(rotate, (0.0, 30.0), True, geometric=True),  # degrees
    'Equalize': OpSpec(equalize, None, False, linear=True),
    'Invert': OpSpec(invert, None, False, linear=True),
    'Cutout': OpSpec(cutout, None, False),
}
