"""The entry points, run as a user runs them: train, resume, test, torchrun, Slurm."""
import glob
import json
import os
import os.path as osp
import pickle
import subprocess
import sys

import pytest
import torch

from tests.conftest import REPO, TEST_CONFIGS, free_port, run, train

TINY_DET = osp.join(TEST_CONFIGS, 'retinanet_tiny_digits.py')


def logged_losses(work_dir) -> dict:
    """iteration -> loss, from the scalars mmengine's visualizer wrote."""
    losses = {}
    for path in glob.glob(osp.join(str(work_dir), '*', 'vis_data', 'scalars.json')):
        with open(path) as f:
            for line in f:
                record = json.loads(line)
                if 'loss' in record:
                    losses[record['iter']] = record['loss']
    return losses


def test_resume_continues_exactly(workspace):
    """4 iterations straight == 2 iterations, then --resume for the last 2."""
    straight, resumed = workspace / 'straight', workspace / 'resumed'
    train(TINY_DET, straight, workspace)
    out = train(TINY_DET, resumed, workspace, '--resume',
                str(straight / 'iter_2.pth')).stdout
    assert 'resumed epoch: 0, iter: 2' in out
    reference, continued = logged_losses(straight), logged_losses(resumed)
    assert sorted(reference) == [1, 2, 3, 4] and sorted(continued) == [3, 4]
    for it in (3, 4):
        assert continued[it] == pytest.approx(reference[it], rel=1e-5, abs=1e-6)
    assert osp.isfile(resumed / 'iter_4.pth')


def test_checkpoints_load_with_weights_only(workspace, tmp_path):
    """torch >= 2.6 refuses mmengine checkpoints unless tst_mm allow-lists their classes."""
    train(TINY_DET, tmp_path / 'run', workspace, '--cfg-options', 'train_cfg.max_iters=2')
    ckpt = str(tmp_path / 'run' / 'iter_2.pth')
    probe = ('import sys, torch\n'
             'if sys.argv[2] == "1": import tst_mm\n'
             'ckpt = torch.load(sys.argv[1], map_location="cpu", weights_only=True)\n'
             'print(sorted(ckpt))')
    with_fix = subprocess.run([sys.executable, '-c', probe, ckpt, '1'],
                              capture_output=True, text=True)
    assert with_fix.returncode == 0, with_fix.stderr
    assert "'message_hub'" in with_fix.stdout and "'state_dict'" in with_fix.stdout
    without = subprocess.run([sys.executable, '-c', probe, ckpt, '0'],
                             capture_output=True, text=True)
    if tuple(int(v) for v in torch.__version__.split('.')[:2]) >= (2, 6):
        assert without.returncode != 0 and 'HistoryBuffer' in without.stderr


def test_test_tool_evaluates_and_dumps(workspace, tmp_path):
    train(TINY_DET, tmp_path / 'run', workspace, '--cfg-options', 'train_cfg.max_iters=2')
    out = run([sys.executable, osp.join(REPO, 'tools', 'test.py'), TINY_DET,
               str(tmp_path / 'run' / 'iter_2.pth'), '--work-dir', str(tmp_path / 'test'),
               '--out', str(tmp_path / 'preds.pkl')], workspace).stdout
    assert 'coco/bbox_mAP:' in out
    with open(tmp_path / 'preds.pkl', 'rb') as f:
        predictions = pickle.load(f)
    assert len(predictions) == 4  # the 4 validation images
    assert 'pred_instances' in predictions[0]


def test_dist_train_two_processes_on_gloo(workspace, tmp_path):
    """torchrun with 2 CPU processes: both ranks train every iteration, weights agree."""
    work_dir = tmp_path / 'ddp'
    config = osp.join(TEST_CONFIGS, 'retinanet_tiny_rank_probe.py')
    run(['bash', osp.join(REPO, 'tools', 'dist_train.sh'), config, '2',
         '--work-dir', str(work_dir), '--cfg-options', 'train_cfg.max_iters=3'],
        workspace, env={'PORT': str(free_port())})
    probes = []
    for rank in (0, 1):
        with open(work_dir / f'rank{rank}.json') as f:
            probes.append(json.load(f))
    assert [p['world_size'] for p in probes] == [2, 2]
    assert [p['iters'] for p in probes] == [3, 3]
    assert probes[0]['checksum'] == pytest.approx(probes[1]['checksum'], rel=1e-6)


@pytest.mark.parametrize('config, options', [
    ('pspnet_tiny_syncbn.py', []),
    ('tst_pspnet_tiny_syncbn.py', ['train_cfg.augment_iters=[0]'])])
def test_dist_train_on_cpu_turns_syncbn_into_bn(workspace, tmp_path, config, options):
    """mmseg's Cityscapes configs use SyncBN, which DDP takes on CUDA only: a 2-process
    gloo run makes it BatchNorm (mmseg's own wrapper, and TST's), and says so."""
    out = run(['bash', osp.join(REPO, 'tools', 'dist_train.sh'),
               osp.join(TEST_CONFIGS, config), '2', '--work-dir', str(tmp_path / 'ddp'),
               '--cfg-options', 'train_cfg.max_iters=1', *options],
              workspace, env={'PORT': str(free_port())}).stdout
    assert ('SyncBatchNorm needs CUDA: this CPU distributed run uses BatchNorm for its 28 '
            'SyncBatchNorm layers, so BN statistics are per process') in out
    assert 'Iter(train) [1/1]' in out


def test_slurm_train_passes_mmdet_arguments_to_srun(tmp_path):
    fake_bin = tmp_path / 'bin'
    fake_bin.mkdir()
    record = tmp_path / 'srun_args.txt'
    (fake_bin / 'srun').write_text(f'#!/bin/sh\nprintf "%s\\n" "$@" > {record}\n')
    (fake_bin / 'srun').chmod(0o755)
    env = {'PATH': f'{fake_bin}{os.pathsep}{os.environ["PATH"]}', 'GPUS': '16',
           'GPUS_PER_NODE': '8', 'CPUS_PER_TASK': '4', 'SRUN_ARGS': '--qos=high --time=1:00:00'}
    run(['bash', osp.join(REPO, 'tools', 'slurm_train.sh'), 'gpu', 'tst', 'cfg.py',
         'work', '--amp', '--cfg-options', 'a=1'], tmp_path, env)
    args = record.read_text().splitlines()
    for expected in ('-p', 'gpu', '--job-name=tst', '--gres=gpu:8', '--ntasks=16',
                     '--ntasks-per-node=8', '--cpus-per-task=4', '--kill-on-bad-exit=1',
                     '--qos=high', '--time=1:00:00', 'cfg.py', '--work-dir=work',
                     '--launcher=slurm', '--amp', '--cfg-options', 'a=1'):
        assert expected in args, f'{expected!r} not passed to srun: {args}'
    assert args[args.index('-u') + 1].endswith('tools/train.py')

    run(['bash', osp.join(REPO, 'tools', 'slurm_test.sh'), 'gpu', 'tst', 'cfg.py',
         'ckpt.pth', '--out', 'r.pkl'], tmp_path, env)
    args = record.read_text().splitlines()
    assert args[args.index('-u') + 1].endswith('tools/test.py')
    assert args[-5:] == ['cfg.py', 'ckpt.pth', '--launcher=slurm', '--out', 'r.pkl']


@pytest.mark.parametrize('script', ['dist_train.sh', 'dist_test.sh', 'slurm_train.sh',
                                    'slurm_test.sh'])
def test_launch_scripts_pick_the_projects_python(tmp_path, script):
    """$PYTHON if set, else the repo's .venv (a `python` on PATH often lacks torch),
    else `python`."""
    repo, fake_bin, record = tmp_path / 'repo', tmp_path / 'bin', tmp_path / 'called.txt'
    (repo / 'tools').mkdir(parents=True)
    (repo / 'tools' / script).write_text(open(osp.join(REPO, 'tools', script)).read())

    def fake(path, body):
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(f'#!/bin/sh\n{body}\n')
        path.chmod(0o755)

    # Each python says which one it is; srun drops its options and runs the command.
    for name, path in [('path', fake_bin / 'python'), ('custom', tmp_path / 'python'),
                       ('venv', repo / '.venv' / 'bin' / 'python')]:
        fake(path, f'echo {name} > {record}')
    fake(fake_bin / 'srun', 'shift 2; while [ "${1#-}" != "$1" ]; do shift; done; '
         'exec "$@"')
    args = (['gpu', 'job', 'cfg.py', 'ckpt.pth'] if script.startswith('slurm')
            else ['cfg.py', 'ckpt.pth', '2'] if script == 'dist_test.sh' else ['cfg.py', '2'])

    def called(**env):
        run(['bash', str(repo / 'tools' / script), *args], tmp_path,
            {'PATH': f'{fake_bin}{os.pathsep}{os.environ["PATH"]}', 'PYTHON': '', **env})
        return record.read_text().strip()

    assert called() == 'venv'
    assert called(PYTHON=str(tmp_path / 'python')) == 'custom'
    (repo / '.venv' / 'bin' / 'python').unlink()
    assert called() == 'path'
