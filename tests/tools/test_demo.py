"""`make demo`'s script, shortened: three runs, a metric table, nothing redone twice."""
import os.path as osp
import sys

from tests.conftest import REPO, run


def test_demo_trains_three_runs_and_reuses_them(tmp_path, coco_digits):
    cmd = [sys.executable, osp.join(REPO, 'tools', 'demo.py'), '--max-iters', '2',
           '--work-dir', str(tmp_path / 'runs'), '--data-root', coco_digits]
    first = run(cmd, tmp_path).stdout
    for name in ('teacher', 'student', 'tst'):
        assert osp.isfile(tmp_path / 'runs' / name / 'iter_2.pth')
    assert 'TST augment phase before iteration 1' in first
    table = first[first.index('[demo] COCO bbox metrics'):]
    for row in ('teacher (RetinaNet R18)', 'student alone', 'TST student'):
        assert row in table

    second = run(cmd, tmp_path).stdout
    assert second.count('already trained') == 3
    assert 'evaluating' not in second  # metrics come from the cache
    assert second[second.index('[demo] COCO bbox metrics'):].splitlines()[1:] == \
        table.splitlines()[1:]
