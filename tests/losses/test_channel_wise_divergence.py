import math

import pytest
import torch

from tst_mm.losses import ChannelWiseDivergence


def _hand_cwd(s, t, tau):
    n, c = s.shape[:2]
    total = 0.0
    for i in range(n):
        for j in range(c):
            p_t = torch.softmax(t[i, j].flatten().double() / tau, 0)
            p_s = torch.softmax(s[i, j].flatten().double() / tau, 0)
            total += (p_t * (p_t / p_s).log()).sum().item()
    return total * tau**2 / (n * c)


@pytest.mark.parametrize('tau', [1.0, 4.0])
def test_matches_hand_computation(tau):
    torch.manual_seed(0)
    s, t = torch.randn(2, 3, 4, 5), torch.randn(2, 3, 4, 5)
    loss = ChannelWiseDivergence(tau=tau, loss_weight=3.0)(s, t)
    assert math.isclose(loss.item(), 3.0 * _hand_cwd(s, t, tau), rel_tol=1e-5)


def test_teacher_resized_levels_and_gradients():
    torch.manual_seed(0)
    s = [torch.randn(1, 4, 8, 8, requires_grad=True), torch.randn(1, 4, 4, 4)]
    t = [torch.randn(1, 4, 16, 16, requires_grad=True), torch.randn(1, 4, 4, 4)]
    loss = ChannelWiseDivergence()(s, t)
    assert loss.item() > 0
    loss.backward()
    assert s[0].grad.abs().sum() > 0 and t[0].grad.abs().sum() > 0


def test_needs_4d_maps_and_matching_channels():
    with pytest.raises(ValueError, match=r'\(2, 3\)'):
        ChannelWiseDivergence()(torch.randn(2, 3), torch.randn(2, 3))
    with pytest.raises(ValueError, match=r'\(1, 4, 2, 2\).*\(1, 5, 2, 2\)'):
        ChannelWiseDivergence()(torch.randn(1, 4, 2, 2), torch.randn(1, 5, 2, 2))


def test_fixed_normalisation_refuses_a_reduction():
    with pytest.raises(ValueError, match="takes no reduction.*'sum'"):
        ChannelWiseDivergence(reduction='sum')
