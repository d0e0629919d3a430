"""`make demo`'s script, shortened: four runs, a metric table, nothing redone twice,
and a run redone when its config changes."""
import os.path as osp
import sys

from tests.conftest import REPO, run

ROWS = ('teacher (RetinaNet R18', 'student alone', 'plain KD student', 'TST student')


def test_demo_trains_four_runs_and_reuses_them(tmp_path, coco_digits):
    cmd = [sys.executable, osp.join(REPO, 'tools', 'demo.py'), '--max-iters', '2',
           '--work-dir', str(tmp_path / 'runs'), '--data-root', coco_digits]
    first = run(cmd, tmp_path).stdout
    for name in ('teacher', 'student', 'kd', 'tst'):
        assert osp.isfile(tmp_path / 'runs' / name / 'iter_2.pth')
    assert 'TST augment phase before iteration 1' in first
    table = first[first.index('[demo] COCO bbox metrics'):]
    for row in ROWS:
        assert row in table
    assert '[demo] one seed: KD' in table

    second = run(cmd, tmp_path).stdout
    assert second.count('already trained') == 4
    assert 'evaluating' not in second  # metrics come from the cache
    assert second[second.index('[demo] COCO bbox metrics'):].splitlines()[1:] == \
        table.splitlines()[1:]

    # Another config (here: another seed) is another run: trained again, and so is
    # everything distilled from a retrained teacher.
    third = run([*cmd, '--cfg-options', 'randomness.seed=1'], tmp_path).stdout
    assert third.count('already trained') == 0
    assert third.count('training again') == 4
