import pytest
import torch
import torch.nn.functional as F

from tst_mm.losses import KLDivergence, kl_divergence


def _hand_kl(s, t, tau, reduction):
    # mmrazor's KLDivergence: F.kl_div over the softmax on dim 1 with its reductions;
    # 'pixelmean' is the per-position KL averaged over images and positions.
    kl = F.kl_div(F.log_softmax(s.double() / tau, 1), F.log_softmax(t.double() / tau, 1),
                  log_target=True, reduction='none' if reduction == 'pixelmean'
                  else reduction)
    if reduction == 'pixelmean':
        kl = kl.sum(1).mean()
    return kl * tau**2


@pytest.mark.parametrize('shape', [(6, 5), (2, 4, 3, 5)])
@pytest.mark.parametrize('tau', [1.0, 3.0])
@pytest.mark.parametrize('reduction', ['batchmean', 'sum', 'mean', 'pixelmean'])
def test_matches_hand_computation(shape, tau, reduction):
    torch.manual_seed(0)
    s, t = torch.randn(shape), torch.randn(shape)
    loss = KLDivergence(tau=tau, loss_weight=2.0, reduction=reduction)(s, t)
    assert loss.dim() == 0
    torch.testing.assert_close(loss.double(), 2.0 * _hand_kl(s, t, tau, reduction),
                               rtol=1e-5, atol=1e-6)


def test_default_reduction_is_mmrazors_batchmean():
    torch.manual_seed(0)
    s, t = torch.randn(2, 4, 3, 5), torch.randn(2, 4, 3, 5)
    torch.testing.assert_close(KLDivergence()(s, t).double(),
                               _hand_kl(s, t, 1.0, 'batchmean'))
    # summed over the 15 positions of each image: 15x the per-pixel mean
    torch.testing.assert_close(KLDivergence()(s, t),
                               15 * KLDivergence(reduction='pixelmean')(s, t))


def test_zero_for_identical_logits_and_positive_otherwise():
    x = torch.randn(4, 7)
    assert KLDivergence()(x, x.clone()).abs().item() < 1e-6
    assert KLDivergence()(x, torch.randn(4, 7)).item() > 0


def test_levels_are_summed_or_averaged_and_must_match_in_number():
    torch.manual_seed(0)
    s = [torch.randn(2, 3, 4, 4), torch.randn(2, 3, 2, 2)]
    t = [torch.randn(2, 3, 4, 4), torch.randn(2, 3, 2, 2)]
    total = kl_divergence(s[0], t[0]) + kl_divergence(s[1], t[1])
    torch.testing.assert_close(KLDivergence()(s, tuple(t)), total)
    torch.testing.assert_close(KLDivergence(level_reduction='mean')(s, t), total / 2)
    with pytest.raises(ValueError, match='2 level.*1'):
        KLDivergence()(s, t[:1])


def test_teacher_map_is_resized_to_the_student():
    torch.manual_seed(0)
    s, t = torch.randn(1, 19, 8, 8), torch.randn(1, 19, 16, 16)
    resized = F.interpolate(t, size=(8, 8), mode='bilinear', align_corners=False)
    torch.testing.assert_close(KLDivergence()(s, t), kl_divergence(s, resized))


def test_class_count_mismatch_names_both_shapes():
    with pytest.raises(ValueError, match=r'\(2, 5\).*\(2, 6\)'):
        KLDivergence()(torch.randn(2, 5), torch.randn(2, 6))


def test_gradients_reach_student_and_teacher():
    s = torch.randn(3, 4, requires_grad=True)
    t = torch.randn(3, 4, requires_grad=True)
    KLDivergence()(s, t).backward()
    assert s.grad.abs().sum() > 0 and t.grad.abs().sum() > 0


def test_loss_weight_is_a_plain_attribute():
    s, t = torch.randn(3, 4), torch.randn(3, 4)
    loss = KLDivergence()
    full = loss(s, t)
    loss.loss_weight = 0.25
    torch.testing.assert_close(loss(s, t), 0.25 * full)
    assert 'loss_weight=0.25' in repr(loss)


@pytest.mark.parametrize('kwargs', [dict(tau=0), dict(tau=-1.0), dict(loss_weight=-1),
                                    dict(loss_weight=float('nan')), dict(tau='1'),
                                    dict(reduction='avg'), dict(level_reduction='max')])
def test_bad_arguments_are_quoted(kwargs):
    key, value = next(iter(kwargs.items()))
    with pytest.raises(ValueError, match=f'{key}.*{value!r}'.replace('(', r'\(')):
        KLDivergence(**kwargs)


def test_class_channels_is_one_softmax_per_prior():
    """A softmax dense head (SSD) scores A priors x K classes per position."""
    torch.manual_seed(0)
    s, t = torch.randn(2, 3 * 4, 5, 5), torch.randn(2, 3 * 4, 5, 5)
    got = KLDivergence(class_channels=4, reduction='sum')(s, t)
    per_prior = [KLDivergence(reduction='sum')(s[:, 4 * a:4 * a + 4], t[:, 4 * a:4 * a + 4])
                 for a in range(3)]
    torch.testing.assert_close(got, sum(per_prior))
    with pytest.raises(ValueError, match='not a multiple of class_channels=5'):
        KLDivergence(class_channels=5)(s, t)
    with pytest.raises(ValueError, match='class_channels'):
        KLDivergence(class_channels=1)
