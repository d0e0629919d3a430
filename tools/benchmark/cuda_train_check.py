"""Train a shipped COCO config at its real resolution through tools/train.py (a GPU check).

    python tools/benchmark/cuda_train_check.py [--config configs/tst/retinanet_r101_r50_coco.py]
        [--work-dir work_dirs/cuda_check] [--amp] [--epochs 2]

For a machine without COCO and without internet (the GPU machine of the project's
benchmarks): writes a small COCO-format digits set at 800 x 1216 whose categories carry
COCO's first ten class names (so the shipped config reads it unchanged, 80 classes),
saves the config's teacher with random weights as a local checkpoint (its URL cannot be
reached), then trains the config's student as a user would, with the config's own
pipeline (Resize to 1333 x 800), an augment phase first and CocoMetric at the end:
``--epochs`` epochs of the 16 images, batch 2. It prints the last log lines and exits
non-zero if training failed or a logged loss was not finite. This checks that the CUDA
path runs (and, with ``--amp``, that every phase runs under AMP); the mAP of a student
trained for 16 iterations against a random teacher means nothing.
"""
import argparse
import json
import math
import os
import os.path as osp
import re
import subprocess
import sys

ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
COCO_NAMES = ('person', 'bicycle', 'car', 'motorcycle', 'airplane', 'bus', 'train',
              'truck', 'boat', 'traffic light')


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--config', default='configs/tst/retinanet_r101_r50_coco.py')
    parser.add_argument('--work-dir', default='work_dirs/cuda_check')
    parser.add_argument('--amp', action='store_true')
    parser.add_argument('--epochs', type=int, default=2)
    return parser.parse_args()


def write_data(root: str) -> str:
    """The digits set at 800 x 1216, its categories renamed to COCO class names."""
    from tst_mm.datasets import make_coco_digits
    make_coco_digits(root, num_train=16, num_val=4, image_size=(800, 1216), seed=0)
    for split in ('train', 'val'):
        path = osp.join(root, 'annotations', f'instances_{split}.json')
        with open(path) as f:
            coco = json.load(f)
        for category in coco['categories']:
            category['name'] = COCO_NAMES[category['id'] - 1]
        with open(path, 'w') as f:
            json.dump(coco, f)
    return root


def write_teacher(config: str, path: str) -> str:
    """The config's teacher with random weights (its own init, no download)."""
    import torch
    from mmengine.config import Config
    from mmengine.registry import DefaultScope, MODELS

    import tst_mm  # noqa: F401
    from tst_mm.distill.teacher import model_cfg

    teacher = model_cfg(Config.fromfile(config).model.teacher)
    teacher.backbone.init_cfg = None
    with DefaultScope.overwrite_default_scope('mmdet'):
        model = MODELS.build(teacher)
        model.init_weights()
    torch.save(dict(state_dict=model.state_dict()), path)
    return path


def main() -> None:
    args = parse_args()
    config = osp.join(ROOT, args.config)
    os.makedirs(args.work_dir, exist_ok=True)
    data = write_data(osp.join(args.work_dir, 'coco')) + '/'
    teacher = write_teacher(config, osp.join(args.work_dir, 'teacher_random.pth'))
    options = [
        *[f'{split}_dataloader.dataset.{key}={value}' for split in ('train', 'val')
          for key, value in (('data_root', data),
                             ('ann_file', f'annotations/instances_{split}.json'),
                             ('data_prefix.img', f'{split}/'))],
        f'val_evaluator.ann_file={data}annotations/instances_val.json',
        f'model.teacher_ckpt={teacher}',
        'model.student.backbone.init_cfg=None',  # no ImageNet download
        f'train_cfg.max_epochs={args.epochs}', f'train_cfg.val_interval={args.epochs}',
        'train_cfg.augment_epochs=[0]',
        'default_hooks.logger.interval=1',
        f'default_hooks.checkpoint.interval={args.epochs}',
        # The 2x schedule's milestones (epochs 16, 22) lie beyond a 2-epoch run.
        'param_scheduler.student.0.end=4',
    ]
    work_dir = osp.join(args.work_dir, 'amp' if args.amp else 'fp32')
    cmd = [sys.executable, osp.join(ROOT, 'tools', 'train.py'), config, '--work-dir',
           work_dir, *(['--amp'] if args.amp else []), '--cfg-options', *options]
    print('[cuda check]', ' '.join(cmd), flush=True)
    proc = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    lines = proc.stdout.splitlines()
    losses = [float(v) for line in lines if 'Epoch(train)' in line
              for v in re.findall(r'\bloss: (\S+)', line)]
    print('\n'.join(lines[-40:]))
    bad = [v for v in losses if not math.isfinite(v)]
    print(f'[cuda check] exit {proc.returncode}; {len(losses)} logged losses, '
          f'{len(bad)} not finite; AMP {"on" if args.amp else "off"}', flush=True)
    sys.exit(proc.returncode or (1 if bad or not losses else 0))


if __name__ == '__main__':
    main()
