"""`make demo`'s script, shortened: four runs, a metric table, the pictures, nothing
redone twice, and every run redone when the configs change."""
import os.path as osp
import sys

from tests.conftest import REPO, run

ROWS = ('teacher (RetinaNet R18', 'student alone', 'plain KD student', 'TST student')


def test_demo_trains_four_runs_and_reuses_them(tmp_path):
    cmd = [sys.executable, osp.join(REPO, 'tools', 'demo.py'), '--max-iters', '2',
           '--num-images', '16', '8', '8', '--work-dir', 'runs', '--data-root', 'data']
    first = run(cmd, tmp_path).stdout
    for name in ('teacher', 'student_seed0', 'kd_seed0', 'tst_seed0'):
        assert osp.isfile(tmp_path / 'runs' / 'det' / name / 'iter_2.pth')
    assert 'TST augment phase before iteration 1' in first
    table = first[first.index('[demo] COCO bbox metrics'):]
    for row in ROWS:
        assert row in table
    assert '[demo] seed 0, held-out mAP: KD' in table
    assert osp.isfile(tmp_path / 'runs' / 'augmentations.png')
    assert osp.isfile(tmp_path / 'runs' / 'det' / 'tst_seed0' / 'policy.png')

    second = run(cmd, tmp_path).stdout
    assert second.count('already trained') == 4
    assert 'evaluating' not in second  # metrics come from the cache
    assert second[second.index('[demo] COCO bbox metrics'):].splitlines()[1:] == \
        table.splitlines()[1:]

    # An edited config is another run: trained again, and so is everything distilled
    # from the retrained teacher.
    third = run([*cmd, '--cfg-options', 'default_hooks.logger.interval=2'], tmp_path).stdout
    assert third.count('already trained') == 0
    assert third.count('training again') == 4
