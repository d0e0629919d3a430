"""Tables (and the learned-policy plot) of the study from its per-run records.

    python tools/study/report.py [--results docs/study]

Reads ``RESULTS/<task>/*.json`` (written by tools/study/study.py), prints per task a
markdown table (mean +- std over seeds on the dev and held-out images, wall clock,
time in augment phases) and the per-seed differences that matter (TST - KD with the
frozen random policy, TST - plain KD), and writes ``RESULTS/tables.md`` and
``RESULTS/policy_<task>.png`` (the TST runs' policy over training, mean over seeds).
"""
import argparse
import glob
import json
import os.path as osp
import statistics
import sys
from collections import defaultdict
from typing import Callable, Dict, List

sys.path.insert(0, osp.dirname(osp.abspath(__file__)))
from study import (ARMS, FIXED_POLICIES, LEARNED_FROM_FIXED, TASKS,  # noqa: E402
                   TST_VARIANTS)

CONTRASTS = (('tst', 'kd_random_aug'), ('tst', 'kd'), ('kd', 'student'),
             ('kd_random_aug', 'kd'), ('random_aug', 'student'),
             # automatic distillation against the written losses and the student alone
             ('kd_auto', 'kd'), ('kd_auto', 'student'), ('kd_auto_fcos', 'student'),
             ('kd_auto_r1', 'kd'), ('kd_scaled', 'kd'), ('kd_pkd', 'kd'))
# Variants are chosen on the dev images of these seeds; the others are fresh.
DEV_SEEDS = (0, 1, 2)


def mean_std(values: List[float]) -> str:
    if not values:
        return '-'
    if len(values) == 1:
        return f'{values[0]:.3f}'
    return f'{statistics.mean(values):.3f} ± {statistics.stdev(values):.3f}'


def cpu(runs) -> str:
    """Mean CPU seconds of the runs that recorded them ('-' if none did)."""
    values = [r['cpu_seconds'] for r in runs if r.get('cpu_seconds') is not None]
    return f'{statistics.mean(values):.0f}' if values else '-'


def load(results: str, task: str) -> Dict[str, Dict[int, dict]]:
    runs: Dict[str, Dict[int, dict]] = defaultdict(dict)
    for path in sorted(glob.glob(osp.join(results, task, '*.json'))):
        with open(path) as f:
            run = json.load(f)
        runs[run['arm']][run.get('seed', 0)] = run
    return runs


def task_table(task: str, runs: Dict[str, Dict[int, dict]]) -> List[str]:
    metric = TASKS[task]['metric']
    lines = [f'### {task}: {metric}', '',
             '| arm | seeds | dev | held-out | wall clock (s, median) | CPU (s) | '
             'in augment phases (s) | command |', '|' + ' --- |' * 8]
    for name in sorted(arm for arm in runs if arm.startswith('teacher')):
        teacher = runs[name][0]
        lines.append(f'| {name} | - | {teacher["dev"][metric]:.3f} | '
                     f'{teacher["heldout"][metric]:.3f} | {teacher["seconds"]:.0f} | '
                     f'{cpu([teacher])} | - | '
                     f'`python tools/study/study.py --tasks {task}` (trained first) |')
    lines += arm_rows(task, runs, [arm for arm in ARMS if arm not in TST_VARIANTS
                                   and arm not in FIXED_POLICIES])
    if any(arm in runs for arm in TST_VARIANTS):
        lines += ['', 'TST variants tried after the study above (chosen on dev; '
                  'held-out shown for completeness, no choice was made on it):', '',
                  lines[2], lines[3]]
        lines += arm_rows(task, runs, ['kd_random_aug', 'tst', *TST_VARIANTS])
    lines += ['', 'Per-seed differences on the held-out images (same seed, same images, '
              'same initial student):', '',
              '| difference | seeds | per seed | mean ± std |', '| --- | --- | --- | --- |']
    lines += differences(runs, metric, CONTRASTS, 'heldout')
    variants = [(arm, 'kd_random_aug') for arm in TST_VARIANTS if arm in runs]
    # Arms with straight-through gates are also compared with their own control, the
    # frozen random policy through the same gates.
    variants += [(arm, 'kd_random_aug_st') for arm in TST_VARIANTS
                 if arm.startswith('tst') and _straight_through(arm) and arm in runs
                 and 'kd_random_aug_st' in runs]
    # A policy learned from a fixed start is also compared with that start, frozen.
    variants += [(arm, start) for arm, (_, start) in LEARNED_FROM_FIXED.items()
                 if arm in runs and start in runs]
    if variants:
        lines += ['', 'The variants, per-seed differences on the dev images:', '',
                  '| difference | seeds | per seed | mean ± std |',
                  '| --- | --- | --- | --- |']
        lines += differences(runs, metric, [('tst', 'kd_random_aug'), *variants], 'dev')
        lines += arm_effect(runs, metric, ['kd_random_aug', 'tst', *TST_VARIANTS], 'dev')
        confirmed = differences(runs, metric, variants, 'heldout',
                                lambda seed: seed not in DEV_SEEDS)
        if confirmed:
            lines += ['', 'Confirmation: the variants on fresh seeds (not '
                      f'{", ".join(map(str, DEV_SEEDS))}, on which the choices were '
                      'made), per-seed differences on the held-out images:', '',
                      '| difference | seeds | per seed | mean ± std |',
                      '| --- | --- | --- | --- |', *confirmed]
    lines += fixed_policies(task, runs, metric, lines[2:4])
    lines += policy_table(runs, ['tst', *TST_VARIANTS])
    gaps = [abs(r['dev'][metric] - r['heldout'][metric])
            for arm in runs.values() for r in arm.values()]
    if gaps:
        lines += ['', f'Dev vs held-out, same checkpoint: mean |difference| '
                  f'{statistics.mean(gaps):.3f} (max {max(gaps):.3f}) over {len(gaps)} '
                  'runs: the sampling noise of one evaluation set.']
    return lines + ['']


def fixed_policies(task: str, runs: Dict[str, Dict[int, dict]], metric: str,
                   header: List[str]) -> List[str]:
    """Is there room for a policy? KD with fixed points of the family against the
    random one (kd_random_aug_st), per seed on dev and held-out, and whether the
    fixed policy matters more than the seed."""
    arms = [arm for arm in FIXED_POLICIES if arm in runs]
    if not arms:
        return []
    control = 'kd_random_aug_st'
    lines = ['', 'Fixed policies of the same family, frozen from the start (is there '
             'room for a policy?):', '', *header]
    lines += arm_rows(task, runs, [control, *arms])
    pairs = [(arm, control) for arm in arms]
    for split, name in (('dev', 'dev'), ('heldout', 'held-out')):
        lines += ['', f'Per-seed differences on the {name} images:', '',
                  '| difference | seeds | per seed | mean ± std |',
                  '| --- | --- | --- | --- |']
        lines += differences(runs, metric, pairs, split)
        lines += arm_effect(runs, metric, [control, *arms], split)
    return lines


def _straight_through(arm: str) -> bool:
    options = ARMS[arm][2]
    return not callable(options) and \
        'model.augmenter.gate_estimator=straight_through' in options


def final_policy_summary(run: dict) -> str:
    """Where a run's policy ended: values still near the initial 0.5, values at an
    end of (0, 1), and the Invert probability (the corner seen at lr 0.1)."""
    policy = run.get('policy') or {}
    if not policy:
        return '-'
    last = policy[max(policy, key=int)]
    values = [v for v in last.values() if isinstance(v, float)]
    near = sum(abs(v - 0.5) <= 0.08 for v in values)
    ends = sum(v < 0.05 or v > 0.95 for v in values)
    invert = last.get('policy/Invert.probability')
    return (f'{near} / {ends} of {len(values)}' +
            (f', Invert {invert:.2f}' if invert is not None else ''))


def policy_table(runs: Dict[str, Dict[int, dict]], arms: List[str]) -> List[str]:
    arms = [arm for arm in arms if arm in runs]
    seeds = sorted({seed for arm in arms for seed in runs[arm]})
    if not arms:
        return []
    lines = ['', 'Where each learned policy ended (values within 0.5 ± 0.08, the initial '
             'value / values below 0.05 or above 0.95, of the logged probabilities and '
             'magnitudes; the Invert probability):', '',
             '| arm | ' + ' | '.join(f'seed {s}' for s in seeds) + ' |',
             '| --- |' + ' --- |' * len(seeds)]
    for arm in arms:
        cells = [final_policy_summary(runs[arm][s]) if s in runs[arm] else '-'
                 for s in seeds]
        lines.append(f'| {arm} | ' + ' | '.join(cells) + ' |')
    return lines


def differences(runs: Dict[str, Dict[int, dict]], metric: str, pairs, split: str,
                keep: Callable[[int], bool] = lambda seed: True) -> List[str]:
    """Table rows of ``a - b`` per seed on ``split``, for the seeds both arms ran
    (those ``keep`` accepts)."""
    lines = []
    for a, b in pairs:
        seeds = sorted(s for s in set(runs.get(a, {})) & set(runs.get(b, {})) if keep(s))
        if not seeds:
            continue
        diffs = [runs[a][s][split][metric] - runs[b][s][split][metric] for s in seeds]
        per_seed = ', '.join(f'{d:+.3f}' for d in diffs)
        spread = (f'{statistics.mean(diffs):+.3f} ± {statistics.stdev(diffs):.3f}'
                  if len(diffs) > 1 else f'{diffs[0]:+.3f}')
        lines.append(f'| {a} − {b} | {len(seeds)} | {per_seed} | {spread} |')
    return lines


def arm_effect(runs: Dict[str, Dict[int, dict]], metric: str, arms: List[str],
               split: str) -> List[str]:
    """Does the policy matter more than the seed? A two-way analysis of variance of the
    arms x seeds table (the seeds most arms ran, the arms that ran all of them): the
    arms' mean square against the residual's (arm x seed) one, and the std of a paired
    difference that the residual implies."""
    from scipy.stats import f as f_distribution
    arms = [arm for arm in arms if arm in runs]
    counts = defaultdict(int)
    for arm in arms:
        for seed in runs[arm]:
            counts[seed] += 1
    ranked = sorted(counts, key=lambda seed: (-counts[seed], seed))
    # The most residual degrees of freedom among "the k seeds most arms ran".
    best = (0, None, None)
    for size in range(2, len(ranked) + 1):
        seeds = ranked[:size]
        table = [[runs[arm][s][split][metric] for s in seeds] for arm in arms
                 if all(s in runs[arm] for s in seeds)]
        if len(table) >= 3 and (len(table) - 1) * (size - 1) > best[0]:
            best = ((len(table) - 1) * (size - 1), seeds, table)
    _, seeds, table = best
    if table is None:
        return []
    n_arms, n_seeds = len(table), len(seeds)
    grand = statistics.mean(v for row in table for v in row)
    arm_means = [statistics.mean(row) for row in table]
    seed_means = [statistics.mean(row[j] for row in table) for j in range(n_seeds)]
    ms_arm = n_seeds * sum((m - grand)**2 for m in arm_means) / (n_arms - 1)
    df_residual = (n_arms - 1) * (n_seeds - 1)
    ms_residual = sum((table[i][j] - arm_means[i] - seed_means[j] + grand)**2
                      for i in range(n_arms) for j in range(n_seeds)) / df_residual
    if ms_residual == 0:  # every arm a constant shift of every other: nothing to test
        return []
    ratio = ms_arm / ms_residual
    p = f_distribution.sf(ratio, n_arms - 1, df_residual)
    paired_std = (2 * ms_residual)**0.5
    return ['', f'Does the policy matter more than the seed ({split}, {n_arms} arms x '
            f'seeds {" ".join(map(str, sorted(seeds)))}, two-way analysis of variance): '
            f'the arms\' mean square is {ratio:.2f}x the residual\'s (F({n_arms - 1}, '
            f'{df_residual}), p = {p:.2f}); the residual implies a paired-difference std '
            f'of {paired_std:.3f}, so "2 std ahead" means {2 * paired_std:+.3f}.']


def arm_rows(task: str, runs: Dict[str, Dict[int, dict]], arms: List[str]) -> List[str]:
    metric = TASKS[task]['metric']
    lines = []
    for arm in arms:
        what = ARMS[arm][0]
        seeds = runs.get(arm, {})
        if not seeds:
            continue
        dev = [r['dev'][metric] for r in seeds.values()]
        held = [r['heldout'][metric] for r in seeds.values()]
        wall = statistics.median(r['seconds'] for r in seeds.values())
        phases = statistics.mean(r['augment_seconds'] for r in seeds.values())
        seed_list = ' '.join(str(s) for s in sorted(seeds))
        lines.append(f'| {arm}: {what} | {seed_list} | {mean_std(dev)} | {mean_std(held)} '
                     f'| {wall:.0f} | {cpu(seeds.values())} | {phases:.0f} | '
                     '`python tools/study/study.py --tasks '
                     f'{task} --arms {arm} --seeds {seed_list}` |')
    return lines


def policy_plot(task: str, runs: Dict[str, Dict[int, dict]], path: str) -> bool:
    """The TST runs' policy at each logged step, averaged over seeds."""
    from tst_mm.engine.hooks.policy_hook import plot_policy
    tst = [r['policy'] for r in runs.get('tst', {}).values() if r.get('policy')]
    if not tst:
        return False
    steps = sorted(set.intersection(*(set(p) for p in tst)), key=int)
    history, magnitude_ops = [], set()
    for step in steps:
        policy: Dict[str, Dict[str, float]] = defaultdict(dict)
        for key in tst[0][step]:
            op, field = key[len('policy/'):].rsplit('.', 1)
            policy[op][field] = statistics.mean(p[step][key] for p in tst)
            if field == 'magnitude':
                magnitude_ops.add(op)
        history.append(dict(step=int(step), policy=dict(policy)))
    plot_policy(history, sorted(magnitude_ops), path)
    return True


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--results', default='docs/study')
    args = parser.parse_args()
    lines = []
    for task in TASKS:
        runs = load(args.results, task)
        if not runs:
            continue
        lines += task_table(task, runs)
        plot = osp.join(args.results, f'policy_{task}.png')
        if policy_plot(task, runs, plot):
            lines += [f'![the policy TST learned, {task}](policy_{task}.png)', '']
    text = '\n'.join(lines)
    print(text)
    with open(osp.join(args.results, 'tables.md'), 'w') as f:
        f.write('<!-- written by tools/study/report.py from the JSON records here -->\n\n'
                + text)


if __name__ == '__main__':
    main()
