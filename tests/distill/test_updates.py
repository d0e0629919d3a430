"""update_by_terms: the per-term gradient norms, and the balanced update."""
import pytest
import torch
import torch.nn as nn
from mmengine.optim import OptimWrapper

from tst_mm.distill.updates import update_by_terms


class Policy(nn.Module):

    def __init__(self):
        super().__init__()
        self.theta = nn.Parameter(torch.zeros(2))
        self.unused = nn.Parameter(torch.zeros(1))  # no term reaches it


def _step(balance: bool):
    policy = Policy()
    optim = OptimWrapper(torch.optim.SGD(policy.parameters(), lr=1.0))
    # a term 100x the other's scale, each on its own coordinate
    terms = dict(teacher=100 * policy.theta[0], student_inverse=policy.theta[1])
    norms, stepped = update_by_terms(optim, terms, policy, balance)
    return policy, norms, stepped


@pytest.mark.parametrize('balance, update', [(False, [-100.0, -1.0]),
                                             (True, [-50.5, -50.5])])
def test_the_sum_or_each_term_at_the_mean_norm(balance, update):
    policy, norms, stepped = _step(balance)
    assert stepped
    # The log shows the terms' own norms either way.
    assert norms['teacher'].item() == pytest.approx(100.0)
    assert norms['student_inverse'].item() == pytest.approx(1.0)
    torch.testing.assert_close(policy.theta.detach(), torch.tensor(update))
    assert policy.unused.grad is None and policy.unused.item() == 0.0


def test_a_term_without_gradient_stays_zero():
    policy = Policy()
    optim = OptimWrapper(torch.optim.SGD(policy.parameters(), lr=1.0))
    terms = dict(teacher=3 * policy.theta[0], student_inverse=0 * policy.theta[1])
    update_by_terms(optim, terms, policy, balance=True)
    # mean norm 1.5: the teacher's gradient 3 -> 1.5, the zero one stays zero
    torch.testing.assert_close(policy.theta.detach(), torch.tensor([-1.5, 0.0]))


def test_distiller_balances_its_augmenter_update(coco_digits):
    """``augment_grad_balance=True``: the augmenter moves along the teacher's and the
    student inverse's gradients rescaled to their mean norm (SGD lr 1, one step)."""
    import copy

    from tests.distill.test_distiller import build, one_batch, tiny_cfg
    from tst_mm.engine import TSTOptimWrapperConstructor
    cfg = tiny_cfg()
    cfg.model.augment_grad_balance = True
    distiller = build(cfg.model)
    distiller.train()
    optim = TSTOptimWrapperConstructor(dict(
        student=dict(type='OptimWrapper', optimizer=dict(type='SGD', lr=0.0)),
        augmenter=dict(type='OptimWrapper', optimizer=dict(type='SGD', lr=1.0))))(distiller)
    batch = one_batch(coco_digits)
    params = list(distiller.augmenter.parameters())
    before = torch.cat([p.detach().flatten() for p in params])

    # Each term's gradient for the same draw, on its own.
    grads = {}
    for name in ('teacher', 'student_inverse'):
        torch.manual_seed(7)
        data = distiller.data_preprocessor(copy.deepcopy(batch), True)
        inputs, samples = distiller.augmenter(data['inputs'], data['data_samples'])
        terms, _ = distiller._augmenter_objective(inputs, samples)
        distiller.augmenter.zero_grad()
        terms[name].backward()
        grads[name] = torch.cat([(p.grad if p.grad is not None else torch.zeros_like(p))
                                 .flatten() for p in params])
    distiller.zero_grad()
    norms = {k: g.norm() for k, g in grads.items()}
    mean = (norms['teacher'] + norms['student_inverse']) / 2
    expected = sum(g * mean / norms[k] for k, g in grads.items())

    torch.manual_seed(7)
    distiller.augment_step(copy.deepcopy(batch), optim)
    after = torch.cat([p.detach().flatten() for p in params])
    torch.testing.assert_close(before - after, expected, rtol=1e-4, atol=1e-7)


def test_distiller_refuses_a_non_boolean_balance():
    from tests.distill.test_distiller import build, tiny_cfg
    cfg = tiny_cfg()
    cfg.model.augment_grad_balance = 'yes'
    with pytest.raises(ValueError, match='augment_grad_balance must be True or False'):
        build(cfg.model)
