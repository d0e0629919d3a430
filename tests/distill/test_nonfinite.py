"""Non-finite losses and gradients: skipped updates, the log, the stop, bounded
augmenter parameters; in-process and through tools/train.py with injected NaNs."""
import copy
import functools
import math
import os.path as osp
import warnings

import pytest
import torch
import torch.nn as nn
from mmengine.logging import MessageHub
from mmengine.optim import AmpOptimWrapper, OptimWrapper
from mmengine.optim.optimizer import amp_optimizer_wrapper

from tests.conftest import TEST_CONFIGS, train
from tests.distill.test_distiller_e2e import read_probe
from tst_mm.distill.nonfinite import NonFiniteGuard, bounded
from tst_mm.distill.updates import update

NAN_PROBE = osp.join(TEST_CONFIGS, 'tst_retinanet_tiny_nan_probe.py')


def toy(amp=False, monkeypatch=None):
    torch.manual_seed(0)
    model = nn.Linear(3, 2)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    if not amp:
        return model, OptimWrapper(optimizer)
    # AmpOptimWrapper insists on a GPU; on this CPU machine give it torch's CPU scaler.
    monkeypatch.setattr(amp_optimizer_wrapper, 'is_cuda_available', lambda: True)
    monkeypatch.setattr(amp_optimizer_wrapper, 'GradScaler',
                        functools.partial(torch.amp.GradScaler, 'cpu'))
    return model, AmpOptimWrapper(optimizer=optimizer,
                                  loss_scale=dict(init_scale=2.0 ** 16))  # dynamic


def snapshot(model, optim):
    return copy.deepcopy(model.state_dict()), copy.deepcopy(optim.state_dict())


def assert_untouched(model, optim, before):
    torch.testing.assert_close(model.state_dict(), before[0], rtol=0, atol=0)
    torch.testing.assert_close(optim.state_dict(), before[1], rtol=0, atol=0)
    assert all(p.grad is None or not p.grad.any() for p in model.parameters())


@pytest.mark.parametrize('poison', ['nan loss', 'inf loss', 'nan gradient'])
def test_a_nonfinite_update_is_skipped_with_the_optimizer_state_untouched(poison):
    model, optim = toy()
    x = torch.randn(4, 3)
    assert update(optim, model(x).square().mean(), []) is True  # momentum exists now
    before = snapshot(model, optim)
    out = model(x).square().mean()
    if poison == 'nan loss':
        loss = out * float('nan')
    elif poison == 'inf loss':
        loss = out + float('inf')
    else:  # finite (0), but d sqrt(|0|) = inf * 0 = NaN
        loss = out - out.detach() + torch.sqrt((model.weight - model.weight.detach())
                                               .abs()).sum()
        assert math.isfinite(float(loss))
    assert update(optim, loss, []) is False
    assert_untouched(model, optim, before)
    assert update(optim, model(x).square().mean(), []) is True  # and training goes on
    assert not torch.equal(model.weight, before[0]['weight'])


def test_amp_leaves_gradient_overflow_to_its_grad_scaler(monkeypatch):
    """Under AMP, fp16 gradient overflow is the GradScaler's business (it skips the
    step and halves its scale): not counted as a skip. A non-finite loss is."""
    model, optim = toy(amp=True, monkeypatch=monkeypatch)
    x = torch.randn(4, 3)
    before = snapshot(model, optim)
    # A finite loss whose scaled gradients overflow.
    assert update(optim, model(x).sum() * 1e36, []) is True
    torch.testing.assert_close(model.state_dict(), before[0], rtol=0, atol=0)
    assert optim.loss_scaler.get_scale() == 2.0 ** 15
    before = snapshot(model, optim)
    assert update(optim, model(x).sum() * float('nan'), []) is False
    assert_untouched(model, optim, before)  # the scaler saw nothing: same scale
    assert update(optim, model(x).square().mean(), []) is True
    assert not torch.equal(model.weight, before[0]['weight'])


def test_the_guard_counts_logs_and_stops():
    hub = MessageHub.get_current_instance()
    hub.update_info('iter', 6)
    hub.update_info('last_ckpt', '/runs/x/iter_6.pth')
    guard = NonFiniteGuard(max_consecutive=2)
    nan, one = torch.tensor(float('nan')), torch.tensor(1.0)
    guard.record('student', False, {'student.loss_cls': nan, 'loss': nan})
    guard.record('student', None, {'loss': nan})  # accumulating: not an update
    guard.record('student', True, {'loss': one})  # a good update ends the run of skips
    guard.record('student', False, {'loss': one})
    guard.record('augmenter', False, {'loss': nan})  # counted per phase
    assert guard.total == dict(student=2, augmenter=1)
    with pytest.raises(FloatingPointError) as error:
        guard.record('student', False, {'student.loss_cls': nan, 'loss': one})
    message = str(error.value)
    for part in ('2 student updates in a row', 'iteration 7', "['student.loss_cls']",
                 '--resume /runs/x/iter_6.pth', 'max_nonfinite_skips'):
        assert part in message
    with pytest.raises(ValueError, match='max_consecutive'):
        NonFiniteGuard(0)


STUDENT_FIXES = ('optim_wrapper.student.optimizer.lr', 'optim_wrapper.student.clip_grad')
AUGMENTER_FIXES = ('optim_wrapper.augmenter.optimizer.lr',
                   'optim_wrapper.augmenter.clip_grad', 'model.augment_loss_weights')


@pytest.mark.parametrize('phase, terms, verdict, fixes', [
    ('student', {'student.loss_cls': math.inf}, 'The student diverged',
     STUDENT_FIXES + ('model.distill_losses',)),
    ('student', {'distill.loss_kd': math.nan},  # the loss that blew up, by name
     'The student diverged', STUDENT_FIXES + ('model.distill_losses.loss_kd.loss_weight',)),
    # A student blown up shows first in an augment phase's many steps in a row: its
    # own (inverse) losses on the views, not the augmenter, are to blame.
    ('augmenter', {'teacher.loss_cls': 1.0, 'student_inverse.loss_cls': math.inf},
     'The student diverged, not the augmenter', STUDENT_FIXES),
    ('augmenter', {'teacher.loss_cls': math.nan, 'student_inverse.loss_cls': math.nan},
     "The augmenter's update diverged", AUGMENTER_FIXES),
    ('augmenter', {'divergence': math.nan}, "The augmenter's update diverged",
     AUGMENTER_FIXES),
    ('augmenter', {'teacher.loss_cls': 1.0},  # finite terms, a non-finite gradient
     "The augmenter's update diverged", AUGMENTER_FIXES),
], ids=['student-task', 'student-distill', 'augmenter-student-terms',
        'augmenter-teacher-terms', 'augmenter-divergence', 'augmenter-gradient'])
def test_the_stop_says_which_phase_diverged_and_what_to_change(phase, terms, verdict,
                                                               fixes):
    """Not only "resume": the same settings diverge again from the last checkpoint."""
    hub = MessageHub.get_current_instance()
    hub.update_info('iter', 6)
    hub.update_info('last_ckpt', '/runs/x/iter_6.pth')
    with pytest.raises(FloatingPointError) as error:
        NonFiniteGuard(max_consecutive=1).record(
            phase, False, {k: torch.tensor(v) for k, v in terms.items()})
    message = str(error.value)
    assert verdict in message
    for fix in fixes:
        assert fix in message
    wrong = AUGMENTER_FIXES if 'student diverged' in verdict else STUDENT_FIXES
    assert not any(fix in message for fix in wrong)
    assert 'resuming from it unchanged would diverge again' in message
    assert 'load_from=/runs/x/iter_6.pth' in message  # a new learning rate: a new run


def test_bounded_keeps_parameters_finite_and_in_range():
    module = nn.Module()
    module.logits = nn.Parameter(torch.tensor([0.5, -0.5, 1.0, 2.0, 3.0]))
    with bounded(module, 10.0), torch.no_grad():  # whatever an optimizer does
        module.logits.copy_(torch.tensor([float('inf'), -float('inf'), float('nan'),
                                          -25.0, 3.5]))
    torch.testing.assert_close(module.logits.detach(),
                               torch.tensor([10.0, -10.0, 1.0, -10.0, 3.5]))


def test_nan_steps_in_both_phases_are_skipped_and_logged(workspace):
    """A NaN student loss at iteration 2, a NaN augmenter gradient in the first augment
    phase, and an augmenter learning rate of 1e12: the run finishes, the poisoned
    updates change nothing, the log names them, every weight stays finite and the
    augmenter's logits within +-10."""
    out = train(NAN_PROBE, workspace / 'run', workspace, '--cfg-options',
                'model.distill_losses.loss_probe.student_calls=[2]',
                'model.distill_losses.loss_probe.augmenter_calls=[1]',
                'model.distill_losses.loss_probe.augmenter_mode=grad',
                'optim_wrapper.augmenter.optimizer.lr=1e12').stdout
    probe = read_probe(workspace / 'run')
    changed = {(r['iter'], r['phase']): r for r in probe['records']}
    assert not changed[(1, 'student_step')]['student']  # iteration 2: skipped
    assert changed[(0, 'student_step')]['student']
    assert changed[(2, 'student_step')]['student']
    assert not changed[(0, 'between')]['augmenter']  # the first phase: skipped
    assert changed[(2, 'between')]['augmenter']  # the second phase stepped
    assert "TST student update at iteration 2 skipped: non-finite loss terms " \
           "['distill.loss_probe'] (1 in a row, 1 in this run)" in out
    assert 'TST augmenter update at augment phase before iteration 1, step 1/1 ' \
           'skipped: all loss terms finite, a non-finite gradient' in out
    assert 'TST augment phase before iteration 1: all 1 steps had non-finite' in out
    augmenter = torch.tensor(probe['augmenter'])
    assert math.isfinite(probe['student_checksum']) and augmenter.isfinite().all()
    assert augmenter.abs().max() == 10.0  # lr 1e12 pushed some to the bound


@pytest.mark.parametrize('phase,calls,where,term,verdict', [
    ('student', '[2,3]', 'iteration 3', 'distill.loss_probe',
     'The student diverged. Lower its learning rate'),
    ('augmenter', '[1,2]', 'augment phase before iteration 3, step 1/1', 'divergence',
     "The augmenter's update diverged: lower its learning rate")],
    ids=['student', 'augmenter'])
def test_consecutive_nonfinite_updates_stop_training(workspace, phase, calls, where, term,
                                                     verdict):
    """Two skips in a row in one phase stop the run with an error naming the phase, the
    step, the term, what to change and the last checkpoint (finite, and nothing saved
    after it)."""
    run = workspace / 'run'
    proc = train(NAN_PROBE, run, workspace, '--cfg-options',
                 f'model.distill_losses.loss_probe.{phase}_calls={calls}',
                 'model.max_nonfinite_skips=2', check=False)
    assert proc.returncode != 0
    assert f'FloatingPointError: 2 {phase} updates in a row skipped for a non-finite ' \
           f"loss or gradient (the last at {where}: non-finite loss terms ['{term}'])" \
        in proc.stdout
    assert verdict in proc.stdout
    assert f'The last checkpoint is {run / "iter_2.pth"}; resuming from it unchanged ' \
           'would diverge again' in proc.stdout
    state = torch.load(run / 'iter_2.pth', map_location='cpu',
                       weights_only=True)['state_dict']
    assert all(v.isfinite().all() for v in state.values() if v.is_floating_point())
    assert not osp.exists(run / 'iter_4.pth')
    with open(run / 'last_checkpoint') as f:
        assert f.read() == str(run / 'iter_2.pth')


def test_logging_a_skip_reads_terms_that_require_grad_without_a_warning():
    """``parse_losses`` returns the terms still attached to the graph; reading them for
    the log must not warn (``float()`` of a tensor that requires grad does)."""
    weight = torch.ones((), requires_grad=True)
    terms = {'student.loss_cls': weight * float('nan'), 'loss': weight * 2}
    with warnings.catch_warnings():
        warnings.simplefilter('error')
        NonFiniteGuard(max_consecutive=2).record('student', False, terms)
