"""tools/study: both tasks, the teacher and the TST arm, shortened; a rerun redoes
nothing; the report tabulates what the records hold. (The other arms are options on the
TST config: test_distiller_e2e trains each.)"""
import glob
import json
import os.path as osp
import sys

from tests.conftest import REPO, run

STUDY = osp.join(REPO, 'tools', 'study', 'study.py')
REPORT = osp.join(REPO, 'tools', 'study', 'report.py')


def test_study_runs_resumes_and_reports(tmp_path):
    cmd = [sys.executable, STUDY, '--arms', 'tst', '--seeds', '0',
           '--max-iters', '2', '--num-images', '16', '8', '8',
           '--work-dir', 'runs', '--results', 'results', '--data-root', 'data']
    first = run(cmd, tmp_path).stdout
    assert first.count('training') == 4  # the teacher and TST, per task
    assert 'TST augment phase before iteration 1' in first
    records = {osp.relpath(p, tmp_path / 'results'): json.load(open(p))
               for p in glob.glob(str(tmp_path / 'results' / '*' / '*.json'))}
    assert sorted(records) == [f'{task}/{name}.json' for task in ('det', 'seg')
                               for name in ('teacher', 'tst_seed0')]
    for record in records.values():
        for split in ('dev', 'heldout'):
            assert record['metric'] in record[split]
    tst = records['det/tst_seed0.json']
    assert tst['policy'] and tst['augment_seconds'] > 0
    assert tst['command'].startswith('python tools/train.py configs/study/tst_retinanet')

    second = run(cmd, tmp_path).stdout
    assert second.count('already trained') == 4 and 'evaluating' not in second

    report = run([sys.executable, REPORT, '--results', 'results'], tmp_path).stdout
    assert '### det: coco/bbox_mAP' in report and '### seg: mIoU' in report
    assert '| tst − kd ' not in report  # a difference needs both arms
    assert osp.isfile(tmp_path / 'results' / 'tables.md')
    assert osp.isfile(tmp_path / 'results' / 'policy_det.png')
