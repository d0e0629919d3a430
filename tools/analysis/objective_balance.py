"""How the augmenter's two terms compare at initialisation (docs/results.md, section 1).

    python tools/analysis/objective_balance.py det   # RetinaNet R18 <- R50, 80 classes
    python tools/analysis/objective_balance.py seg   # PSPNet R18 <- R50, 19 classes

Builds a TSTDistiller from mmdet's / mmseg's own configs (random weights with the
libraries' own initialisation, e.g. the focal-loss prior; no download), takes augmenter
steps with lr 0 on generated digits images, and prints, per ``inverse_reduction``, the
value of the teacher term and of the student-inverse term and the norm of the gradient
each gives the augmenter.
"""
import argparse
import copy
import tempfile

import torch
from mmengine.config import Config
from mmengine.hub import get_config
from mmengine.logging import MMLogger
from mmengine.registry import MODELS, DefaultScope
from mmengine.runner import Runner

import tst_mm  # noqa: F401
from tst_mm.datasets import make_cityscapes_digits, make_coco_digits
from tst_mm.engine import TSTOptimWrapperConstructor

FROZEN = dict(student=dict(type='OptimWrapper', optimizer=dict(type='SGD', lr=0.0)),
              augmenter=dict(type='OptimWrapper', optimizer=dict(type='SGD', lr=0.0)))


def detection(root: str):
    size = 320
    data = make_coco_digits(root, num_train=8, num_val=1, image_size=(size, size), seed=0)
    pair = [get_config(f'mmdet::retinanet/retinanet_{depth}_fpn_1x_coco.py').model
            for depth in ('r18', 'r50')]
    for model in pair:
        model.backbone.init_cfg = None
    loader = Config.fromfile('configs/demo/retinanet_r18_digits.py').train_dataloader
    loader.dataset.pipeline[2].scale = (size, size)
    loader.dataset.data_root = data
    return pair, loader, 'mmdet', ('mean', 'task')


def segmentation(root: str):
    size = (256, 512)
    data = make_cityscapes_digits(root, num_train=8, num_val=1, image_size=size, seed=0)
    pair = [get_config(f'mmseg::pspnet/pspnet_{depth}-d8_4xb2-80k_cityscapes-512x1024.py'
                       ).model for depth in ('r18', 'r50')]
    for model in pair:
        model.pretrained = None
        model.data_preprocessor.size = size
        for head in ('backbone', 'decode_head', 'auxiliary_head'):
            model[head].norm_cfg = dict(type='BN', requires_grad=True)  # no SyncBN on CPU
    loader = Config.fromfile('tests/configs/pspnet_tiny_cityscapes_digits.py'
                             ).train_dataloader
    loader.dataset.data_root = data
    return pair, loader, 'mmseg', ('mean', 'reference', 'task')


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('task', choices=('det', 'seg'))
    parser.add_argument('--batches', type=int, default=2, help='batches of 2 images')
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as root:
        (student, teacher), loader, scope, reductions = \
            (detection if args.task == 'det' else segmentation)(root)
        loader.update(batch_size=2, num_workers=0, persistent_workers=False,
                      sampler=dict(type='DefaultSampler', shuffle=False))
        with DefaultScope.overwrite_default_scope(scope):
            batches = [b for b, _ in zip(Runner.build_dataloader(loader),
                                         range(args.batches))]
            for reduction in reductions:
                torch.manual_seed(0)
                model = MODELS.build(dict(type='TSTDistiller', student=student,
                                          teacher=teacher, inverse_reduction=reduction))
                MMLogger.get_current_instance().setLevel('ERROR')
                model.init_weights()
                model.train()
                optim = TSTOptimWrapperConstructor(copy.deepcopy(FROZEN))(model)
                for batch in batches:
                    torch.manual_seed(1)
                    out = model.augment_step(copy.deepcopy(batch), optim)
                    value = [float(out[f'augment.{t}.loss'])
                             for t in ('teacher', 'student_inverse')]
                    grad = [float(out[f'augment.grad_norm.{t}'])
                            for t in ('teacher', 'student_inverse')]
                    print(f'{args.task} {reduction:9s} values: teacher {value[0]:.4g}, '
                          f'inverse {value[1]:.4g} (x{value[1] / value[0]:.3g}); '
                          f'gradient norms: teacher {grad[0]:.3g}, inverse {grad[1]:.3g} '
                          f'(x{grad[1] / grad[0]:.3g})', flush=True)


if __name__ == '__main__':
    main()
