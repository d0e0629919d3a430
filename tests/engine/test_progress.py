"""Time and checkpoints around augment phases (tst_mm/engine/progress.py): phase lines
with an ETA, student timings without the phases, an ETA that counts them, intra-phase
checkpoints named as the log names the phase, logged, and removed once superseded."""
import glob
import json
import os
import os.path as osp
import re
from types import SimpleNamespace

import pytest
from mmengine.hooks import IterTimerHook
from mmengine.logging import MessageHub

from tests.conftest import TEST_CONFIGS, train
from tst_mm.engine.progress import (STEP_TIME_KEY, AugmentProgressHook,
                                    phase_checkpoint_name)

TST_TINY = osp.join(TEST_CONFIGS, 'tst_retinanet_tiny.py')


def scalars(work_dir) -> dict:
    """iteration -> the scalars LoggerHook wrote for it."""
    records = {}
    for path in glob.glob(osp.join(str(work_dir), '*', 'vis_data', 'scalars.json')):
        for line in open(path):
            record = json.loads(line)
            if 'loss' in record:  # the student's lines
                records[record['iter']] = record
    return records


def test_phase_lines_student_times_and_checkpoints(workspace):
    """Augment phases of 3 steps before iterations 1 and 3 (0.5 s a step here), a
    checkpoint after each step but the last, mmengine's CheckpointHook keeping one."""
    run = workspace / 'run'
    out = train(TST_TINY, run, workspace, '--cfg-options', 'train_cfg.augment_steps=3',
                'train_cfg.augment_checkpoint_interval=1',
                'default_hooks.checkpoint.max_keep_ckpts=1',
                'log_processor.window_size=1').stdout  # each iteration's own times
    # Progress lines as LoggerHook's: the phase's ETA, time and data_time per step.
    assert re.search(r'TST augment phase before iteration 3: step 3/3  eta: 0:00:00  '
                     r'time: [0-9.]+  data_time: [0-9.]+  augment\.teacher\.loss: ', out)
    # The next phase's expected time, from the last phase's step time.
    assert re.search(r'TST augment phase before iteration 3: 3 augmenter steps \(eta '
                     r'0:00:0\d at [0-9.]+ s a step, as in the last phase\)', out)
    took = [float(t) for t in re.findall(r'\(3 steps in ([0-9.]+) s, [0-9.]+ s a step;',
                                         out)]
    assert len(took) == 2
    # The iterations after the phases are timed without them (they used to take the
    # phase as their data_time).
    times = scalars(run)
    assert sorted(times) == [1, 2, 3, 4]
    for it, phase_time in zip((1, 3), took):
        assert times[it]['data_time'] < phase_time / 3, (it, times[it], phase_time)
        assert times[it]['time'] < phase_time, (it, times[it], phase_time)
    # Checkpoints inside the phases: logged, named 1-based as the log names the phase,
    # each removing the one before, the last removed once iter_2.pth / iter_4.pth
    # supersede it; CheckpointHook's max_keep_ckpts=1 leaves iter_4.pth alone.
    for where, it in (('iteration 1', 1), ('iteration 3', 3)):
        for step in (1, 2):
            assert (f'Saving checkpoint at step {step}/3 of the TST augment phase before '
                    f'{where}: augment_before_iter_{it}_step_{step}.pth') in out
    assert sorted(f for f in os.listdir(run) if f.endswith('.pth')) == ['iter_4.pth']
    with open(run / 'last_checkpoint') as f:
        assert f.read() == str(run / 'iter_4.pth')


def test_phase_checkpoint_kept_while_resume_needs_it(workspace):
    """A phase before the last iteration and no checkpoint after it: its last
    checkpoint stays, in CheckpointHook's out_dir, and `--resume` picks it up."""
    run, out_dir = workspace / 'run', workspace / 'ckpts'
    options = ['--cfg-options', 'train_cfg.augment_iters=[3]', 'train_cfg.augment_steps=3',
               'train_cfg.augment_checkpoint_interval=1',
               'default_hooks.checkpoint.interval=3',
               'default_hooks.checkpoint.save_last=False',
               f'default_hooks.checkpoint.out_dir={out_dir}']
    train(TST_TINY, run, workspace, *options)
    ckpt = out_dir / 'run' / 'augment_before_iter_4_step_2.pth'
    assert sorted(os.listdir(out_dir / 'run')) == ['augment_before_iter_4_step_2.pth',
                                                   'iter_3.pth']
    assert not glob.glob(str(run / '*.pth'))
    with open(run / 'last_checkpoint') as f:
        assert f.read() == str(ckpt)
    out = train(TST_TINY, run, workspace, '--resume', *options).stdout
    assert 'TST augment phase before iteration 4: resuming after step 2' in out


def fake_runner(loop_kind, it, epoch=0, eta=8.0, step_time=None):
    """A runner after student iteration ``it`` (0-based) of 10, IterTimerHook's ETA
    ``eta`` for the 9 - it left, ``step_time`` measured in a past phase."""
    hub = MessageHub(f'progress_{loop_kind}_{it}_{epoch}_{step_time}')
    hub.update_info('eta', eta)
    hub.update_scalar('train/time', eta / (9 - it))
    if step_time is not None:
        hub.update_info(STEP_TIME_KEY, step_time)
    return SimpleNamespace(message_hub=hub, hooks=[IterTimerHook()], iter=it, epoch=epoch,
                           max_iters=10)


@pytest.mark.parametrize('step_time, expected', [
    (None, 8.0 + 2 * 3 * 1.0),  # phases before 6 and 9 ahead, at the student's 1 s
    (0.5, 8.0 + 2 * 3 * 0.5),  # ... at the step time of the last phase
])
def test_eta_counts_the_phases_to_come(step_time, expected):
    loop = SimpleNamespace(augment_iters=(0, 5, 8), augment_steps=3, augment_interval=None)
    runner = fake_runner('iter', it=1, step_time=step_time)
    hook = AugmentProgressHook(loop)
    hook.after_train_iter(runner, 1)
    assert runner.message_hub.get_info('eta') == pytest.approx(expected)


def test_eta_of_the_epoch_loop_and_interleaved_steps():
    # 5 epochs of 2 iterations, in epoch 1 (iteration 3): phases before epochs 3 and 4
    # (2 passes of 2 steps each), one interleaved step every 4th iteration (4 and 8).
    loop = SimpleNamespace(augment_epochs=(1, 3, 4), augment_passes=2, dataloader=[0, 0],
                           augment_interval=4)
    runner = fake_runner('epoch', it=3, epoch=1, eta=6.0, step_time=0.5)
    hook = AugmentProgressHook(loop)
    hook.add_interval_step(0.25)
    hook.after_train_iter(runner, 1)
    assert runner.message_hub.get_info('eta') == pytest.approx(6.0 + 8 * 0.5 + 2 * 0.25)


def test_phase_checkpoint_names_are_one_based():
    assert phase_checkpoint_name('epoch_6', 500) == 'augment_before_epoch_7_step_500.pth'
    assert phase_checkpoint_name('iter_0', 1) == 'augment_before_iter_1_step_1.pth'
