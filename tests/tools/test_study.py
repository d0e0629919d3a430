"""tools/study: both tasks, the teacher and the TST arm, shortened; a rerun redoes
nothing; the report tabulates what the records hold. (The other arms are options on the
TST config: test_distiller_e2e trains each.)"""
import argparse
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


def _study_module():
    sys.path.insert(0, osp.dirname(STUDY))
    try:
        import study
    finally:
        sys.path.remove(osp.dirname(STUDY))
    return study


def test_frozen_learned_policy_is_where_the_picks_ended():
    """kd_learned_st freezes, per task, the mean final policy of the second study's
    pick over dev seeds 0-2: the constants agree with those records (to their
    rounding), and the arm's options set every op's probability and magnitude."""
    study = _study_module()
    picks = dict(det='tst_signal_unit', seg='tst_signal_unit_divergence')
    for task, arm in picks.items():
        finals = []
        for seed in (0, 1, 2):
            with open(osp.join(REPO, 'docs', 'study', 'v2', task,
                               f'{arm}_seed{seed}.json')) as f:
                policy = json.load(f)['policy']
            finals.append(policy[max(policy, key=int)])
        for op, (magnitude, probability) in study.LEARNED_POLICY[task].items():
            for field, value in (('magnitude', magnitude), ('probability', probability)):
                key = f'policy/{op}.{field}'
                if value is None:
                    assert key not in finals[0]
                    continue
                mean = sum(final[key] for final in finals) / 3
                assert abs(mean - value) <= 0.005 + 1e-9, (task, key, mean, value)
        options = study.ARMS['kd_learned_st'][2](task)
        assert 'train_cfg.augment_iters=[]' in options
        assert sum('.probability=' in o for o in options) == 14
        assert sum('.magnitude=' in o for o in options) == 11


def test_report_compares_fixed_policies_with_the_random_one(tmp_path):
    metric = 'mIoU'
    (tmp_path / 'seg').mkdir()
    table = {'kd_random_aug_st': (30.0, 34.0, 32.0), 'kd_geometric_st': (33.0, 36.0, 34.5),
             'kd_pixel_st': (25.0, 30.0, 26.0)}
    for arm, values in table.items():
        for seed, value in enumerate(values):
            with open(tmp_path / 'seg' / f'{arm}_seed{seed}.json', 'w') as f:
                json.dump(dict(arm=arm, seed=seed, seconds=10, augment_seconds=0,
                               dev={metric: value}, heldout={metric: value + 1}), f)
    report = run([sys.executable, REPORT, '--results', '.'], tmp_path).stdout
    _, fixed = report.split('Fixed policies of the same family')
    dev, held_out = fixed.split('Per-seed differences on the held-out images')
    assert '| kd_geometric_st − kd_random_aug_st | 3 | +3.000, +2.000, +2.500 | ' \
        '+2.500 ± 0.500 |' in dev
    assert '| kd_pixel_st − kd_random_aug_st | 3 | -5.000, -4.000, -6.000 | ' \
        '-5.000 ± 1.000 |' in held_out
    assert 'Does the policy matter more than the seed (dev, 3 arms' in dev


def test_report_confirms_variants_on_fresh_seeds_and_against_their_start(tmp_path):
    """Variants are confirmed on the held-out images of the seeds no choice was made
    on (3 and up); a policy learned from a fixed policy's start is also compared
    with that start, frozen."""
    metric = 'coco/bbox_mAP'
    (tmp_path / 'det').mkdir()
    table = {'kd_random_aug_st': 0.10, 'kd_geometric_st': 0.11,
             'tst_signal_unit_from_geometric': 0.13}
    for arm, value in table.items():
        for seed in range(5):
            with open(tmp_path / 'det' / f'{arm}_seed{seed}.json', 'w') as f:
                json.dump(dict(arm=arm, seed=seed, seconds=10, augment_seconds=0,
                               dev={metric: value + seed / 100},
                               heldout={metric: value + seed / 100 + (seed > 2) / 100
                                        * (arm == 'tst_signal_unit_from_geometric')}),
                          f)
    report = run([sys.executable, REPORT, '--results', '.'], tmp_path).stdout
    dev, confirmation = report.split('Confirmation: the variants on fresh seeds')
    assert '| tst_signal_unit_from_geometric − kd_geometric_st | 5 | +0.020, +0.020, ' \
        '+0.020, +0.020, +0.020 | +0.020 ± 0.000 |' in dev
    assert '| tst_signal_unit_from_geometric − kd_random_aug_st | 2 | +0.040, +0.040 | ' \
        '+0.040 ± 0.000 |' in confirmation
    assert '| tst_signal_unit_from_geometric − kd_geometric_st | 2 | +0.030, +0.030 | ' \
        '+0.030 ± 0.000 |' in confirmation


def test_policy_arms_build_the_policy_their_options_name():
    """Every arm that sets the policy's starting values (the fixed policies and the
    runs that learn from one), on both tasks' TST configs, builds an augmenter whose
    probabilities and magnitudes are those values: an op name or field the augmenter
    does not know would make a silently different arm."""
    from mmengine.config import Config, DictAction
    from mmengine.registry import MODELS

    study = _study_module()  # imports tst_mm, which registers the augmenters
    parser = argparse.ArgumentParser()  # as tools/train.py reads --cfg-options
    parser.add_argument('--cfg-options', nargs='+', action=DictAction)
    for task, spec in study.TASKS.items():
        config = Config.fromfile(osp.join(REPO, spec['tst']))
        for arm in (*study.FIXED_POLICIES, *study.LEARNED_FROM_FIXED):
            options = study.ARMS[arm][2]
            options = options(task) if callable(options) else options
            cfg = config.copy()
            cfg.merge_from_dict(parser.parse_args(['--cfg-options', *options]).cfg_options)
            policy = MODELS.build(cfg.model.augmenter).policy()
            named = [o.split('=', 1) for o in options if '.op_cfgs.' in o]
            assert named, arm
            for key, value in named:
                op, field = key.split('.')[-2:]
                assert abs(policy[op][field] - float(value)) < 1e-6, (task, arm, key)
