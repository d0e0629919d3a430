"""The demo behind `make demo`: the short version of the seeded study, on CPU.

Detection on the generated digits, one seed of tools/study/study.py (its configs, data
and runs, shared with it):

1. Write the digits COCO set (1000 training and 500 dev images, and 500 held-out
   images from another seed; kept if already there).
2. Through tools/train.py, train (each skipped once it finished with the same config
   and data): a teacher (RetinaNet, ResNet-18 at half width) on the 1000 images, and
   on the first 200 the narrow student alone, with plain distillation (KD) and with
   TST (KD + the learned augmenter). All students load the same images and start from
   the same weights.
3. Print their COCO mAP side by side (dev and held-out images), write the learned
   policy plot and a grid of the learned augmentations, and say in one line what the
   numbers show.
"""
import argparse
import os.path as osp
import statistics
import subprocess
import sys
import time

sys.path.insert(0, osp.join(osp.dirname(osp.abspath(__file__)), 'study'))
from report import load  # noqa: E402
from runs import ROOT  # noqa: E402
from study import run_task  # noqa: E402

ROWS = (('teacher', 'teacher (RetinaNet R18 1/2 width)'),
        ('student', 'student alone (R18 1/4 width)'),
        ('kd', 'plain KD student'),
        ('tst', 'TST student (KD + augmenter)'))
KEYS = ('coco/bbox_mAP', 'coco/bbox_mAP_50', 'coco/bbox_mAP_75')


def parse_args():
    parser = argparse.ArgumentParser(description='TST demo on generated digits')
    parser.add_argument('--work-dir', default=osp.join('work_dirs', 'study'),
                        help="where the runs go (default: work_dirs/study, the study's "
                        'own: the demo and the study reuse each other\'s runs)')
    parser.add_argument('--data-root', default=osp.join('data', 'study'),
                        help='where the generated sets go (default: data/study)')
    parser.add_argument('--seed', type=int, default=0, help='the seed (default: 0)')
    parser.add_argument('--num-images', type=int, nargs=3, default=[1000, 500, 2000],
                        metavar=('TRAIN', 'DEV', 'HELDOUT'),
                        help="images per set (default: 1000 500 2000, the study's)")
    parser.add_argument('--max-iters', type=int,
                        help="shorter runs (smoke tests); default: the configs' own")
    parser.add_argument('--cfg-options', nargs='+', default=[], metavar='KEY=VALUE',
                        help='config overrides for every run, as tools/train.py takes '
                        'them; a changed option trains again')
    return parser.parse_args()


def main() -> None:
    args = parse_args()
    start = time.time()
    study = argparse.Namespace(
        arms=[arm for arm, _ in ROWS[1:]], seeds=[args.seed], work_dir=args.work_dir,
        results=osp.join(args.work_dir, 'demo_records'), data_root=args.data_root,
        num_images=args.num_images, max_iters=args.max_iters, cfg_options=args.cfg_options)
    records = run_task('det', study, dict(done=0, total=3), prefix='[demo]')
    pictures = draw_augmentations(records[f'tst_seed{args.seed}'], args.work_dir)

    print(f'\n[demo] COCO bbox metrics, seed {args.seed} ({time.time() - start:.0f} s in '
          'all): mAP on the dev images (where the configs were chosen) and on the '
          'held-out images (never used for a choice)')
    print(f'{"model":34s} {"dev mAP":>8s} {"mAP":>7s} {"mAP_50":>7s} {"mAP_75":>7s}'
          f' {"wall":>6s}')
    for arm, name in ROWS:
        record = records[arm if arm == 'teacher' else f'{arm}_seed{args.seed}']
        held = ' '.join(f'{record["heldout"].get(key, float("nan")):7.3f}' for key in KEYS)
        print(f'{name:34s} {record["dev"][KEYS[0]]:8.3f} {held} '
              f'{record["seconds"]:5.0f}s')
    print(summary_line(records, args.seed))
    print(pictures)


def draw_augmentations(tst: dict, work_dir: str) -> str:
    """The learned augmenter's views of a few training images, as a PNG grid; returns
    the line that says where it and the policy plot are."""
    grid = osp.join(work_dir, 'augmentations.png')
    subprocess.run([sys.executable, osp.join(ROOT, 'tools', 'visualize_augmenter.py'),
                    osp.join(ROOT, tst['config']), '--checkpoint', tst['checkpoint'],
                    '--out', grid, '--cfg-options', *tst['options']], check=True,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    policy = osp.join(osp.dirname(tst['checkpoint']), 'policy.png')
    return f'[demo] the policy TST learned: {policy}; its augmentations: {grid}'


# The second study (docs/results.md): per task, the learned policy with a usable
# gradient that was chosen on the dev images of seeds 0-2, against its control (the same
# operations at their initial random policy through the same gates) on the seeds after.
SECOND_STUDY = osp.join(ROOT, 'docs', 'study', 'v2')
CONFIRMED = (('det', 'coco/bbox_mAP', 'mAP', 'tst_signal_unit'),
             ('seg', 'mIoU', 'mIoU', 'tst_signal_unit_divergence'))
RANDOM, FIRST_FRESH_SEED = 'kd_random_aug_st', 3
# The third round: the best fixed policy found by hand (chosen on the same dev seeds).
BEST_FIXED = ('det', 'coco/bbox_mAP', 'mAP', 'kd_geometric_st', 'the pixel operations off')
# The fourth round: the second study's recipe learning from that fixed policy's start.
LEARNED_FROM_BEST = 'tst_signal_unit_from_geometric'


def paired(runs: dict, arm: str, control: str, metric: str, min_seed: int = 0) -> list:
    """Held-out ``arm - control`` per seed (from ``min_seed`` on) that both ran."""
    seeds = sorted(s for s in set(runs.get(arm, {})) & set(runs.get(control, {}))
                   if s >= min_seed)
    return [runs[arm][s]['heldout'][metric] - runs[control][s]['heldout'][metric]
            for s in seeds]


def summary_line(records: dict, seed: int,
                 study: str = osp.join(ROOT, 'docs', 'study'),
                 second_study: str = SECOND_STUDY) -> str:
    """What one seed shows, next to what the committed studies measured."""
    def held(arm):
        return records[f'{arm}_seed{seed}']['heldout'][KEYS[0]]

    line = (f'[demo] seed {seed}, held-out mAP: KD {held("kd") - held("student"):+.3f} '
            f'over the student alone, TST {held("tst") - held("kd"):+.3f} over plain KD.')
    diffs = paired(load(study, 'det'), 'tst', 'kd_random_aug', KEYS[0])
    if len(diffs) > 1:
        line += (f' The {len(diffs)}-seed study (docs/results.md): TST '
                 f'{statistics.mean(diffs):+.3f} ± {statistics.stdev(diffs):.3f} over KD '
                 'with the same augmentations drawn at random.')
    second = {task: load(second_study, task) for task in ('det', 'seg')}
    confirmed = []
    for task, metric, name, learned in CONFIRMED:
        diffs = paired(second[task], learned, RANDOM, metric, FIRST_FRESH_SEED)
        if len(diffs) > 1:
            confirmed.append(f'{statistics.mean(diffs):+.3f} ± '
                             f'{statistics.stdev(diffs):.3f} {name} ({task}, '
                             f'{len(diffs)} seeds)')
    if confirmed:
        line += (' With a usable gradient (second study), the learned policy against the '
                 'same operations at random: ' + ', '.join(confirmed) + '.')
    task, metric, name, fixed, what = BEST_FIXED
    diffs = paired(second[task], fixed, RANDOM, metric, FIRST_FRESH_SEED)
    if len(diffs) > 1:
        line += (f' The best fixed policy found ({what}): {statistics.mean(diffs):+.3f} ± '
                 f'{statistics.stdev(diffs):.3f} {name} ({task}, {len(diffs)} seeds).')
    diffs = paired(second[task], LEARNED_FROM_BEST, RANDOM, metric, FIRST_FRESH_SEED)
    if len(diffs) > 1:
        ahead = sum(d > 0 for d in diffs)
        line += (f' The policy learned from that start: {statistics.mean(diffs):+.3f} ± '
                 f'{statistics.stdev(diffs):.3f} {name} ({task}, {ahead} of {len(diffs)} '
                 'seeds ahead).')
    return line


if __name__ == '__main__':
    main()
