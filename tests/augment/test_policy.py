"""The learnable policy: parameters, relaxed-Bernoulli gates, op selection, config."""
import math

import pytest
import torch

from tst_mm.augment import OPS, TSTPolicy, relaxed_bernoulli, straight_through_bernoulli

MAGNITUDE_OPS = [n for n, s in OPS.items() if s.magnitude_range is not None]


def test_parameters_start_at_zero_in_table_order():
    policy = TSTPolicy()
    assert policy.op_names == list(OPS)
    assert policy.magnitude_names == MAGNITUDE_OPS and len(MAGNITUDE_OPS) == 11
    assert torch.equal(policy.magnitude_logits.detach(), torch.zeros(11))
    assert torch.equal(policy.probability_logits.detach(), torch.zeros(14))
    mags = policy.magnitudes()
    assert mags[policy.op_names.index('Rotate')].item() == pytest.approx(15.0)
    assert mags[policy.op_names.index('Posterize')].item() == pytest.approx(2.0)
    assert mags[policy.op_names.index('Invert')].item() == 1.0
    logged = policy.policy()
    assert list(logged) == list(OPS)
    assert logged['Rotate'] == dict(magnitude=0.5, probability=0.5)


def test_probability_spans_the_whole_unit_interval():
    """p = sigmoid(theta_p), not the reference's sigmoid(sigmoid(theta_p)) in 0.50-0.73."""
    policy = TSTPolicy(op_cfgs=dict(Invert=dict(probability=0.02),
                                    Rotate=dict(probability=0.97)))
    p = policy.policy()
    assert p['Invert']['probability'] == pytest.approx(0.02)
    assert p['Rotate']['probability'] == pytest.approx(0.97)
    with torch.no_grad():
        policy.probability_logits.fill_(-12.)
    assert max(v['probability'] for v in policy.policy().values()) < 1e-5


@pytest.mark.parametrize('hard', [False, True])
def test_relaxed_bernoulli_frequency_and_gradient(hard):
    torch.manual_seed(0)
    logits = torch.tensor([-2.2, 0., 2.2], requires_grad=True)  # p = 0.1, 0.5, 0.9
    gates = relaxed_bernoulli(logits, torch.rand(4000, 3), 0.05, hard)
    on = (gates > 0.5).float().mean(0)
    assert torch.allclose(on, torch.sigmoid(logits.detach()), atol=0.03)
    if hard:
        assert set(gates.unique().tolist()) <= {0.0, 1.0}
    else:
        assert ((gates > 0.01) & (gates < 0.99)).float().mean() < 0.2  # tau 0.05: near 0/1
    gates.sum().backward()
    assert (logits.grad > 0).all()  # more probability -> more gate, for every op


def test_relaxed_bernoulli_gradient_survives_saturation():
    logits = torch.tensor([0.0], requires_grad=True)
    g = relaxed_bernoulli(logits, torch.tensor([0.95]), 0.05)  # z ~ 59: g == 1.0 in fp32
    g.backward()
    assert g.item() == 1.0 and logits.grad.item() > 0


def test_straight_through_gates_are_bernoulli_with_the_gradient_of_their_mean():
    """Hard 0/1 gates at frequency p, and d gate / d logit = p (1 - p) for every draw,
    so the mean gradient over draws is that of E[gate] = p (relaxed gates at tau 0.05
    reach it through the few draws near the threshold)."""
    torch.manual_seed(0)
    logits = torch.tensor([-2.2, 0., 2.2], requires_grad=True)
    gates = straight_through_bernoulli(logits, torch.rand(4000, 3))
    assert set(gates.unique().tolist()) == {0.0, 1.0}
    p = torch.sigmoid(logits.detach())
    assert torch.allclose(gates.detach().mean(0), p, atol=0.03)
    gates.sum().backward()
    torch.testing.assert_close(logits.grad, 4000 * p * (1 - p))


@pytest.mark.parametrize('estimator', ['relaxed', 'straight_through'])
def test_every_draw_gives_the_probabilities_a_gradient_with_straight_through(estimator):
    """How many draws pass a gradient to their probability: all of them with the
    straight-through gates, the few near the threshold with relaxed gates at 0.05."""
    torch.manual_seed(0)
    policy = TSTPolicy(num_ops=14, gate_estimator=estimator).train()
    draw = policy.sample(256, torch.device('cpu'))
    rows = []
    for i in range(0, 256, 64):  # the gradient each block of 64 draws passes
        g, = torch.autograd.grad(draw.weights[i:i + 64].sum(), policy.probability_logits,
                                 retain_graph=True)
        rows.append(g)
    rows = torch.stack(rows)
    assert torch.isfinite(rows).all() and (rows.sum(0) > 0).all()
    spread = rows.std(0) / rows.mean(0)
    if estimator == 'straight_through':
        assert (spread < 0.05).all(), spread  # 0.25 per draw, whatever the draw
    else:
        assert (spread > 0.2).any(), spread  # a few large gradients near the threshold


def test_sample_selects_k_ops_per_sample_or_per_batch():
    torch.manual_seed(0)
    policy = TSTPolicy(num_ops=4)
    draw = policy.sample(6, torch.device('cpu'))
    assert draw.selected.device.type == 'cpu'
    assert draw.selected.sum(1).tolist() == [4] * 6
    assert len({tuple(r) for r in draw.selected.tolist()}) > 1
    assert (draw.weights[~draw.selected] == 0).all()
    signed = torch.tensor([OPS[n].signed for n in policy.op_names])
    assert (draw.values[:, ~signed] > 0).all()
    assert (draw.values[:, signed] < 0).any() and (draw.values[:, signed] > 0).any()
    batch = TSTPolicy(num_ops=4, per_sample=False).sample(6, torch.device('cpu'))
    assert (batch.selected == batch.selected[:1]).all()
    assert torch.equal(batch.values, batch.values[:1].expand(6, -1))


def test_subset_ranges_and_initial_values():
    policy = TSTPolicy(ops=['Rotate', 'Invert', 'Brightness'], num_ops=2,
                       op_cfgs=dict(Rotate=dict(range=(0, 10), magnitude=0.2,
                                                probability=0.3)))
    assert policy.op_names == ['Rotate', 'Invert', 'Brightness']
    assert policy.magnitude_names == ['Rotate', 'Brightness']
    assert policy.magnitudes().tolist() == pytest.approx([2.0, 1.0, 0.45])
    assert policy.probability_logits[0].item() == pytest.approx(math.log(0.3 / 0.7))


@pytest.mark.parametrize('kwargs, message', [
    (dict(ops=['Rotate', 'Zoom']), 'Zoom'),
    (dict(ops=['Rotate', 'Rotate']), 'Rotate'),
    (dict(num_ops=15), '15'),
    (dict(temperature=0), '0'),
    (dict(op_cfgs=dict(Invert=dict(magnitude=0.3))), 'Invert'),
    (dict(op_cfgs=dict(Rotate=dict(probability=1.0))), '1.0'),
    (dict(op_cfgs=dict(Rotate=dict(range=(5, 1)))), '(5, 1)'),
    (dict(gate_estimator='gumbel'), 'gumbel'),
    (dict(ops=['Rotate'], num_ops=1, op_cfgs=dict(ShearX=dict(magnitude=0.3))), 'ShearX'),
])
def test_bad_config_names_the_bad_value(kwargs, message):
    with pytest.raises(ValueError, match=message.replace('(', r'\(').replace(')', r'\)')):
        TSTPolicy(**kwargs)
