"""The seeded study: does TST train a better student than plain distillation?

    python tools/study/study.py                                # both tasks, 5 arms, seeds 0-2
    python tools/study/study.py --tasks det --arms kd tst --seeds 0 1 2 3 4

For each task (``det``: RetinaNet on the COCO-format digits; ``seg``: PSPNet on the
Cityscapes-format digits):

1. Write the data: 1000 training images and 500 *dev* images (data/study/<kind>), and
   500 *held-out* images generated from another seed (data/study/<kind>_heldout). Every
   choice of the configs was made on dev images (the demo's validation images are its
   first 200); held-out images are only ever evaluated.
2. Train the teacher once on the 1000 images (cached).
3. Train every arm x seed through tools/train.py. The students learn from the first
   200 training images (the low-data regime, where distillation has most to add), 300
   (det) or 600 (seg) iterations of 8 loaded images; every arm loads the same images in
   the same order and starts from the same student weights (TST's augment phases read
   their own dataloader). The arms, all from one TST config:
     student         the student alone
     random_aug      the student on [x_aug ; x] from the augmenter's initial (random)
                     policy, no teacher
     kd              plain KD: the distillation losses, no augmenter
     kd_random_aug   KD on [x_aug ; x] from the frozen initial policy
     tst             TST: KD on [x_aug ; x], the policy learned in augment phases
   ``kd_random_aug`` against ``tst`` is the question TST answers: does *learning* the
   policy beat random augmentation of the same family?
4. Evaluate each run on dev and held-out images and write docs/study/<task>/<arm>_seed<N>.json
   (metrics, wall clock, time in augment phases, the command, the learned policy).

A finished run (same config, options, data and teacher) is skipped, so an interrupted
study continues where it stopped. ``python tools/study/report.py`` makes the tables.
"""
import argparse
import json
import os
import os.path as osp
import sys
import time
from typing import Dict, List, Optional

import tst_mm  # noqa: F401
from tst_mm.datasets import ensure_digits_set

sys.path.insert(0, osp.dirname(osp.abspath(__file__)))
from runs import evaluate, latest_scalars, train  # noqa: E402

TASKS = {
    'det': dict(
        kind='coco', metric='coco/bbox_mAP', image_size=(256, 256),
        teacher='configs/study/retinanet_r18_digits.py',
        student='configs/study/retinanet_r18-narrow_digits.py',
        tst='configs/study/tst_retinanet_r18_r18-narrow_digits.py'),
    'seg': dict(
        # Digits 24-40 px tall, 1-3 per image: with the generator's default 12-19 px at
        # 64 x 128 the half-width teacher learned only the background (mIoU 8.7 = the
        # background's IoU / 11 classes, after 900 iterations).
        kind='cityscapes', metric='mIoU', image_size=(64, 128),
        digits=dict(digits_per_image=(1, 3), digit_size=(24, 40)),
        teacher='configs/study/pspnet_r18_cityscapes_digits.py',
        student='configs/study/pspnet_r18-narrow_cityscapes_digits.py',
        tst='configs/study/tst_pspnet_r18_r18-narrow_cityscapes_digits.py'),
}
# arm -> (what it is, config key in TASKS, --cfg-options on that config: a list, or a
# function of the task giving one)
ARMS = {
    'student': ('student alone', 'student', []),
    'random_aug': ('student + random augmenter policy (no teacher)', 'tst',
                   ['model.teacher=None', 'model.distill_losses=None',
                    'train_cfg.augment_iters=[]']),
    'kd': ('plain KD', 'tst', ['model.student_views=[clean]', 'train_cfg.augment_iters=[]']),
    'kd_random_aug': ('KD + frozen random augmenter policy', 'tst',
                      ['train_cfg.augment_iters=[]']),
    'tst': ('TST (KD + learned policy)', 'tst', []),
}
# TST variants tried on the dev images after the first study (`--arms tst_lr0.1`):
# each is the tst arm with options; report.py lists them apart from the five arms.
# The augmenter maximises the teacher-student divergence instead of the student's
# inverse task loss.
DIVERGENCE_OBJECTIVE = ['model.augment_loss_weights.student_inverse=0.0',
                        'model.augment_loss_weights.divergence=1.0']
PHASES_EVERY_50 = 'train_cfg.augment_iters=[0,50,100,150,200,250]'
TEACHER_CONSTRAINT = ['model.teacher_margin=1.0', 'model.augment_loss_weights.teacher=10.0']
IMITATION = 'model.augmenter.type=TSTImitationAugmenter'
SIGNAL = ['model.augmenter.gate_estimator=straight_through',
          'optim_wrapper.augmenter.accumulative_counts=16', 'train_cfg.augment_steps=96',
          'optim_wrapper.augmenter.optimizer.lr=0.3',
          'optim_wrapper.augmenter.optimizer.momentum=0.0',
          'optim_wrapper.augmenter.clip_grad.max_norm=1.0']
UNIT_STEP = 'optim_wrapper.augmenter.optimizer.type=NormalizedSGD'
TRANSFER_OBJECTIVE = ['model.augment_loss_weights.teacher=0.0',
                      'model.augment_loss_weights.student_inverse=0.0',
                      'model.augment_loss_weights.transfer=1.0']
TRANSFER_512 = [*SIGNAL, UNIT_STEP, *TRANSFER_OBJECTIVE,
                'optim_wrapper.augmenter.accumulative_counts=64', 'train_cfg.augment_steps=192',
                'optim_wrapper.augmenter.optimizer.lr=0.5']
TST_VARIANTS = {
    'tst_lr0.1': ('TST, augmenter lr 0.1 (10x)', 'tst',
                  ['optim_wrapper.augmenter.optimizer.lr=0.1']),
    'tst_lr0.1_6phases': ('TST, augmenter lr 0.1, 6 augment phases (every 50 iters)',
                          'tst', ['optim_wrapper.augmenter.optimizer.lr=0.1',
                                  PHASES_EVERY_50]),
    # At lr 0.1 the policy runs into a saturated corner (Invert always on) that the
    # teacher handles badly too: hold the teacher term up, or keep the policy's logits
    # inside [-1.5, 1.5] (probabilities and magnitudes within 0.18-0.82).
    'tst_lr0.1_teacher4': ('TST, augmenter lr 0.1, teacher term x4', 'tst',
                           ['optim_wrapper.augmenter.optimizer.lr=0.1',
                            'model.augment_loss_weights.teacher=4.0']),
    'tst_lr0.1_bound1.5': ('TST, augmenter lr 0.1, policy logits within +-1.5', 'tst',
                           ['optim_wrapper.augmenter.optimizer.lr=0.1',
                            'model.augmenter_param_bound=1.5']),
    # Hard for the student *relative to the teacher*: the teacher-student divergence
    # (what KD can teach from) instead of the student's inverse task loss.
    'tst_lr0.1_divergence': ('TST, augmenter lr 0.1, divergence instead of the student '
                             'inverse', 'tst',
                             ['optim_wrapper.augmenter.optimizer.lr=0.1',
                              *DIVERGENCE_OBJECTIVE]),
    # Segmentation's augmenter gradients are small (norms 0.1-0.3): at lr 0.1 the
    # divergence policy kept 13-17 of its 25 values near 0.5. Does a policy that moves
    # teach there?
    'tst_lr1_divergence': ('TST, augmenter lr 1.0, divergence instead of the student '
                           'inverse', 'tst',
                           ['optim_wrapper.augmenter.optimizer.lr=1.0',
                            *DIVERGENCE_OBJECTIVE]),
    # A control for the divergence policy, which picks strong operations: the frozen
    # random policy (probabilities 0.5) with every magnitude at 0.95 instead of 0.5.
    'kd_random_aug_strong': ('KD + frozen random policy, every magnitude at 0.95', 'tst',
                             ['train_cfg.augment_iters=[]',
                              'model.augmenter.type=TSTAugmenter',
                              *[f'model.augmenter.op_cfgs.{op}.magnitude=0.95' for op in
                                ('Brightness', 'Color', 'Contrast', 'Sharpness',
                                 'Posterize', 'Solarize', 'ShearX', 'ShearY',
                                 'TranslateX', 'TranslateY', 'Rotate')]]),
    # The same two terms with an equal say at every step, whatever their scales.
    'tst_lr0.1_balanced': ('TST, augmenter lr 0.1, terms balanced by gradient norm',
                           'tst', ['optim_wrapper.augmenter.optimizer.lr=0.1',
                                   'model.augment_grad_balance=True']),
    # Issue 21: the teacher term as a constraint (TeachAugment's idea) instead of a
    # weight: hard for the student only while the teacher's loss on the views stays
    # within twice its clean loss (the initial random policy's views are at 2.3x on
    # the detection pair, 1.3-3.2x per batch), pushed back with weight 10 beyond it.
    'tst_lr0.1_margin1': ('TST, augmenter lr 0.1, teacher term a constraint (loss <= 2x '
                          'clean)', 'tst', ['optim_wrapper.augmenter.optimizer.lr=0.1',
                                            *TEACHER_CONSTRAINT]),
    'tst_lr0.1_divergence_margin1': ('TST, augmenter lr 0.1, divergence with the teacher '
                                     'term a constraint (loss <= 2x clean)', 'tst',
                                     ['optim_wrapper.augmenter.optimizer.lr=0.1',
                                      *DIVERGENCE_OBJECTIVE, *TEACHER_CONSTRAINT]),
    # Issue 21, part 2: a usable signal. One step's gradient (8 images) has a cosine
    # near 0 with another's (tools/analysis/augmenter_gradient_snr.py): straight-through
    # gates give every draw's probability a gradient, 16 batches (128 images) go into
    # each update, 4 passes per phase (6 updates), and the update is a step of at most
    # 0.3 (the gradient clipped to norm 1, no momentum) whatever the objective's scale.
    'tst_signal': ('TST, straight-through gates, 128 images per update', 'tst', SIGNAL),
    'tst_signal_divergence': ('TST, straight-through gates, 128 images per update, '
                              'divergence', 'tst', [*SIGNAL, *DIVERGENCE_OBJECTIVE]),
    'tst_signal_margin1': ('TST, straight-through gates, 128 images per update, teacher '
                           'constraint', 'tst', [*SIGNAL, *TEACHER_CONSTRAINT]),
    'tst_signal_divergence_margin1': ('TST, straight-through gates, 128 images per '
                                      'update, divergence, teacher constraint', 'tst',
                                      [*SIGNAL, *DIVERGENCE_OBJECTIVE,
                                       *TEACHER_CONSTRAINT]),
    # The clipped SGD step above is 0.3 only where the gradient's norm is above 1 (the
    # divergence on detection: 8-20 at 128 images); on segmentation (0.03-0.09) and
    # with the reference's objective on detection (0.2-1.0) the policy hardly moved
    # (16-25 of its 25 values within 0.08 of the start). NormalizedSGD makes every
    # update a step of 0.3 along the accumulated gradient, on either task.
    'tst_signal_unit': ('TST, straight-through gates, 128 images per update, steps of '
                        '0.3 (NormalizedSGD)', 'tst', [*SIGNAL, UNIT_STEP]),
    'tst_signal_unit_divergence': ('TST, straight-through gates, 128 images per update, '
                                   'steps of 0.3 (NormalizedSGD), divergence', 'tst',
                                   [*SIGNAL, UNIT_STEP, *DIVERGENCE_OBJECTIVE]),
    # An objective that rewards what a view teaches rather than how hard it is: the
    # first-order gain, on other clean images, of one student step on the views
    # (TSTDistiller._transfer; half of each batch is augmented, half is the target).
    'tst_signal_unit_transfer': ('TST, straight-through gates, 128 images per update, '
                                 'steps of 0.3 (NormalizedSGD), look-ahead transfer',
                                 'tst', [*SIGNAL, UNIT_STEP, *TRANSFER_OBJECTIVE]),
    # Its policy moved little (one value in 25 beyond 0.08 per seed) while the
    # objective, averaged over 1024 images, wants Invert, Equalize and Posterize down
    # beyond 5 standard errors (docs/results.md): steps of 1.0 instead of 0.3.
    'tst_signal_unit_transfer_lr1': ('TST, straight-through gates, 128 images per '
                                     'update, steps of 1.0 (NormalizedSGD), look-ahead '
                                     'transfer', 'tst',
                                     [*SIGNAL, UNIT_STEP, *TRANSFER_OBJECTIVE,
                                      'optim_wrapper.augmenter.optimizer.lr=1.0']),
    # Averaged over 1024 images its direction is clear (|z| up to 7.7) where 128 give a
    # cosine of 0.3-0.5 between estimates: 512 images per update (3 updates of 0.5 per
    # phase of 192 steps).
    'tst_transfer_512': ('TST, look-ahead transfer, straight-through gates, 512 images '
                         'per update, steps of 0.5 (NormalizedSGD)', 'tst', TRANSFER_512),
    # Its policy still turns with the student from phase to phase (docs/results.md):
    # momentum 0.7 across its 9 updates keeps what the phases agree on and lets the
    # rest cancel (a step of up to 1.67 along a direction that persists).
    'tst_transfer_512_momentum': ('TST as tst_transfer_512, momentum 0.7 across updates '
                                  'and phases', 'tst',
                                  [*TRANSFER_512,
                                   'optim_wrapper.augmenter.optimizer.momentum=0.7']),
    # The control for the variants above: the frozen random policy drawn through the
    # straight-through gates (hard Bernoulli, as the relaxed gates at 0.05 nearly are).
    'kd_random_aug_st': ('KD + frozen random policy, straight-through gates', 'tst',
                         ['train_cfg.augment_iters=[]',
                          'model.augmenter.gate_estimator=straight_through']),
    # Issue 21, part 4: the paper's own augmentation module (pixel ops through frozen
    # imitator networks), with the shipped objective at the study's rate and at 10x.
    'tst_imitation': ('TST with the imitator augmenter (TSTImitationAugmenter)', 'tst',
                      [IMITATION]),
    'tst_lr0.1_imitation': ('TST with the imitator augmenter, augmenter lr 0.1', 'tst',
                            ['optim_wrapper.augmenter.optimizer.lr=0.1', IMITATION]),
    # ... and with the usable gradient of the tst_signal_unit arm.
    'tst_signal_unit_imitation': ('TST with the imitator augmenter, straight-through '
                                  'gates, 128 images per update, steps of 0.3', 'tst',
                                  [*SIGNAL, UNIT_STEP, IMITATION]),
}
ARMS.update(TST_VARIANTS)

# Issue 30: distillation chosen from the two models (no distill_losses written), against
# the hand-written losses of `kd`, and across families: an FCOS teacher for the
# RetinaNet student (ARM_TEACHERS).
AUTO_DISTILLATION = {
    'kd_auto': ('plain KD, automatic distillation (distill_losses not written)', 'tst',
                ['model.student_views=[clean]', 'train_cfg.augment_iters=[]',
                 'model.distill_losses=None']),
    'kd_auto_fcos': ('plain KD from an FCOS teacher, automatic distillation', 'tst',
                     ['model.student_views=[clean]', 'train_cfg.augment_iters=[]',
                      'model.distill_losses=None']),
    # The automatic scales at most 1x the task loss instead of 10x (the first choice:
    # 0.094 held-out against 0.138 for the written losses on seed 0, whose KL starts at
    # 236x the task loss).
    'kd_auto_r1': ('plain KD, automatic distillation, at most 1x the task loss at the '
                   'first step', 'tst',
                   ['model.student_views=[clean]', 'train_cfg.augment_iters=[]',
                    'model.distill_losses=None', 'model.auto_distill_ratio=1.0']),
    # Why kd_auto differs from kd (dev): its two differences one at a time. The written
    # KL at the weight the automatic scale gives it (0.021-0.023 on seeds 0-4), alone;
    # and the written KL at full strength with the automatic PKD neck loss added.
    'kd_scaled': ('plain KD, the written KL at the automatic scale (x0.022)', 'tst',
                  ['model.student_views=[clean]', 'train_cfg.augment_iters=[]',
                   'model.distill_losses.loss_kd_cls.loss_weight=0.022']),
    'kd_pkd': ('plain KD, the written KL and the automatic PKD neck loss', 'tst',
               ['model.student_views=[clean]', 'train_cfg.augment_iters=[]',
                'model.distill_losses.loss_pkd_neck.type=FeatureMimic',
                'model.distill_losses.loss_pkd_neck.student=neck',
                'model.distill_losses.loss_pkd_neck.teacher=neck',
                'model.distill_losses.loss_pkd_neck.normalize=True',
                'model.distill_losses.loss_pkd_neck.student_channels=32',
                'model.distill_losses.loss_pkd_neck.teacher_channels=64']),
}
ARMS.update(AUTO_DISTILLATION)
# arm -> its teacher, another than the task's: (name, config), trained once as well
ARM_TEACHERS = {'kd_auto_fcos': ('teacher_fcos', 'configs/study/fcos_r18_digits.py')}

# Issue 21: is there room for a policy at all? KD with a *fixed* policy of the same family
# (frozen, straight-through gates, against kd_random_aug_st): if no fixed point of the
# family beats the random one, no learned policy can. Probabilities 0.05 switch a group
# of ops nearly off (each image still draws 4 of the 14 ops).
GEOMETRIC_OPS = ('ShearX', 'ShearY', 'TranslateX', 'TranslateY', 'Rotate')
PIXEL_OPS = ('Brightness', 'Color', 'Contrast', 'Sharpness', 'Posterize', 'Solarize',
             'Equalize', 'Invert', 'Cutout')
# Where each task's pick of the second study ended: the mean over dev seeds 0-2 of the
# final policy of tst_signal_unit (det) and tst_signal_unit_divergence (seg), rounded
# (tests/tools/test_study.py checks these against docs/study/v2).
LEARNED_POLICY = {
    'det': dict(
        Brightness=(0.27, 0.39), Color=(0.43, 0.48), Contrast=(0.29, 0.40),
        Sharpness=(0.50, 0.50), Posterize=(0.50, 0.50), Solarize=(0.47, 0.62),
        ShearX=(0.44, 0.47), ShearY=(0.48, 0.49), TranslateX=(0.34, 0.39),
        TranslateY=(0.41, 0.52), Rotate=(0.40, 0.41), Equalize=(None, 0.38),
        Invert=(None, 0.78), Cutout=(None, 0.50)),
    'seg': dict(
        Brightness=(0.25, 0.40), Color=(0.35, 0.43), Contrast=(0.21, 0.38),
        Sharpness=(0.50, 0.50), Posterize=(0.50, 0.50), Solarize=(0.42, 0.73),
        ShearX=(0.40, 0.45), ShearY=(0.47, 0.49), TranslateX=(0.47, 0.41),
        TranslateY=(0.38, 0.43), Rotate=(0.32, 0.44), Equalize=(None, 0.40),
        Invert=(None, 0.92), Cutout=(None, 0.49)),
}
FROZEN_ST = ['train_cfg.augment_iters=[]', 'model.augmenter.gate_estimator=straight_through']


def _policy_options(probabilities: Dict[str, float],
                    magnitudes: Optional[Dict[str, float]] = None) -> List[str]:
    """--cfg-options that start the policy at these values (op -> value in (0, 1))."""
    return [*(f'model.augmenter.op_cfgs.{op}.probability={p}'
              for op, p in probabilities.items()),
            *(f'model.augmenter.op_cfgs.{op}.magnitude={m}'
              for op, m in (magnitudes or {}).items())]


def _learned_policy_options(task: str) -> List[str]:
    policy = LEARNED_POLICY[task]
    return _policy_options({op: p for op, (_, p) in policy.items()},
                           {op: m for op, (m, _) in policy.items() if m is not None})


FIXED_POLICIES = {
    'kd_learned_st': ('KD + the learned policy (its pick\'s mean final policy, dev seeds '
                      '0-2) frozen from the start', 'tst',
                      lambda task: [*FROZEN_ST, *_learned_policy_options(task)]),
    'kd_geometric_st': ('KD + frozen policy, pixel ops nearly off (p 0.05)', 'tst',
                        [*FROZEN_ST, *_policy_options(dict.fromkeys(PIXEL_OPS, 0.05))]),
    'kd_pixel_st': ('KD + frozen policy, geometric ops nearly off (p 0.05)', 'tst',
                    [*FROZEN_ST, *_policy_options(dict.fromkeys(GEOMETRIC_OPS, 0.05))]),
    'kd_dense_st': ('KD + frozen policy, every probability 0.9', 'tst',
                    [*FROZEN_ST, *_policy_options(dict.fromkeys(
                        GEOMETRIC_OPS + PIXEL_OPS, 0.9))]),
    # Is kd_geometric_st's lead on detection about which ops or how many? Each image
    # draws 4 of the 14 ops: the random policy applies 2 of them (0.71 geometric),
    # kd_geometric_st 0.84 (0.71 geometric). kd_sparse_st applies as few (0.84) in the
    # random policy's mix; kd_geometric_dense_st keeps the pixel ops off and applies
    # the geometric ones at 0.9 (1.29).
    'kd_sparse_st': ('KD + frozen policy, every probability 0.21', 'tst',
                     [*FROZEN_ST, *_policy_options(dict.fromkeys(
                         GEOMETRIC_OPS + PIXEL_OPS, 0.21))]),
    'kd_geometric_dense_st': ('KD + frozen policy, pixel ops nearly off (p 0.05), '
                              'geometric ops at p 0.9', 'tst',
                              [*FROZEN_ST, *_policy_options({
                                  **dict.fromkeys(PIXEL_OPS, 0.05),
                                  **dict.fromkeys(GEOMETRIC_OPS, 0.9)})]),
}
ARMS.update(FIXED_POLICIES)
# Does learning add to a fixed point, or take it away? Each arm learns with the recipe
# of a variant above, its policy starting where a fixed policy is frozen (its control).
LEARNED_FROM_FIXED = {  # arm -> (recipe, fixed policy it starts at)
    'tst_signal_unit_from_geometric': ('tst_signal_unit', 'kd_geometric_st'),
    'tst_transfer_512_from_geometric': ('tst_transfer_512', 'kd_geometric_st'),
    'tst_signal_unit_from_geometric_dense': ('tst_signal_unit', 'kd_geometric_dense_st'),
}
for _arm, (_recipe, _start) in LEARNED_FROM_FIXED.items():
    TST_VARIANTS[_arm] = (
        f'TST as {_recipe}, the policy starting at {_start}\'s', 'tst',
        [*ARMS[_recipe][2], *(o for o in FIXED_POLICIES[_start][2] if o not in FROZEN_ST)])
    ARMS[_arm] = TST_VARIANTS[_arm]
PREFIX = '[study]'


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--tasks', nargs='+', choices=tuple(TASKS), default=list(TASKS))
    parser.add_argument('--arms', nargs='+', choices=tuple(ARMS),
                        default=[arm for arm in ARMS if arm not in TST_VARIANTS
                                 and arm not in FIXED_POLICIES
                                 and arm not in AUTO_DISTILLATION])
    parser.add_argument('--seeds', nargs='+', type=int, default=[0, 1, 2])
    parser.add_argument('--work-dir', default='work_dirs/study',
                        help='runs go to WORK_DIR/<task>/<arm>_seed<N> (default: '
                        'work_dirs/study)')
    parser.add_argument('--results', default='docs/study',
                        help='where the per-run JSON records go (default: docs/study)')
    parser.add_argument('--data-root', default='data/study',
                        help='where the generated sets go (default: data/study, where '
                        'the study configs read them)')
    parser.add_argument('--num-images', type=int, nargs=3, default=[1000, 500, 2000],
                        metavar=('TRAIN', 'DEV', 'HELDOUT'),
                        help='images per set (default: 1000 500 2000; the first study '
                        'held out 500, which pins a run\'s mAP to about +-0.01)')
    parser.add_argument('--max-iters', type=int,
                        help="shorter runs (smoke tests); default: the configs' own")
    return parser.parse_args()


def write_data(spec: dict, args) -> Dict[str, str]:
    """Training and dev images from seed 0, held-out images from seed 1."""
    kind, size = spec['kind'], spec['image_size']
    num_train, num_dev, num_heldout = args.num_images
    roots = dict(dev=osp.join(args.data_root, kind),
                 heldout=osp.join(args.data_root, f'{kind}_heldout'))
    digits = spec.get('digits', {})
    ensure_digits_set(kind, roots['dev'], num_train, num_dev, size, seed=0, **digits)
    ensure_digits_set(kind, roots['heldout'], 0, num_heldout, size, seed=1, **digits)
    return roots


def data_options(kind: str, root: str, loaders=('train', 'val', 'test')) -> List[str]:
    """--cfg-options that read (and, for COCO, evaluate) the set in ``root``."""
    root = root.rstrip('/') + '/'
    options = [f'{loader}_dataloader.dataset.data_root={root}' for loader in loaders]
    if kind == 'coco':
        options += [f'{loader}_evaluator.ann_file={root}annotations/instances_val.json'
                    for loader in loaders if loader != 'train']
    return options


def short_options(max_iters) -> List[str]:
    """--cfg-options for a run of ``max_iters`` iterations, one augment step."""
    if not max_iters:
        return []
    return [f'train_cfg.max_iters={max_iters}', f'train_cfg.val_interval={max_iters}',
            f'default_hooks.checkpoint.interval={max_iters}']


def final_policy(work_dir: str) -> Dict:
    """The policy TSTPolicyHook logged, per logged step: {step: {key: value}}."""
    return {row.pop('step'): row for row in latest_scalars(work_dir, 'policy/')}


def run_task(task: str, args, progress: Dict, prefix: str = PREFIX) -> Dict[str, Dict]:
    """Trains and evaluates ``task``'s teacher and ``args.arms`` x ``args.seeds``
    (each once); returns the records: ``'teacher'`` and ``'<arm>_seed<N>'``."""
    spec = TASKS[task]
    roots = write_data(spec, args)
    # No validation while training: every run is evaluated afterwards on both sets.
    common = ['val_dataloader=None', 'val_cfg=None', 'val_evaluator=None',
              *data_options(spec['kind'], roots['dev'], ('train', 'test')),
              *short_options(args.max_iters), *getattr(args, 'cfg_options', [])]
    work = osp.join(args.work_dir, task)
    results = osp.join(args.results, task)
    os.makedirs(results, exist_ok=True)

    def record(name, config, work_dir, options, ckpt, run):
        metrics = {split: evaluate(name, config, ckpt, work_dir,
                                   options + data_options(spec['kind'], root, ['test']),
                                   split, prefix)
                   for split, root in roots.items()}
        for values in metrics.values():
            # CocoMetric returns nothing when no box scores above the test score
            # threshold (an untrained detector): its mAP is 0.
            values.setdefault(spec['metric'], 0.0)
        return dict(task=task, config=config, options=options, command=run['command'],
                    checkpoint=ckpt,
                    seconds=run['seconds'], cpu_seconds=run.get('cpu_seconds'),
                    augment_seconds=run.get('augment_seconds', 0),
                    metric=spec['metric'],
                    dev=metrics['dev'], heldout=metrics['heldout'])

    records, teacher_ckpts = {}, {}
    teachers = dict([('teacher', spec['teacher'])] + [
        ARM_TEACHERS[arm] for arm in args.arms if arm in ARM_TEACHERS])
    for key, config in teachers.items():
        teacher_dir = osp.join(work, key)
        teacher_ckpts[key], run = train(f'{task} {key}', config, teacher_dir, common,
                                        [roots['dev']], prefix=prefix)
        teacher = record(f'{task} {key}', config, teacher_dir, common,
                         teacher_ckpts[key], run)
        records[key] = dict(teacher, arm=key)
        with open(osp.join(results, f'{key}.json'), 'w') as f:
            json.dump(records[key], f, indent=1)
        print(f'{prefix} {task} {key}: {spec["metric"]} dev '
              f'{teacher["dev"][spec["metric"]]:.3f}, held-out '
              f'{teacher["heldout"][spec["metric"]]:.3f}', flush=True)

    for seed in args.seeds:
        for arm in args.arms:
            progress['done'] += 1
            what, config_key, arm_options = ARMS[arm]
            if callable(arm_options):
                arm_options = arm_options(task)
            name = f'{task} {arm} seed {seed} ({progress["done"]}/{progress["total"]})'
            options = [*common, *arm_options, f'randomness.seed={seed}']
            uses_teacher = config_key == 'tst' and arm != 'random_aug'
            teacher_key, teacher_config = ARM_TEACHERS.get(arm, ('teacher', None))
            teacher_ckpt = teacher_ckpts[teacher_key]
            if teacher_config:
                options.append(f'model.teacher={teacher_config}')
            if uses_teacher:
                options.append(f'model.teacher_ckpt={teacher_ckpt}')
            if args.max_iters and arm.startswith('tst'):
                options += ['train_cfg.augment_iters=[0]', 'train_cfg.augment_steps=1']
            work_dir = osp.join(work, f'{arm}_seed{seed}')
            ckpt, run = train(name, spec[config_key], work_dir, options, [roots['dev']],
                              (teacher_ckpt, ) if uses_teacher else (), prefix=prefix)
            result = record(name, spec[config_key], work_dir, options, ckpt, run)
            result.update(arm=arm, description=what, seed=seed,
                          policy=final_policy(work_dir) if config_key == 'tst' else {})
            records[f'{arm}_seed{seed}'] = result
            with open(osp.join(results, f'{arm}_seed{seed}.json'), 'w') as f:
                json.dump(result, f, indent=1)
            print(f'{prefix} {name}: {spec["metric"]} dev '
                  f'{result["dev"][spec["metric"]]:.3f}, held-out '
                  f'{result["heldout"][spec["metric"]]:.3f} ({run["seconds"]:.0f} s)',
                  flush=True)
    return records


def main() -> None:
    args = parse_args()
    start = time.time()
    progress = dict(done=0, total=len(args.tasks) * len(args.seeds) * len(args.arms))
    for task in args.tasks:
        run_task(task, args, progress)
    print(f'{PREFIX} finished in {time.time() - start:.0f} s; tables: '
          f'python tools/study/report.py --results {args.results}')


if __name__ == '__main__':
    main()
