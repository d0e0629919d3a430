"""TSTPolicyHook and DistillLossWeightHook: schedule arithmetic, checks, a real run."""
import glob
import json
import os.path as osp
from types import SimpleNamespace

import pytest
import torch
import torch.nn as nn
from mmengine.logging import MessageHub
from mmengine.runner import IterBasedTrainLoop, LogProcessor

from tests.conftest import TEST_CONFIGS, train
from tst_mm.augment import TSTAugmenter
from tst_mm.engine import DistillLossWeightHook, TSTPolicyHook
from tst_mm.engine.hooks import distill_weight_factor, plot_policy
from tst_mm.engine.hooks.policy_hook import CHECKPOINT_KEY
from tst_mm.losses import KLDivergence

HOOKS_CFG = osp.join(TEST_CONFIGS, 'tst_retinanet_tiny_hooks.py')
PNG_SIGNATURE = b'\x89PNG\r\n\x1a\n'


class ToyDistiller(nn.Module):
    """What the hooks read of a TSTDistiller: ``augmenter`` and ``distill_losses``."""

    def __init__(self):
        super().__init__()
        self.augmenter = TSTAugmenter()
        self.distill_losses = nn.ModuleDict(dict(loss_kd=KLDivergence(loss_weight=2.0),
                                                 loss_fpn=KLDivergence(loss_weight=0.5)))


class ScalarSink:
    def __init__(self):
        self.calls = []

    def add_scalars(self, scalars, step=0, **kwargs):
        self.calls.append((step, dict(scalars)))


def fake_runner(model=None, tmp_path='.', **kwargs):
    runner = SimpleNamespace(
        model=ToyDistiller() if model is None else model, iter=0, epoch=0,
        max_iters=100, max_epochs=10, message_hub=MessageHub.get_instance('test_hooks'),
        log_processor=LogProcessor(), visualizer=ScalarSink(), work_dir=str(tmp_path),
        train_loop=SimpleNamespace(), _resume=False)
    for key, value in kwargs.items():
        setattr(runner, key, value)
    return runner


# ------------------------------------------------------------- the schedule ---
def test_factor_warmup_is_linear_from_zero():
    assert [distill_weight_factor(t, warmup=4) for t in range(6)] == \
        [0.0, 0.25, 0.5, 0.75, 1.0, 1.0]


def test_factor_decays_linearly_to_min_ratio_and_holds():
    kwargs = dict(warmup=2, decay_start=10, decay_end=20, min_ratio=0.2)
    factors = {t: distill_weight_factor(t, **kwargs) for t in (5, 10, 15, 20, 50)}
    assert factors == pytest.approx({5: 1.0, 10: 1.0, 15: 0.6, 20: 0.2, 50: 0.2})


def test_factor_is_zero_from_stop_on():
    assert [distill_weight_factor(t, warmup=2, stop=3) for t in range(5)] == \
        [0.0, 0.5, 1.0, 0.0, 0.0]
    assert distill_weight_factor(10**6) == 1.0  # no schedule: always the full weight


@pytest.mark.parametrize('kwargs, bad', [
    (dict(warmup=-1), '-1'), (dict(warmup=1.5), '1.5'), (dict(stop=True), 'True'),
    (dict(decay_start=5), 'decay_end=None'), (dict(decay_start=5, decay_end=5), '5'),
    (dict(warmup=10, decay_start=5, decay_end=20), 'warmup=10'),
    (dict(min_ratio=1.5), '1.5'), (dict(warmup=10, stop=10), 'stop=10'),
    (dict(losses='loss_kd'), "'loss_kd'"), (dict(losses=[]), '[]'),
])
def test_weight_hook_rejects_bad_arguments_and_quotes_them(kwargs, bad):
    with pytest.raises(ValueError) as err:
        DistillLossWeightHook(**kwargs)
    assert bad in str(err.value)


def test_weight_hook_scales_initial_weights_by_iteration():
    runner = fake_runner()
    losses = runner.model.distill_losses
    hook = DistillLossWeightHook(warmup=4, stop=8)
    hook.before_run(runner)
    seen = []
    for it in range(10):
        runner.iter = it
        hook.before_train_iter(runner, it)
        seen.append(losses['loss_kd'].loss_weight)
        scalar = runner.message_hub.get_scalar('train/distill_weight/loss_fpn').current()
        assert scalar == losses['loss_fpn'].loss_weight == 0.5 * hook.factor(it)
    assert seen == [0.0, 0.5, 1.0, 1.5, 2.0, 2.0, 2.0, 2.0, 0.0, 0.0]


def test_weight_hook_by_epoch_and_selected_losses_through_a_wrapper():
    runner = fake_runner(nn.DataParallel(ToyDistiller()), iter=57, epoch=3)
    hook = DistillLossWeightHook(by_epoch=True, stop=3, losses=['loss_kd'])
    hook.before_run(runner)
    hook.before_train(runner)
    hook.before_train_iter(runner, 0)
    losses = runner.model.module.distill_losses
    assert losses['loss_kd'].loss_weight == 0.0  # epoch 3 >= stop
    assert losses['loss_fpn'].loss_weight == 0.5  # not scheduled


def test_weight_hook_schedules_the_student_step_only():
    """Augmenter steps run before the first student iteration and between two: they
    see the configured weights, whatever the schedule says (warm-up, stop)."""
    runner = fake_runner()
    losses = runner.model.distill_losses
    hook = DistillLossWeightHook(warmup=2, stop=3)
    hook.before_run(runner)
    hook.before_train(runner)
    for it in range(5):
        assert losses['loss_kd'].loss_weight == 2.0  # an augment phase here: configured
        runner.iter = it
        hook.before_train_iter(runner, it)
        assert losses['loss_kd'].loss_weight == 2.0 * hook.factor(it)  # student step
        hook.after_train_iter(runner, it)
    assert losses['loss_fpn'].loss_weight == 0.5


def test_weight_hook_by_epoch_refuses_an_iteration_loop():
    loop = IterBasedTrainLoop.__new__(IterBasedTrainLoop)
    runner = fake_runner(train_loop=loop)
    hook = DistillLossWeightHook(by_epoch=True, warmup=1)
    hook.before_run(runner)
    with pytest.raises(ValueError, match='by_epoch=False'):
        hook.before_train(runner)


def test_weight_hook_checks_the_model_and_names_valid_losses():
    with pytest.raises(TypeError, match='TSTDistiller'):
        DistillLossWeightHook().before_run(fake_runner(nn.Linear(2, 2)))
    with pytest.raises(KeyError, match=r"\['loss_kd', 'loss_fpn'\]") as err:
        DistillLossWeightHook(losses=['loss_kd', 'loss_kl']).before_run(fake_runner())
    assert "['loss_kl']" in str(err.value)


def test_logged_weight_is_current_not_a_running_mean():
    """Loss names contain 'loss': without the hook's log config they would be averaged."""
    runner = fake_runner()
    hook = DistillLossWeightHook(stop=3)
    hook.before_run(runner)
    for it in range(4):
        runner.iter = it
        hook.before_train_iter(runner, it)
    processor = runner.log_processor
    tag = processor._collect_scalars(processor.custom_cfg, runner, 'train')
    assert tag['distill_weight/loss_kd'] == 0.0  # 2, 2, 2, 0 would average to 1.5


# ------------------------------------------------------------ the policy hook ---
def test_policy_hook_checks_arguments_and_model():
    with pytest.raises(ValueError, match='interval must be an int >= 1, got 0'):
        TSTPolicyHook(interval=0)
    with pytest.raises(TypeError, match='TSTDistiller'):
        TSTPolicyHook().before_run(fake_runner(nn.Linear(2, 2)))
    broken = ToyDistiller()
    broken.augmenter = nn.Identity()
    with pytest.raises(TypeError, match='policy'):
        TSTPolicyHook().before_run(fake_runner(broken))


def test_policy_hook_records_at_interval_and_after_augment_phases(tmp_path):
    runner = fake_runner(tmp_path=tmp_path,
                         train_loop=SimpleNamespace(augment_iters=(0, 6)))
    hook = TSTPolicyHook(interval=4, plot_interval=100)
    hook.before_run(runner)
    hook.before_train(runner)
    for it in range(10):
        runner.iter = it
        hook.after_train_iter(runner, it)
    runner.iter = 10
    hook.after_train(runner)
    assert [r['step'] for r in hook.history] == [0, 1, 4, 7, 8, 10]
    step, scalars = runner.visualizer.calls[-1]
    assert step == 10 and len(scalars) == 11 + 14  # 11 learned magnitudes, 14 probs
    assert scalars['policy/Rotate.magnitude'] == pytest.approx(0.5)
    assert 'policy/Cutout.magnitude' not in scalars
    with open(tmp_path / 'policy.png', 'rb') as f:
        assert f.read(8) == PNG_SIGNATURE


def test_policy_hook_records_after_epoch_augment_phases():
    runner = fake_runner(train_loop=SimpleNamespace(augment_epochs=(1,)))
    hook = TSTPolicyHook(interval=1000, plot=False)
    hook.before_run(runner)
    for epoch, batch_idx, it in ((0, 0, 0), (0, 1, 1), (1, 0, 2), (1, 1, 3)):
        runner.epoch, runner.iter = epoch, it
        hook.after_train_iter(runner, batch_idx)
    assert [r['step'] for r in hook.history] == [3]  # after iteration 2, epoch 1's first


def test_policy_history_survives_a_resume(tmp_path):
    runner = fake_runner(tmp_path=tmp_path)
    hook = TSTPolicyHook(interval=1, plot=False)
    hook.before_run(runner)
    hook.before_train(runner)
    with torch.no_grad():
        runner.model.augmenter.probability_logits.fill_(1.0)
    hook.after_train_iter(runner, 0)
    checkpoint = {}
    hook.before_save_checkpoint(runner, checkpoint)

    resumed = TSTPolicyHook(interval=1, plot=False)
    resumed.after_load_checkpoint(fake_runner(_resume=True), checkpoint)
    assert resumed.history == hook.history
    ignored = TSTPolicyHook()
    ignored.after_load_checkpoint(fake_runner(_resume=False), checkpoint)
    assert ignored.history == []
    # The resumed run records its first iteration again: replaced, not duplicated.
    resumed.before_run(runner)
    runner.iter = 1
    resumed.before_train(runner)
    assert [r['step'] for r in resumed.history] == [0, 1]
    assert resumed.history[-1]['policy']['Invert']['probability'] == \
        pytest.approx(torch.sigmoid(torch.tensor(1.0)).item())


def test_plot_policy_writes_a_png(tmp_path):
    history = [dict(step=s, policy=dict(Rotate=dict(magnitude=0.5 + s / 100,
                                                    probability=0.5),
                                        Invert=dict(magnitude=1.0, probability=0.4)))
               for s in (0, 50, 100)]
    plot_policy(history, {'Rotate'}, str(tmp_path / 'p.png'))
    with open(tmp_path / 'p.png', 'rb') as f:
        assert f.read(8) == PNG_SIGNATURE


# ------------------------------------------------------------------ end to end ---
def scalar_records(work_dir) -> list:
    paths = glob.glob(osp.join(str(work_dir), '*', 'vis_data', 'scalars.json'))
    assert len(paths) == 1, paths
    with open(paths[0]) as f:
        return [json.loads(line) for line in f]


def by_iter(records) -> dict:
    """iteration -> the LoggerHook's record (the one with the losses)."""
    return {r['iter']: r for r in records if 'iter' in r and 'loss' in r}


def test_augmenter_divergence_is_not_scaled_by_the_weight_schedule(workspace):
    """Augment phases before iterations 1 and 3, distillation weights 0 at both (warm-up,
    then stopped): the student's distillation losses are 0 there, the augmenter's
    divergence term is not."""
    out = train(HOOKS_CFG, workspace / 'run', workspace, '--cfg-options',
                'model.augment_loss_weights.divergence=1', 'custom_hooks.1.warmup=1',
                'custom_hooks.1.stop=2', 'train_cfg.max_iters=3').stdout
    divergences = [float(line.split('augment.divergence: ')[1].split(',')[0])
                   for line in out.splitlines()
                   if 'TST augment phase before iteration' in line and 'step 1/1' in line]
    assert len(divergences) == 2 and all(d > 0 for d in divergences)
    logged = by_iter(scalar_records(workspace / 'run'))
    assert [logged[it]['distill_weight/loss_kd_cls'] for it in (1, 2, 3)] == [0, 1, 0]
    assert logged[1]['distill.loss_mimic_fpn'] == logged[3]['distill.loss_mimic_fpn'] == 0


def test_train_with_both_hooks_then_resume(workspace):
    """tools/train.py, 4 iterations: weights warm up over 2 and stop at iteration 3."""
    straight = workspace / 'straight'
    out = train(HOOKS_CFG, straight, workspace).stdout
    assert 'TST policy at iter 1: Brightness m=' in out
    records = scalar_records(straight)
    policy = [r for r in records if 'policy/Rotate.magnitude' in r]
    assert [r['step'] for r in policy] == [0, 1, 2, 3, 4]
    assert all(0 < r['policy/Equalize.probability'] < 1 for r in policy)
    logged = by_iter(records)
    assert sorted(logged) == [1, 2, 3, 4]
    for name in ('loss_kd_cls', 'loss_mimic_fpn'):
        weights = [logged[it][f'distill_weight/{name}'] for it in (1, 2, 3, 4)]
        assert weights == [0.0, 0.5, 1.0, 0.0]  # iterations 0..3: t/2, then stopped
        assert logged[1][f'distill.{name}'] == logged[4][f'distill.{name}'] == 0.0
    assert logged[3]['distill.loss_mimic_fpn'] > 0
    with open(straight / 'policy.png', 'rb') as f:
        assert f.read(8) == PNG_SIGNATURE

    # Resume at iteration 2: the policy record continues from the checkpoint and
    # the weights follow the schedule without saved state.
    resumed = workspace / 'resumed'
    train(HOOKS_CFG, resumed, workspace, '--resume', str(straight / 'iter_2.pth'))
    logged = by_iter(scalar_records(resumed))
    assert [logged[it]['distill_weight/loss_kd_cls'] for it in (3, 4)] == [1.0, 0.0]
    # weights_only: the record is plain data (importing tst_mm allow-listed the rest).
    final = torch.load(str(resumed / 'iter_4.pth'), map_location='cpu', weights_only=True)
    assert [r['step'] for r in final[CHECKPOINT_KEY]] == [0, 1, 2, 3, 4]
    assert osp.isfile(resumed / 'policy.png')
