import pytest
import torch
import torch.nn.functional as F

from tst_mm.losses import FeatureMimic


def test_plain_mse_without_adapter():
    torch.manual_seed(0)
    s, t = torch.randn(2, 8, 4, 4), torch.randn(2, 8, 4, 4)
    loss = FeatureMimic(loss_weight=2.0)
    assert loss.adapter is None and not list(loss.parameters())
    torch.testing.assert_close(loss(s, t), 2.0 * F.mse_loss(s, t))
    # Equal channel counts need no adapter either.
    assert FeatureMimic(student_channels=8, teacher_channels=8).adapter is None


def test_adapter_is_used_and_trained_for_different_channels():
    torch.manual_seed(0)
    loss = FeatureMimic(student_channels=4, teacher_channels=6)
    s = [torch.randn(2, 4, 8, 8, requires_grad=True), torch.randn(2, 4, 4, 4)]
    t = [torch.randn(2, 6, 8, 8), torch.randn(2, 6, 4, 4)]
    expected = sum(F.mse_loss(loss.adapter(a), b) for a, b in zip(s, t))
    value = loss(s, t)
    torch.testing.assert_close(value, expected)
    value.backward()
    assert loss.adapter.weight.grad.abs().sum() > 0
    assert s[0].grad.abs().sum() > 0


def test_channel_mismatch_without_adapter_names_counts_and_fix():
    with pytest.raises(ValueError, match='4 channels.*6.*student_channels=4.*'
                       'teacher_channels=6'):
        FeatureMimic()(torch.randn(1, 4, 2, 2), torch.randn(1, 6, 2, 2))


def test_wrong_student_channels_for_the_adapter():
    loss = FeatureMimic(student_channels=4, teacher_channels=6)
    with pytest.raises(ValueError, match=r'expects 4 .*\(1, 5, 2, 2\)'):
        loss(torch.randn(1, 5, 2, 2), torch.randn(1, 6, 2, 2))


def test_teacher_resized_and_gradient_reaches_teacher():
    s = torch.randn(1, 3, 4, 4)
    t = torch.randn(1, 3, 8, 8, requires_grad=True)
    FeatureMimic()(s, t).backward()
    assert t.grad.abs().sum() > 0


@pytest.mark.parametrize('kwargs', [dict(student_channels=4),
                                    dict(student_channels=0, teacher_channels=4),
                                    dict(student_channels=2.5, teacher_channels=4)])
def test_bad_channel_arguments(kwargs):
    with pytest.raises(ValueError, match='channels'):
        FeatureMimic(**kwargs)


def test_reductions_and_level_mean():
    torch.manual_seed(0)
    s = [torch.randn(2, 8, 4, 4), torch.randn(2, 8, 2, 2)]
    t = [torch.randn(2, 8, 4, 4), torch.randn(2, 8, 2, 2)]
    sq = [(a - b)**2 for a, b in zip(s, t)]
    cases = dict(mean=[x.mean() for x in sq], sum=[x.sum() for x in sq],
                 batchmean=[x.sum() / 2 for x in sq], pixelmean=[x.sum(1).mean() for x in sq])
    for reduction, per_level in cases.items():
        torch.testing.assert_close(FeatureMimic(reduction=reduction)(s, t), sum(per_level))
        torch.testing.assert_close(
            FeatureMimic(reduction=reduction, level_reduction='mean')(s, t),
            sum(per_level) / 2)
    with pytest.raises(ValueError, match="reduction.*'avg'"):
        FeatureMimic(reduction='avg')


def test_normalized_mimic_is_pkd_and_ignores_feature_scale():
    """PKD: per-channel standardised maps, so 2 (1 - Pearson r) per channel, whatever
    the scale and offset of either network's activations."""
    torch.manual_seed(0)
    s, t = torch.randn(2, 4, 5, 5), torch.randn(2, 4, 5, 5)
    loss = FeatureMimic(normalize=True)
    base = loss(s, t)
    torch.testing.assert_close(loss(s * 30 + 7, t * 0.01 - 2), base, rtol=1e-4, atol=1e-4)
    flat = [x.transpose(0, 1).reshape(4, -1) for x in (s, t)]
    r = torch.stack([torch.corrcoef(torch.stack([a, b]))[0, 1] for a, b in zip(*flat)])
    n = flat[0].size(1)
    # (unbiased std: the mean squared difference is 2 (1 - r) (n - 1) / n)
    torch.testing.assert_close(base, (2 * (1 - r) * (n - 1) / n).mean(), rtol=1e-4,
                               atol=1e-4)
    assert float(loss(s, s)) < 1e-8
    with pytest.raises(ValueError, match='normalize'):
        FeatureMimic(normalize='yes')
