"""The demo behind `make demo`: TST on a small generated detection task, on CPU.

1. Write the digits COCO set to data/demo/coco (skipped if present).
2. Through tools/train.py, train (each skipped once its final checkpoint exists):
   a teacher (RetinaNet, ResNet-18), the narrow student alone, and the narrow student
   distilled from the teacher with TST.
3. Evaluate the three on the validation images (cached) and print their COCO mAP.
"""
import argparse
import json
import os
import os.path as osp
import subprocess
import sys
import time
from collections import deque

from mmengine.config import Config
from mmengine.runner import Runner

import tst_mm  # noqa: F401
from tst_mm.datasets import make_coco_digits

ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))
TEACHER_CFG = 'configs/demo/retinanet_r18_digits.py'
STUDENT_CFG = 'configs/demo/retinanet_r18-narrow_digits.py'
TST_CFG = 'configs/demo/tst_retinanet_r18_r18-narrow_digits.py'
KEYS = ('coco/bbox_mAP', 'coco/bbox_mAP_50', 'coco/bbox_mAP_75')
PROGRESS = ('Iter(train)', 'TST augment phase', 'Error', 'error:')


def parse_args():
    parser = argparse.ArgumentParser(description='TST demo on generated digits')
    parser.add_argument('--work-dir', default=osp.join('work_dirs', 'demo'),
                        help='where the three runs go (default: work_dirs/demo)')
    parser.add_argument('--data-root', default=osp.join('data', 'demo', 'coco'),
                        help='a COCO-format digits set, written there if missing '
                        '(default: data/demo/coco)')
    parser.add_argument('--max-iters', type=int,
                        help="shorter runs (smoke tests); default: the configs' own")
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


def final_checkpoint(config: str, work_dir: str, max_iters=None) -> str:
    max_iters = max_iters or Config.fromfile(config).train_cfg.max_iters
    return osp.join(work_dir, f'iter_{max_iters}.pth')


def train(name: str, config: str, work_dir: str, options: list, max_iters=None) -> str:
    """Train through tools/train.py unless already done; returns the final checkpoint."""
    ckpt = final_checkpoint(config, work_dir, max_iters)
    if osp.isfile(ckpt):
        print(f'[demo] {name}: already trained ({ckpt})')
        return ckpt
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
    print(f'[demo] {name}: done in {time.time() - start:.0f} s')
    return ckpt


def evaluate(name: str, config: str, ckpt: str, work_dir: str, options: list) -> dict:
    """COCO metrics of a checkpoint on the validation set, cached next to it."""
    cache = osp.join(work_dir, 'demo_metrics.json')
    if osp.isfile(cache):
        with open(cache) as f:
            cached = json.load(f)
        if cached.get('checkpoint') == ckpt:
            return cached['metrics']
    print(f'[demo] {name}: evaluating {ckpt}', flush=True)
    cfg = Config.fromfile(config)
    cfg.merge_from_dict(dict(option.split('=', 1) for option in options))
    cfg.work_dir = osp.join(work_dir, 'eval')
    cfg.load_from = ckpt
    cfg.log_level = 'WARNING'  # the table below is the output; keep the console calm
    cfg.test_dataloader.num_workers = 0
    cfg.test_dataloader.persistent_workers = False
    metrics = Runner.from_cfg(cfg).test()
    metrics = {k: float(v) for k, v in metrics.items()}
    with open(cache, 'w') as f:
        json.dump(dict(checkpoint=ckpt, metrics=metrics), f)
    return metrics


def main() -> None:
    args = parse_args()
    os.chdir(ROOT)
    start = time.time()
    data = args.data_root
    if osp.isfile(osp.join(data, 'annotations', 'instances_train.json')):
        print(f'[demo] data: using the COCO-format set in {data}')
    else:
        make_coco_digits(data)
        print(f'[demo] data: wrote {data} (200 train / 50 val images, 10 digit classes)')
    options = data_options(data, args.max_iters)
    teacher_dir = osp.join(args.work_dir, 'teacher')
    teacher_ckpt = train('teacher', TEACHER_CFG, teacher_dir, options, args.max_iters)
    tst_options = [*options, f'model.teacher_ckpt={teacher_ckpt}']
    if args.max_iters:  # the augment phases must fall inside the shortened run
        tst_options += ['train_cfg.augment_iters=[0]', 'train_cfg.augment_steps=1']
    runs = [
        ('teacher (RetinaNet R18)', TEACHER_CFG, teacher_dir, options),
        ('student alone (R18 1/4 width)', STUDENT_CFG,
         osp.join(args.work_dir, 'student'), options),
        ('TST student (R18 1/4 width)', TST_CFG, osp.join(args.work_dir, 'tst'),
         tst_options),
    ]
    rows = []
    for name, config, work_dir, run_options in runs:
        ckpt = teacher_ckpt if config == TEACHER_CFG else train(
            name, config, work_dir, run_options, args.max_iters)
        rows.append((name, evaluate(name, config, ckpt, work_dir, run_options)))
    print(f'\n[demo] COCO bbox metrics on the validation images '
          f'({time.time() - start:.0f} s in all)')
    print(f'{"model":32s} {"mAP":>7s} {"mAP_50":>7s} {"mAP_75":>7s}')
    for name, m in rows:
        # An untrained model may give no boxes at all: CocoMetric then returns nothing.
        print(f'{name:32s} ' + ' '.join(f'{m.get(key, float("nan")):7.3f}' for key in KEYS))


if __name__ == '__main__':
    main()
