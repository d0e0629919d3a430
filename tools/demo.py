"""The demo behind `make demo`: TST on a small generated detection task, on CPU.

1. Write the digits COCO set to data/demo/coco (1000 train / 200 val images; kept if
   already there with the same parameters).
2. Through tools/train.py, train (each skipped once it finished with the same config
   and data): a teacher (RetinaNet, ResNet-18 at half width), the narrow student alone,
   the narrow student with plain distillation (KD) and with TST (KD + the learned
   augmenter). All students see the same loaded images.
3. Evaluate the four on the validation images (cached) and print their COCO mAP.
"""
import argparse
import hashlib
import json
import os
import os.path as osp
import subprocess
import sys
import time
from collections import deque

from mmengine.config import Config, DictAction
from mmengine.runner import Runner

import tst_mm  # noqa: F401
from tst_mm.datasets import make_coco_digits

ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))
TEACHER_CFG = 'configs/demo/retinanet_r18_digits.py'
STUDENT_CFG = 'configs/demo/retinanet_r18-narrow_digits.py'
KD_CFG = 'configs/demo/kd_retinanet_r18_r18-narrow_digits.py'
TST_CFG = 'configs/demo/tst_retinanet_r18_r18-narrow_digits.py'
DATA = dict(num_train=1000, num_val=200)  # 200 val images: mAP stable to about 0.01
KEYS = ('coco/bbox_mAP', 'coco/bbox_mAP_50', 'coco/bbox_mAP_75')
PROGRESS = ('Iter(train)', 'TST augment phase', 'Error', 'error:')


def parse_args():
    parser = argparse.ArgumentParser(description='TST demo on generated digits')
    parser.add_argument('--work-dir', default=osp.join('work_dirs', 'demo'),
                        help='where the three runs go (default: work_dirs/demo)')
    parser.add_argument('--data-root',
                        help='a COCO-format set to use as it is (default: the digits '
                        'set in data/demo/coco, written there if missing or different)')
    parser.add_argument('--max-iters', type=int,
                        help="shorter runs (smoke tests); default: the configs' own")
    parser.add_argument('--cfg-options', nargs='+', default=[], metavar='KEY=VALUE',
                        help='config overrides for every run, as tools/train.py takes '
                        'them (e.g. randomness.seed=1); a changed option trains again')
    return parser.parse_args()


def data_options(data_root: str, max_iters) -> list:
    """--cfg-options that point a demo config at ``data_root`` (and shorten it)."""
    root = data_root.rstrip('/') + '/'
    options = [f'{loader}.dataset.data_root={root}'
               for loader in ('train_dataloader', 'val_dataloader', 'test_dataloader')]
    options += [f'{evaluator}.ann_file={root}annotations/instances_val.json'
                for evaluator in ('val_evaluator', 'test_evaluator')]
    if max_iters:
        options += [f'train_cfg.max_iters={max_iters}', f'train_cfg.val_interval={max_iters}']
    return options


def parse_options(options: list) -> dict:
    """``KEY=VALUE`` strings as tools/train.py's --cfg-options reads them."""
    return {key: DictAction._parse_iterable(value)
            for key, value in (option.split('=', 1) for option in options)}


def final_checkpoint(config: str, work_dir: str, max_iters=None) -> str:
    max_iters = max_iters or Config.fromfile(config).train_cfg.max_iters
    return osp.join(work_dir, f'iter_{max_iters}.pth')


def fingerprint(config: str, options: list, data_root: str, depends: tuple = ()) -> str:
    """What a run depends on: its resolved config (bases included), the command-line
    options, the data set's parameters and the files it loads (the teacher). An
    edited config, other data or a retrained teacher trains again."""
    cfg = Config.fromfile(config)
    cfg.merge_from_dict(parse_options(options))
    marker = osp.join(data_root, 'tst_mm_digits.json')
    data = open(marker).read() if osp.isfile(marker) else data_root
    files = ''.join(f'{path}:{os.stat(path).st_mtime}' for path in depends)
    return hashlib.sha1((cfg.pretty_text + data + files).encode()).hexdigest()


def train(name: str, config: str, work_dir: str, options: list, data_root: str,
          max_iters=None, depends: tuple = ()) -> str:
    """Train through tools/train.py unless already done; returns the final checkpoint."""
    ckpt = final_checkpoint(config, work_dir, max_iters)
    stamp = osp.join(work_dir, 'demo_run.json')
    key = fingerprint(config, options, data_root, depends)
    if osp.isfile(ckpt) and osp.isfile(stamp):
        with open(stamp) as f:
            if json.load(f).get('fingerprint') == key:
                print(f'[demo] {name}: already trained ({ckpt})')
                return ckpt
        print(f'[demo] {name}: its config or data changed since {ckpt}; training again')
    print(f'[demo] {name}: training {config}', flush=True)
    cmd = [sys.executable, osp.join(ROOT, 'tools', 'train.py'), config,
           '--work-dir', work_dir, '--cfg-options', *options]
    tail = deque(maxlen=60)
    start = time.time()
    # Unbuffered: progress lines as they happen, not in blocks through the pipe.
    env = dict(os.environ, PYTHONUNBUFFERED='1')
    with subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                          text=True, env=env) as proc:
        for line in proc.stdout:
            tail.append(line)
            if any(key in line for key in PROGRESS):
                print(f'    {line.rstrip()[:160]}', flush=True)
    if proc.returncode != 0 or not osp.isfile(ckpt):
        sys.exit(f'[demo] {name}: training failed:\n{"".join(tail)}')
    with open(stamp, 'w') as f:
        json.dump(dict(fingerprint=key, seconds=round(time.time() - start)), f)
    print(f'[demo] {name}: done in {time.time() - start:.0f} s')
    return ckpt


def evaluate(name: str, config: str, ckpt: str, work_dir: str, options: list) -> dict:
    """COCO metrics of a checkpoint on the validation set, cached next to it."""
    cache = osp.join(work_dir, 'demo_metrics.json')
    trained = os.stat(ckpt).st_mtime  # a retrained run has a newer checkpoint
    if osp.isfile(cache):
        with open(cache) as f:
            cached = json.load(f)
        if cached.get('checkpoint') == ckpt and cached.get('mtime') == trained:
            return cached['metrics']
    print(f'[demo] {name}: evaluating {ckpt}', flush=True)
    cfg = Config.fromfile(config)
    cfg.merge_from_dict(parse_options(options))
    cfg.work_dir = osp.join(work_dir, 'eval')
    cfg.load_from = ckpt
    cfg.log_level = 'WARNING'  # the table below is the output; keep the console calm
    cfg.test_dataloader.num_workers = 0
    cfg.test_dataloader.persistent_workers = False
    metrics = Runner.from_cfg(cfg).test()
    metrics = {k: float(v) for k, v in metrics.items()}
    with open(cache, 'w') as f:
        json.dump(dict(checkpoint=ckpt, mtime=trained, metrics=metrics), f)
    return metrics


def main() -> None:
    args = parse_args()
    os.chdir(ROOT)
    start = time.time()
    data = args.data_root or osp.join('data', 'demo', 'coco')
    if args.data_root:
        print(f'[demo] data: using the COCO-format set in {data}')
    else:  # written once; a no-op when the set is there with the same parameters
        make_coco_digits(data, **DATA)
        print(f'[demo] data: {data} ({DATA["num_train"]} train / {DATA["num_val"]} val '
              'images, 10 digit classes)')
    options = data_options(data, args.max_iters) + args.cfg_options
    teacher_dir = osp.join(args.work_dir, 'teacher')
    teacher_ckpt = train('teacher', TEACHER_CFG, teacher_dir, options, data,
                         args.max_iters)
    kd_options = [*options, f'model.teacher_ckpt={teacher_ckpt}']
    tst_options = list(kd_options)
    if args.max_iters:  # the augment phases must fall inside the shortened run
        tst_options += ['train_cfg.augment_iters=[0]', 'train_cfg.augment_steps=1']
    runs = [
        ('teacher (RetinaNet R18 1/2 width)', TEACHER_CFG, teacher_dir, options),
        ('student alone (R18 1/4 width)', STUDENT_CFG,
         osp.join(args.work_dir, 'student'), options),
        ('plain KD student', KD_CFG, osp.join(args.work_dir, 'kd'), kd_options),
        ('TST student (KD + augmenter)', TST_CFG, osp.join(args.work_dir, 'tst'),
         tst_options),
    ]
    rows = []
    for name, config, work_dir, run_options in runs:
        ckpt = teacher_ckpt if config == TEACHER_CFG else train(
            name, config, work_dir, run_options, data, args.max_iters, (teacher_ckpt, ))
        rows.append((name, evaluate(name, config, ckpt, work_dir, run_options)))
    print(f'\n[demo] COCO bbox metrics on the validation images '
          f'({time.time() - start:.0f} s in all)')
    print(f'{"model":34s} {"mAP":>7s} {"mAP_50":>7s} {"mAP_75":>7s}')
    for name, m in rows:
        # An untrained model may give no boxes at all: CocoMetric then returns nothing.
        print(f'{name:34s} ' + ' '.join(f'{m.get(key, float("nan")):7.3f}' for key in KEYS))
    print(summary_line(dict(rows)))


def summary_line(metrics: dict) -> str:
    """One sentence on what this single run shows, and what it does not."""
    def m_ap(prefix):
        name = next(n for n in metrics if n.startswith(prefix))
        return metrics[name].get(KEYS[0], float('nan'))

    alone, kd, tst = m_ap('student alone'), m_ap('plain KD'), m_ap('TST')
    return (f'[demo] one seed: KD {kd - alone:+.3f} mAP over the student alone, TST '
            f'{tst - kd:+.3f} over plain KD. Another seed moves a student by up to '
            '0.02, so only the first is a finding here (docs/results.md).')


if __name__ == '__main__':
    main()
