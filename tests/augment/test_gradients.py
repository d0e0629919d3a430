"""Gradients reach every magnitude and probability through the augmented image."""
import pytest
import torch
import torch.nn.functional as F

from tst_mm.augment import OPS, TSTAugmenter

H, W = 32, 48
SMOOTH = ['Brightness', 'Color', 'Contrast', 'Sharpness', 'ShearX', 'ShearY', 'TranslateX',
          'TranslateY', 'Rotate']
STRAIGHT_THROUGH = ['Posterize', 'Solarize']
assert set(SMOOTH + STRAIGHT_THROUGH) == {
    n for n, s in OPS.items() if s.magnitude_range is not None}


def smooth_image(n=2, seed=0):
    g = torch.Generator().manual_seed(seed)
    coarse = torch.rand(n, 3, 5, 7, generator=g, dtype=torch.float64)
    return 60 + 130 * F.interpolate(coarse, (H, W), mode='bicubic', align_corners=False)


def loss_fn(seed, n=2):
    weight = torch.randn(n, 3, H, W, generator=torch.Generator().manual_seed(seed + 99),
                         dtype=torch.float64)
    return lambda out: (out * weight).sum()


def grads_and_fd(aug, param, img, seed, eps=1e-5):
    """Analytic d loss / d param and central finite differences, same random draws."""
    loss = loss_fn(seed, len(img))

    def run():
        torch.manual_seed(seed)
        return loss(aug(img)[0])

    aug.zero_grad()
    run().backward()
    analytic = param.grad.clone()
    fd = torch.zeros_like(analytic)
    with torch.no_grad():
        for i in range(len(param)):
            param[i] += eps
            up = run()
            param[i] -= 2 * eps
            down = run()
            param[i] += eps
            fd[i] = (up - down) / (2 * eps)
    return analytic, fd


@pytest.mark.parametrize('name', SMOOTH)
def test_magnitude_gradient_matches_finite_differences(name):
    aug = TSTAugmenter(ops=[name], num_ops=1,
                       op_cfgs={name: dict(probability=1 - 1e-9, magnitude=0.4)}).double()
    analytic, fd = grads_and_fd(aug, aug.magnitude_logits, smooth_image(), seed=1)
    assert analytic.abs().min() > 0
    assert torch.allclose(analytic, fd, rtol=1e-3, atol=1e-3 * fd.abs().max())


@pytest.mark.parametrize('name', list(OPS))
def test_probability_gradient_matches_finite_differences(name):
    """Through the gate: residual weight for pixel ops, parameter scale for geometric."""
    aug = TSTAugmenter(ops=[name], num_ops=1, temperature=1.0).double()
    analytic, fd = grads_and_fd(aug, aug.probability_logits, smooth_image(), seed=2)
    assert analytic.abs().min() > 0
    assert torch.allclose(analytic, fd, rtol=1e-3, atol=1e-3 * fd.abs().max())


@pytest.mark.parametrize('name, magnitude', [('Posterize', 0.5), ('Solarize', 0.2)])
def test_straight_through_gradient_follows_a_coarse_difference(name, magnitude):
    """Piecewise-constant ops: the surrogate gradient is non-zero and agrees in sign and
    rough size with a finite difference wide enough to cross many grey levels."""
    aug = TSTAugmenter(ops=[name], num_ops=1, op_cfgs={
        name: dict(probability=1 - 1e-9, magnitude=magnitude)}).double()
    img = torch.randint(0, 256, (2, 3, H, W), generator=torch.Generator().manual_seed(3))
    img = img.double()

    def run():
        torch.manual_seed(0)
        return aug(img)[0].sum()

    run().backward()
    analytic = aug.magnitude_logits.grad[0]
    with torch.no_grad():
        aug.magnitude_logits += 0.2
        up = run()
        aug.magnitude_logits -= 0.4
        down = run()
    coarse = (up - down) / 0.4
    assert analytic != 0 and torch.isfinite(analytic)
    assert torch.sign(analytic) == torch.sign(coarse)
    assert 0.5 < analytic / coarse < 2


def test_default_config_gives_every_parameter_a_gradient():
    """At tau = 0.05, all 14 ops drawn, every theta gets a finite non-zero gradient."""
    aug = TSTAugmenter(num_ops=14, op_cfgs={n: dict(probability=0.9) for n in OPS})
    torch.manual_seed(0)
    img = smooth_image(4).float()
    out, _ = aug(img)
    (out * torch.randn_like(out)).sum().backward()
    for p in (aug.magnitude_logits, aug.probability_logits):
        assert torch.isfinite(p.grad).all() and (p.grad != 0).all(), p.grad


def test_hard_gates_forward_0_1_and_backward_relaxed():
    aug = TSTAugmenter(num_ops=14, hard_gates=True, temperature=0.5)
    torch.manual_seed(0)
    draw = aug.sample(8, torch.device('cpu'))
    assert set(draw.weights.unique().tolist()) == {0.0, 1.0}
    draw.weights.sum().backward()
    assert (aug.probability_logits.grad > 0).all()
    aug.eval()  # eval mode: hard gates whatever the option
    assert set(TSTAugmenter().eval().sample(8, torch.device('cpu')).weights.unique()
               .tolist()) <= {0.0, 1.0}


def test_ops_not_drawn_get_no_gradient():
    aug = TSTAugmenter(ops=['Rotate', 'Brightness'], num_ops=1, per_sample=False,
                       op_cfgs=dict(Rotate=dict(probability=0.99),
                                    Brightness=dict(probability=0.99)))
    torch.manual_seed(4)
    out, _ = aug(smooth_image().float())
    out.sum().backward()
    drawn = (aug.probability_logits.grad != 0).tolist()
    assert sorted(drawn) == [False, True]
    assert (aug.magnitude_logits.grad != 0).tolist() == drawn
