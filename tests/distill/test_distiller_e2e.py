"""TST end to end through tools/train.py: phases, loops, resume, DDP."""
import glob
import json
import os.path as osp
import re

import pytest
import torch

from tests.conftest import REPO, TEST_CONFIGS, free_port, run, train
from tests.tools.test_train_tools import logged_losses

TST_TINY = osp.join(TEST_CONFIGS, 'tst_retinanet_tiny.py')
PROBE = osp.join(TEST_CONFIGS, 'tst_retinanet_tiny_probe.py')
RANK_RECORD = osp.join(TEST_CONFIGS, 'tst_retinanet_tiny_rank_record.py')
EPOCH_RECORD = osp.join(TEST_CONFIGS, 'tst_retinanet_tiny_epoch_record.py')
STUDENT_BATCHES = osp.join(TEST_CONFIGS, 'retinanet_tiny_batch_record.py')
TST_BATCHES = osp.join(TEST_CONFIGS, 'tst_retinanet_tiny_batch_record.py')


def read_probe(work_dir, rank=0) -> dict:
    with open(osp.join(str(work_dir), f'phases_rank{rank}.json')) as f:
        return json.load(f)


def assert_phases(records, augment_before):
    """The student changes only in student steps, the augmenter only between them,
    and only before the iterations in ``augment_before``."""
    steps = [r for r in records if r['phase'] == 'student_step']
    between = [r for r in records if r['phase'] == 'between']
    assert steps and all(r['student'] and not r['augmenter'] for r in steps)
    assert not any(r['student'] for r in between)
    changed = [r['iter'] for r in between if r['augmenter']]
    assert changed == sorted(augment_before)


def test_iter_loop_alternates(workspace):
    out = train(PROBE, workspace / 'run', workspace).stdout
    assert 'TST augment phase before iteration 1' in out
    assert 'TST augment phase before iteration 3' in out
    probe = read_probe(workspace / 'run')
    assert_phases(probe['records'], augment_before=[0, 2])
    assert probe['student_batches'] == [4, 4, 4, 4]  # [x_aug ; x], batch 2
    losses = logged_losses(workspace / 'run')
    assert sorted(losses) == [1, 2, 3, 4]
    assert 'coco/bbox_mAP:' in out  # validation evaluates the student
    # One summary per phase: the objective's terms and their gradient shares ...
    summaries = [line for line in out.splitlines()
                 if 'share of the augmenter gradient: teacher' in line]
    assert len(summaries) == 2 and all('student_inverse' in line for line in summaries)
    assert all(re.search(r'\(1 steps in [0-9.]+ s, [0-9.]+ s a step;', line)
               for line in summaries)
    # ... also for the visualizer, at the student iteration the phase precedes ...
    records = [json.loads(line) for path in glob.glob(str(
        workspace / 'run' / '*' / 'vis_data' / 'scalars.json')) for line in open(path)]
    shares = [r for r in records if 'augment/grad_share.teacher' in r]
    assert [r['step'] for r in shares] == [0, 2]
    assert all(0 <= r['augment/grad_share.teacher'] <= 1 for r in shares)
    # ... and augmenter values are not repeated on the student's log lines.
    student_lines = [line for line in out.splitlines() if 'Iter(train)' in line]
    assert student_lines and not any('augment.' in line for line in student_lines)


def test_epoch_loop_alternates(workspace):
    config = osp.join(TEST_CONFIGS, 'tst_retinanet_tiny_epoch_probe.py')
    out = train(config, workspace / 'run', workspace).stdout
    # 8 images, batch 2: 4 iterations per epoch; one pass of 4 augmenter steps
    assert 'TST augment phase before epoch 2: step 4/4' in out
    assert_phases(read_probe(workspace / 'run')['records'], augment_before=[4])
    # ... and the phase leaves the epoch after it its 4 batches (mmdet's
    # AspectRatioBatchSampler, suspended after the phase's last batch, used to hand
    # that batch on to the epoch as a fifth).
    assert sorted(logged_losses(workspace / 'run')) == list(range(1, 9))


def test_every_k_iterations_mode(workspace):
    train(PROBE, workspace / 'run', workspace, '--cfg-options', 'train_cfg.augment_iters=[]',
          'train_cfg.augment_interval=2')
    assert_phases(read_probe(workspace / 'run')['records'], augment_before=[0, 2])


def test_resume_continues_exactly(workspace):
    """Resuming at iteration 2, just before an augment phase, gives the same losses
    as the uninterrupted run (data, random augmentations and both optimizers)."""
    straight, resumed = workspace / 'straight', workspace / 'resumed'
    train(TST_TINY, straight, workspace)
    out = train(TST_TINY, resumed, workspace, '--resume', str(straight / 'iter_2.pth')).stdout
    assert 'TST augment phase before iteration 3' in out
    reference, continued = logged_losses(straight), logged_losses(resumed)
    assert sorted(continued) == [3, 4]
    for it in (3, 4):
        assert continued[it] == pytest.approx(reference[it], rel=1e-5, abs=1e-6)


def test_ddp_two_ranks_keep_identical_augmenters(workspace):
    work_dir = workspace / 'ddp'
    run(['bash', osp.join(REPO, 'tools', 'dist_train.sh'), PROBE, '2', '--work-dir',
         str(work_dir)], workspace, env={'PORT': str(free_port())})
    ranks = [read_probe(work_dir, rank) for rank in (0, 1)]
    for probe in ranks:
        assert_phases(probe['records'], augment_before=[0, 2])
    assert ranks[0]['augmenter'] == ranks[1]['augmenter']
    assert any(v != 0 for v in ranks[0]['augmenter'])  # it did learn something
    assert ranks[0]['student_checksum'] == pytest.approx(ranks[1]['student_checksum'],
                                                         rel=1e-6)


def test_caffe_teacher_from_a_config_file_with_pytorch_student(workspace):
    """The teacher comes from a config path and its own checkpoint, BGR caffe-style."""
    teacher_run = workspace / 'teacher'
    train(osp.join(TEST_CONFIGS, 'retinanet_tiny_caffe.py'), teacher_run, workspace,
          '--cfg-options', 'train_cfg.max_iters=2')
    out = train(osp.join(TEST_CONFIGS, 'tst_retinanet_tiny_caffe_teacher.py'),
                workspace / 'tst', workspace, '--cfg-options',
                f'model.teacher_ckpt={teacher_run / "iter_2.pth"}').stdout
    assert f'from path: {teacher_run / "iter_2.pth"}' in out  # the teacher's weights
    assert 'do not match exactly' not in out  # ... all of them
    assert 'TST augment phase before iteration 3' in out
    assert sorted(logged_losses(workspace / 'tst')) == [1, 2, 3, 4]


@pytest.mark.parametrize('steps', [2, 3])
def test_resume_inside_an_augment_phase(workspace, steps):
    """An augment phase before iteration 3 checkpoints itself after every step but its
    last; resuming from the newest of those gives the uninterrupted run's losses."""
    phase = ['--cfg-options', f'train_cfg.augment_steps={steps}',
             'train_cfg.augment_checkpoint_interval=1']
    straight, resumed = workspace / 'straight', workspace / 'resumed'
    # No regular checkpoint after the phase: its last checkpoint stays the newest, and
    # on disk (as in a run stopped before the next one; a newer one removes it).
    train(TST_TINY, straight, workspace, *phase, 'default_hooks.checkpoint.interval=5',
          'default_hooks.checkpoint.save_last=False')
    last = steps - 1
    ckpt = straight / f'augment_before_iter_3_step_{last}.pth'
    assert osp.isfile(ckpt)
    assert not osp.exists(straight / f'augment_before_iter_3_step_{last - 1}.pth')  # kept: 1
    out = train(TST_TINY, resumed, workspace, '--resume', str(ckpt), *phase).stdout
    assert f'TST augment phase before iteration 3: resuming after step {last}' in out
    assert f'TST augment phase before iteration 3: step {steps}/{steps}' in out
    reference, continued = logged_losses(straight), logged_losses(resumed)
    assert sorted(continued) == [3, 4]
    for it in (3, 4):
        assert continued[it] == pytest.approx(reference[it], rel=1e-5, abs=1e-6)


def dist_train(config, work_dir, cwd, procs, *extra):
    """``bash tools/dist_train.sh CONFIG PROCS --work-dir WORK_DIR EXTRA...``"""
    return run(['bash', osp.join(REPO, 'tools', 'dist_train.sh'), config, str(procs),
                '--work-dir', str(work_dir), *extra], cwd, env={'PORT': str(free_port())})


def read_rank_record(work_dir, rank):
    with open(osp.join(str(work_dir), f'losses_rank{rank}.json')) as f:
        losses = json.load(f)
    weights = torch.load(osp.join(str(work_dir), f'final_rank{rank}.pth'),
                         map_location='cpu', weights_only=True)
    return losses, weights


def assert_resumed_exactly(straight, resumed, iters, continued, ranks=(0,)):
    """Every rank of the resumed run logged the uninterrupted run's losses for the
    1-based iterations ``continued`` (of ``iters``), bit for bit, and ended with the
    same weights, augmenter included (see tests/plugins/rank_record.py)."""
    for rank in ranks:
        reference, reference_weights = read_rank_record(straight, rank)
        losses, weights = read_rank_record(resumed, rank)
        assert sorted(reference, key=int) == [str(i) for i in iters]
        assert sorted(losses, key=int) == [str(i) for i in continued]
        for it in losses:
            assert losses[it] == reference[it], f'rank {rank}, iteration {it}'
        assert weights.keys() == reference_weights.keys()
        changed = [k for k in weights if not torch.equal(weights[k], reference_weights[k])]
        assert not changed, f'rank {rank}: {len(changed)} tensors differ: {changed[:5]}'
        assert any(k.startswith('augmenter.') for k in weights)


def test_dist_train_resume_is_exact_on_every_rank(workspace):
    """2 processes, each with its own random stream (diff_rank_seed), augment phases
    either side of iteration 3: resumed from iter_3.pth, every rank logs the
    uninterrupted run's losses bit for bit and ends with its weights."""
    straight, resumed = workspace / 'straight', workspace / 'resumed'
    dist_train(RANK_RECORD, straight, workspace, 2)
    dist_train(RANK_RECORD, resumed, workspace, 2, '--resume', str(straight / 'iter_3.pth'))
    assert_resumed_exactly(straight, resumed, range(1, 7), range(4, 7), ranks=(0, 1))


def test_epoch_loop_resumes_exactly_at_an_epoch_boundary(workspace):
    """2 epochs of 4 iterations, an augment phase before the second: resumed from
    epoch_1.pth, the phase and the second epoch are those of the uninterrupted run."""
    straight, resumed = workspace / 'straight', workspace / 'resumed'
    train(EPOCH_RECORD, straight, workspace)
    out = train(EPOCH_RECORD, resumed, workspace, '--resume',
                str(straight / 'epoch_1.pth')).stdout
    assert 'TST augment phase before epoch 2: step 4/4' in out
    assert_resumed_exactly(straight, resumed, range(1, 9), range(5, 9))


def test_epoch_loop_resumes_exactly_inside_a_two_pass_augment_phase(workspace):
    """augment_passes=2: 8 augmenter steps before epoch 2, a checkpoint after step 5 (in
    the second pass); resumed from it, the run ends as the uninterrupted one."""
    phase = ['--cfg-options', 'train_cfg.augment_passes=2',
             'train_cfg.augment_checkpoint_interval=5']
    straight, resumed = workspace / 'straight', workspace / 'resumed'
    # No epoch_2.pth to supersede (and remove) the phase's checkpoint.
    out = train(EPOCH_RECORD, straight, workspace, *phase,
                'default_hooks.checkpoint.save_last=False',
                'default_hooks.checkpoint.interval=3').stdout
    assert 'TST augment phase before epoch 2: 8 augmenter steps' in out
    assert 'TST augment phase before epoch 2: step 8/8' in out
    assert_phases(read_probe(straight)['records'], augment_before=[4])
    ckpt = straight / 'augment_before_epoch_2_step_5.pth'
    out = train(EPOCH_RECORD, resumed, workspace, '--resume', str(ckpt), *phase).stdout
    assert 'TST augment phase before epoch 2: resuming after step 5' in out
    assert 'TST augment phase before epoch 2: step 8/8' in out
    assert_resumed_exactly(straight, resumed, range(1, 9), range(5, 9))


def test_student_learns_from_the_augmented_view_only(workspace):
    """student_views=('aug',): the student's batch is the augmented images alone (2,
    not [x_aug ; x] = 4), the augmenter is trained in its phases only."""
    out = train(PROBE, workspace / 'run', workspace, '--cfg-options',
                'model.student_views=[aug]').stdout
    assert 'TST augment phase before iteration 3' in out
    probe = read_probe(workspace / 'run')
    assert_phases(probe['records'], augment_before=[0, 2])
    assert probe['student_batches'] == [2, 2, 2, 2]  # test_iter_loop_alternates: 4


def test_every_arm_sees_the_same_images_from_the_same_student(workspace):
    """Student alone, student on random augmentation (teacher=None), plain KD and TST
    (augment phases drawing 6 batches): the same initial student and, step for step,
    the same loaded images, flips included (the pipeline's randomness lives in a
    worker). The augment phases draw from their own dataloader."""
    runs = {
        'student': (STUDENT_BATCHES, ),
        'random_augment': (TST_BATCHES, '--cfg-options', 'model.teacher=None',
                           'model.distill_losses=None', 'train_cfg.augment_iters=[]'),
        'kd': (TST_BATCHES, '--cfg-options', 'model.student_views=[clean]',
               'train_cfg.augment_iters=[]'),
        'tst': (TST_BATCHES, ),
    }
    records = {}
    for name, (config, *extra) in runs.items():
        out = train(config, workspace / name, workspace, *extra).stdout
        with open(workspace / name / 'batches.json') as f:
            records[name] = json.load(f)
    assert 'TST augment phase before iteration 4: 3 augmenter steps' in out
    student = records.pop('student')
    assert len(student['batches']) == 6
    for name, record in records.items():
        assert record == student, name
