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


def test_report_lists_tst_variants_apart_with_their_dev_differences(tmp_path):
    """Variants tried after the study get their own table and dev differences; the
    five arms' table and held-out differences are unchanged by them."""
    metric = 'coco/bbox_mAP'
    (tmp_path / 'det').mkdir()
    for arm, value in (('kd_random_aug', 0.10), ('tst', 0.11), ('tst_lr0.1', 0.13)):
        for seed in (0, 1):
            record = dict(arm=arm, seed=seed, seconds=10, augment_seconds=1,
                          dev={metric: value + seed / 100},
                          heldout={metric: value + seed / 50})
            if arm.startswith('tst'):  # the policy hook's log: step -> values
                end = {'policy/Invert.probability': 0.99 if arm == 'tst_lr0.1' else 0.5,
                       'policy/Rotate.magnitude': 0.02, 'policy/Rotate.probability': 0.45}
                record['policy'] = {'0': {k: 0.5 for k in end}, '10': end}
            with open(tmp_path / 'det' / f'{arm}_seed{seed}.json', 'w') as f:
                json.dump(record, f)
    report = run([sys.executable, REPORT, '--results', '.'], tmp_path).stdout
    main, variants = report.split('TST variants tried after the study')
    assert '| tst_lr0.1' not in main and '| tst_lr0.1: TST, augmenter lr 0.1' in variants
    held_out, dev = variants.split('The variants, per-seed differences on the dev images')
    assert '| tst − kd_random_aug | 2 | +0.010, +0.010 | +0.010 ± 0.000 |' in held_out
    assert '| tst_lr0.1 − kd_random_aug | 2 | +0.030, +0.030 | +0.030 ± 0.000 |' in dev
    assert '| tst_lr0.1 | 1 / 2 of 3, Invert 0.99 | 1 / 2 of 3, Invert 0.99 |' in dev
    assert '| tst | 2 / 1 of 3, Invert 0.50 |' in dev


def test_report_tests_whether_the_policy_matters_more_than_the_seed(tmp_path):
    """A two-way analysis of variance of arms x seeds, worked by hand: arm means 0.11,
    0.13, 0.13 (mean square 2.67e-4), residuals 0, 0, -+0.01, +-0.01 (mean square 2e-4
    on 2 degrees of freedom): F(2, 2) = 1.33, p = 1 / (1 + F) = 0.43."""
    metric = 'coco/bbox_mAP'
    (tmp_path / 'det').mkdir()
    table = {'kd_random_aug': (0.10, 0.12), 'tst': (0.11, 0.15), 'tst_lr0.1': (0.13, 0.13)}
    for arm, values in table.items():
        for seed, value in enumerate(values):
            with open(tmp_path / 'det' / f'{arm}_seed{seed}.json', 'w') as f:
                json.dump(dict(arm=arm, seed=seed, seconds=10, augment_seconds=1,
                               dev={metric: value}, heldout={metric: value}), f)
    report = run([sys.executable, REPORT, '--results', '.'], tmp_path).stdout
    assert ('(dev, 3 arms x seeds 0 1, two-way analysis of variance): the arms\' mean '
            'square is 1.33x the residual\'s (F(2, 2), p = 0.43); the residual implies a '
            'paired-difference std of 0.020, so "2 std ahead" means +0.040.') in report
