import pytest
import torch

from tst_mm.losses import BinaryKLDivergence


def _hand_bkl(s, t, tau):
    p_s, p_t = torch.sigmoid(s.double() / tau), torch.sigmoid(t.double() / tau)
    kl = p_t * torch.log(p_t / p_s) + (1 - p_t) * torch.log((1 - p_t) / (1 - p_s))
    return kl.sum() / kl.size(0) * tau**2


@pytest.mark.parametrize('tau', [1.0, 2.0])
def test_matches_hand_computation(tau):
    torch.manual_seed(0)
    s, t = torch.randn(2, 9, 5, 5), torch.randn(2, 9, 5, 5)
    torch.testing.assert_close(
        BinaryKLDivergence(tau=tau, loss_weight=0.5)(s, t).double(),
        0.5 * _hand_bkl(s, t, tau))


def test_reductions():
    torch.manual_seed(0)
    s, t = torch.randn(2, 9, 5, 5), torch.randn(2, 9, 5, 5)
    batchmean = BinaryKLDivergence()(s, t)
    for reduction, scale in (('sum', 2), ('mean', 1 / 225), ('pixelmean', 1 / 25)):
        torch.testing.assert_close(BinaryKLDivergence(reduction=reduction)(s, t),
                                   batchmean * scale)


def test_stable_for_saturated_logits():
    s = torch.tensor([[-80.0, 80.0, 0.0]], requires_grad=True)
    t = torch.tensor([[80.0, -80.0, 0.0]])
    loss = BinaryKLDivergence()(s, t)
    loss.backward()
    # Each saturated element contributes log(1) - log(sigmoid(-80)) = 80 nats, where
    # log(sigmoid(-80)) in float32 would give -inf.
    assert torch.isfinite(loss) and abs(loss.item() - 160) < 1e-3
    assert torch.isfinite(s.grad).all()


def test_zero_for_identical_logits():
    x = torch.randn(3, 80) * 10
    assert BinaryKLDivergence()(x, x.clone()).abs().item() < 1e-6


def test_retina_like_levels_and_gradients():
    levels = [(2, 9, 8, 8), (2, 9, 4, 4), (2, 9, 2, 2)]
    s = [torch.randn(shape, requires_grad=True) for shape in levels]
    t = [torch.randn(shape, requires_grad=True) for shape in levels]
    loss = BinaryKLDivergence()(s, t)
    expected = sum(_hand_bkl(a.detach(), b.detach(), 1.0) for a, b in zip(s, t))
    torch.testing.assert_close(loss.double(), expected)
    loss.backward()
    assert all(x.grad is not None for x in s + t)


def test_shape_mismatch_names_both_shapes():
    with pytest.raises(ValueError, match=r'\(2, 9, 4, 4\).*\(2, 8, 4, 4\)'):
        BinaryKLDivergence()(torch.randn(2, 9, 4, 4), torch.randn(2, 8, 4, 4))
