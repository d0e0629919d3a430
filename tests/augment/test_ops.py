"""The op table: its vocabulary, the identity at 0, batching, and PIL / kornia references."""
import kornia
import numpy as np
import pytest
import torch
from PIL import Image, ImageEnhance, ImageOps

from tst_mm.augment import OPS
from tst_mm.augment.ops import OpContext

N, H, W = 3, 24, 32
PIXEL_OPS = [n for n, s in OPS.items() if not s.geometric]
GEOMETRIC_OPS = [n for n, s in OPS.items() if s.geometric]


def _batch(seed=0):
    g = torch.Generator().manual_seed(seed)
    img = torch.randint(0, 256, (N, 3, H, W), generator=g).float()
    hw = torch.tensor([[H, W], [H - 4, W - 6], [H - 8, W]], dtype=torch.float32)
    ys, xs = torch.arange(H).view(1, 1, H, 1), torch.arange(W).view(1, 1, 1, W)
    valid = (ys < hw[:, 0].view(N, 1, 1, 1)) & (xs < hw[:, 1].view(N, 1, 1, 1))
    return img, OpContext(valid.float(), hw, torch.rand(N, 2, generator=g))


def _value(name):
    """A mid-range value in the op's unit (probability-only ops: full strength)."""
    rng = OPS[name].magnitude_range
    return 1.0 if rng is None else rng[0] + 0.6 * (rng[1] - rng[0])


def test_table_is_the_reference_vocabulary():
    assert list(OPS) == ['Brightness', 'Color', 'Contrast', 'Sharpness', 'Posterize',
                         'Solarize', 'ShearX', 'ShearY', 'TranslateX', 'TranslateY',
                         'Rotate', 'Equalize', 'Invert', 'Cutout']
    assert {n for n, s in OPS.items() if s.magnitude_range is None} == {
        'Equalize', 'Invert', 'Cutout'}
    assert set(GEOMETRIC_OPS) == {'ShearX', 'ShearY', 'TranslateX', 'TranslateY', 'Rotate'}
    assert {n for n, s in OPS.items() if s.signed} == {
        'Brightness', 'Color', 'Contrast', 'Sharpness', *GEOMETRIC_OPS}
    assert OPS['Rotate'].magnitude_range == (0.0, 30.0)
    assert OPS['TranslateX'].magnitude_range == (0.0, 0.45)


@pytest.mark.parametrize('name', list(OPS))
def test_identity_at_zero_and_batched(name):
    img, ctx = _batch()
    zero = torch.zeros(N)
    value = torch.tensor([0.0, _value(name), 0.0])  # only sample 1 changes
    if OPS[name].geometric:
        eye = torch.eye(3).expand(N, 3, 3)
        assert torch.equal(OPS[name].fn(zero, ctx.hw), eye)
        m = OPS[name].fn(value, ctx.hw)
        assert torch.equal(m[[0, 2]], eye[[0, 2]]) and not torch.equal(m[1], eye[1])
        # the real image's centre is fixed (translations move it by the shift only)
        centre = torch.stack([ctx.hw[:, 1] / 2, ctx.hw[:, 0] / 2, torch.ones(N)], 1)
        moved = (m @ centre.unsqueeze(-1)).squeeze(-1)[1, :2] - centre[1, :2]
        if not name.startswith('Translate'):
            assert moved.abs().max() < 1e-4
    else:  # pixel ops return the change T(img) - img
        assert torch.equal(OPS[name].fn(img, zero, ctx), torch.zeros_like(img))
        change = OPS[name].fn(img, value, ctx)
        assert not change[[0, 2]].any() and change[1].any()


def _pil(img):
    return Image.fromarray(img.permute(1, 2, 0).byte().numpy())


def _from_pil(im):
    return torch.from_numpy(np.asarray(im).copy()).permute(2, 0, 1).float()


PIL_REFERENCES = {  # name: (our value, PIL on one image, tolerance in grey levels)
    'Brightness': (0.5, lambda im: ImageEnhance.Brightness(im).enhance(1.5), 1),
    'Color': (-0.7, lambda im: ImageEnhance.Color(im).enhance(0.3), 1),
    'Contrast': (0.6, lambda im: ImageEnhance.Contrast(im).enhance(1.6), 1),
    'Sharpness': (0.8, lambda im: ImageEnhance.Sharpness(im).enhance(1.8), 2),
    'Posterize': (3.0, lambda im: ImageOps.posterize(im, 5), 0),
    'Solarize': (128.0, lambda im: ImageOps.solarize(im, 128), 0),  # >= 128 inverted
    'Equalize': (1.0, ImageOps.equalize, 0),
    'Invert': (1.0, ImageOps.invert, 0),
}


@pytest.mark.parametrize('name', list(PIL_REFERENCES))
def test_pixel_ops_match_pil(name):
    """Our ops on a full-size image reproduce PIL, AutoAugment's own implementation."""
    value, pil_fn, tol = PIL_REFERENCES[name]
    img, _ = _batch(1)
    img = img[:1]
    ctx = OpContext(torch.ones(1, 1, H, W), torch.tensor([[H, W]]).float(),
                    torch.zeros(1, 2))
    ours = (img + OPS[name].fn(img, torch.tensor([value]), ctx)).clamp(0, 255).round()[0]
    # PIL rounds its blends (and its luma / smoothed images) to uint8 on the way
    assert (ours - _from_pil(pil_fn(_pil(img[0])))).abs().max() <= tol


def test_contrast_and_equalize_ignore_the_padding():
    img, ctx = _batch(2)
    real = img[1:2, :, :20, :26]
    full = OpContext(torch.ones(1, 1, 20, 26),
                     torch.tensor([[20., 26.]]), ctx.noise[1:2])
    for name in ('Contrast', 'Equalize', 'Sharpness'):
        padded = OPS[name].fn(img, torch.full((N,), _value(name)), ctx)[1:2, :, :20, :26]
        alone = OPS[name].fn(real, torch.tensor([_value(name)]), full._replace(padded=False))
        assert torch.allclose(padded, alone, atol=1e-3), name


def test_cutout_is_a_filled_square_centred_in_the_real_image():
    img, ctx = _batch(3)
    ctx = ctx._replace(noise=torch.tensor([[0.5, 0.5], [0.99, 0.99], [0.0, 0.0]]))
    out = img + OPS['Cutout'].fn(img, torch.ones(N), ctx)
    side = int(0.2 * min(H, W))  # a square of side 0.2 * min(h, w) at full strength
    for k in range(N):
        hole = (out[k] == 128).all(0)
        ys, xs = hole.nonzero(as_tuple=True)
        centre = ctx.noise[k] * ctx.hw[k]
        assert hole.sum() >= (side // 2) ** 2  # at least a corner quarter in the image
        assert abs(ys.float().mean() + 0.5 - centre[0]) <= side / 2 + 0.5
        assert abs(xs.float().mean() + 0.5 - centre[1]) <= side / 2 + 0.5
        assert ys.max() - ys.min() < side + 1 and xs.max() - xs.min() < side + 1


def test_kornia_functional_ops_agree():
    """kornia's functional ops (on 0-1 images) as an independent reference."""
    img, ctx = _batch(4)
    full = ctx._replace(valid=torch.ones_like(ctx.valid))
    x = img / 255
    v = torch.tensor([-0.5, 0.3, 0.8])
    full = full._replace(hw=torch.tensor([[H, W]] * N).float(), padded=False)

    def apply(name, value):
        return (img + OPS[name].fn(img, value, full)).clamp(0, 255) / 255

    assert torch.allclose(apply('Invert', torch.ones(N)), kornia.enhance.invert(x), atol=1e-5)
    assert torch.allclose(apply('Brightness', v), kornia.enhance.adjust_contrast(x, 1 + v),
                          atol=1e-5)
    assert torch.allclose(apply('Contrast', v),
                          kornia.enhance.adjust_contrast_with_mean_subtraction(x, 1 + v),
                          atol=1e-4)
    ours = apply('Sharpness', v)
    theirs = kornia.enhance.sharpness(x, 1 + v)
    # identical inside; kornia leaves the 1-pixel border unsharpened as PIL does
    assert torch.allclose(ours, theirs, atol=1e-4)
