"""Write the student of a TST checkpoint as a plain mmdet / mmseg checkpoint.

    python tools/extract_student.py DISTILLER_CKPT OUT_PTH

A ``TSTDistiller`` checkpoint holds the student under ``student.`` (``student.module.``
when it was saved by multi-process training), the augmenter, the distillation adapters,
both optimizers, the message hub and the train loop's state; the teacher is never saved.
The output keeps the student's weights, without the prefix, and the ``meta`` entries that
mmdet's ``init_detector``, mmseg's ``init_model`` and ``tools/test.py`` read
(``dataset_meta``: class names and palette) plus where the weights come from (epoch,
iteration, time). It drops ``meta['cfg']``: that is the distiller's config, while the
student is used with its own (e.g. ``mmdet::retinanet/retinanet_r50_fpn_2x_coco.py``).
The output holds only tensors and plain Python values, so ``torch.load(...,
weights_only=True)`` reads it without tst_mm.
"""
import argparse
import os
import os.path as osp
from collections import Counter
from typing import Tuple

import torch
from mmengine.runner import CheckpointLoader

import tst_mm  # noqa: F401  (allow-lists the classes a TST checkpoint holds)

PREFIX = 'student.'
DDP_PREFIX = 'module.'  # the student's DDP wrapper, in checkpoints of distributed runs
META_KEYS = ('dataset_meta', 'epoch', 'iter', 'seed', 'experiment_name', 'time',
             'mmengine_version')


def extract_student(checkpoint: dict) -> Tuple[dict, Counter]:
    """The student's plain checkpoint, and what was left out of the state dict.

    Args:
        checkpoint (dict): A loaded ``TSTDistiller`` checkpoint.

    Returns:
        tuple[dict, Counter]: ``{'state_dict': ..., 'meta': ...}``, and the number of
        tensors dropped per top-level module (``augmenter``, ``distill_losses``, ...).

    Raises:
        ValueError: If the checkpoint has no ``student.`` weights.
    """
    state_dict = checkpoint.get('state_dict') if isinstance(checkpoint, dict) else None
    if not isinstance(state_dict, dict):
        raise ValueError('not an mmengine checkpoint: it has no `state_dict`')
    student, dropped = {}, Counter()
    for key, value in state_dict.items():
        if not key.startswith(PREFIX):
            dropped[key.split('.', 1)[0]] += 1
            continue
        key = key[len(PREFIX):]
        if key.startswith(DDP_PREFIX):
            key = key[len(DDP_PREFIX):]
        student[key] = value
    if not student:
        found = ', '.join(f'{name}. ({count})' for name, count in dropped.most_common())
        raise ValueError('not a TSTDistiller checkpoint: no weights under '
                         f"'{PREFIX}' (its state_dict has {found or 'no keys'})")
    meta = checkpoint.get('meta') or {}
    meta = {key: meta[key] for key in META_KEYS if key in meta}
    return dict(state_dict=student, meta=meta), dropped


def parse_args():
    parser = argparse.ArgumentParser(
        description='Write the student of a TST checkpoint as a plain mmdet / mmseg '
        'checkpoint')
    parser.add_argument('checkpoint', help='TSTDistiller checkpoint (path or URL)')
    parser.add_argument('out', help='output .pth file')
    return parser.parse_args()


def main():
    args = parse_args()
    if osp.abspath(args.out) == osp.abspath(args.checkpoint):
        raise SystemExit('refusing to overwrite the input checkpoint; give another OUT')
    checkpoint = CheckpointLoader.load_checkpoint(args.checkpoint, map_location='cpu')
    try:
        student, dropped = extract_student(checkpoint)
    except ValueError as err:
        raise SystemExit(f'{args.checkpoint}: {err}') from None
    os.makedirs(osp.dirname(osp.abspath(args.out)), exist_ok=True)
    torch.save(student, args.out)

    tensors = student['state_dict'].values()
    numel = sum(t.numel() for t in tensors)
    size = osp.getsize(args.out) / 2**20
    print(f'Wrote {args.out}: {len(tensors)} student tensors ({numel / 1e6:.2f}M values), '
          f'{size:.1f} MiB')
    left_out = [f'{name} ({count} tensors)' for name, count in dropped.most_common()]
    left_out += [key for key in checkpoint if key not in ('state_dict', 'meta')]
    print('Left out: ' + (', '.join(left_out) or 'nothing'))
    if 'dataset_meta' not in student['meta']:
        print("Warning: the checkpoint's meta has no dataset_meta (class names); "
              "mmdet's init_detector will fall back to the COCO classes")


if __name__ == '__main__':
    main()
