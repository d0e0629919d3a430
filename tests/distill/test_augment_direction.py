"""The direction of the augmenter's objective, on the digits set with a trained teacher
and a weaker student (PSPNet, Cityscapes layout).

A flipped sign of either term passes every shape and gradient test; these catch it.
Each term is checked alone, on a one-op policy (Contrast: magnitude and probability),
because that is where its direction is measurable on a CPU budget: with the full
14-op policy, the gradient of a few dozen images is dominated by which ops and gates
each image drew (two estimates on 48 images have a cosine near 0), and a 40-step
phase's effect on held-out losses changed sign from seed to seed (docs/results.md).
On one op the signal is strong:

- the teacher term alone lowers the op's strength and the teacher's task loss on the
  held-out augmented views; with its sign flipped it raises them;
- the student-inverse term alone raises the op's strength and the student's task loss;
  with its sign flipped it lowers the strength;
- the full objective widens the gap between the student's and the teacher's task loss:
  the views get relatively harder for the student.

The premises hold by design, not by the luck of one run: the teacher is twice as wide
and learns from four times the images (the student fits its 12 and generalises
worse), both train to the end of a cosine schedule, and both classifiers start from
PyTorch's default init (mmseg's N(0, 0.01) leaves a from-scratch model at "digit or
background" for hundreds of steps). Adam moves the policy by about its learning rate
per step whatever a term's scale, so how far the op moves is the consistency of the
term's sign. Held-out losses are averaged over 4 draws per image. Measured over data /
initialisation seeds 0-4, each with two or three of 1, 2 and 4 torch threads (11 runs):

    teacher / student held-out loss          0.35-0.57  (asserted < 0.75)
    strength change: teacher, flipped        -0.23..-0.38, +0.37..+0.41
                     inverse, flipped        +0.17..+0.35, -0.14..-0.34
    teacher's loss: teacher term, flipped    -0.03..-0.11, +0.08..+0.13
    student's loss: inverse term             +0.007..+0.023
    full objective, student - teacher change +0.04..+0.08

(the flipped inverse's effect on the student's held-out loss, -0.03..+0.004, is too
small to assert). A flipped sign of the teacher term fails three of these tests, of the
student inverse two (checked). The old pair, two students of one data set, failed its
premise on two CPUs.
"""
import copy
import os.path as osp
from typing import Optional

import pytest
import torch
from mmengine.config import Config
from mmengine.optim import OptimWrapper
from mmengine.registry import MODELS, DefaultScope
from mmengine.runner import Runner

import tst_mm  # noqa: F401
from tests.conftest import TEST_CONFIGS, TEST_SEED
from tst_mm.datasets import make_cityscapes_digits
from tst_mm.distill.freeze import frozen
from tst_mm.engine import TSTOptimWrapperConstructor

# The module's fixtures are trained / written once: its tests share one xdist worker.
pytestmark = pytest.mark.xdist_group('augment_direction')

CONFIG = osp.join(TEST_CONFIGS, 'pspnet_tiny_cityscapes_digits.py')
TRAIN_IMAGES, STUDENT_IMAGES = 48, 12
TEACHER_ITERS, STUDENT_ITERS, AUGMENT_STEPS, AUGMENT_LR = 200, 100, 24, 0.15
EVAL_DRAWS = 4  # draws of the policy per held-out image
PREMISE_RATIO = 0.75  # the teacher's held-out task loss is below this x the student's
OP = 'Contrast'


def _model_cfg(width: int) -> dict:
    """The tiny PSPNet with a ResNetV1c-18 of ``width`` base channels, 11 classes (the
    ten digits and the background), its classifiers in PyTorch's default init: with
    mmseg's N(0, 0.01) a model trained from scratch learns "digit or background" long
    before "which digit" (docs/results.md), and a teacher stuck there is a poor one."""
    model = Config.fromfile(CONFIG).model
    model.backbone.update(stem_channels=width, base_channels=width)
    model.decode_head.update(in_channels=8 * width, channels=2 * width, num_classes=11,
                             init_cfg=None)
    model.auxiliary_head.update(in_channels=4 * width, channels=width, num_classes=11,
                                init_cfg=None)
    return model.to_dict()


def _loader(root: str, split: str, shuffle: bool, images: Optional[int] = None):
    loader = copy.deepcopy(Config.fromfile(CONFIG).train_dataloader)
    loader.batch_size = 8
    loader.dataset.update(data_root=root, indices=images, data_prefix=dict(
        img_path=f'leftImg8bit/{split}', seg_map_path=f'gtFine/{split}'))
    loader.sampler = dict(type='InfiniteSampler' if shuffle else 'DefaultSampler',
                          shuffle=shuffle, seed=0)
    with DefaultScope.overwrite_default_scope('mmseg'):
        return Runner.build_dataloader(loader, seed=0)


def _train(model: torch.nn.Module, root: str, iters: int,
           images: Optional[int] = None) -> None:
    """AdamW with a cosine decay to 0: the weights settle at the end of the schedule
    instead of stopping wherever a constant rate left them."""
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3, weight_decay=0.05)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, iters)
    optim = OptimWrapper(optimizer)
    model.train()
    for _, batch in zip(range(iters), _loader(root, 'train', True, images)):
        model.train_step(batch, optim)
        schedule.step()


@torch.no_grad()
def _task_losses(distiller, batches: list) -> tuple:
    """Mean teacher and student task loss on augmented views of ``batches``, with the
    models as the augment phase runs them (the student's BatchNorm on batch statistics,
    frozen), over ``EVAL_DRAWS`` draws per image. The draws come from fixed seeds, so
    two calls see the same ones and differ only by the policy."""
    distiller.train()
    totals = [0.0, 0.0]
    with frozen(distiller.student):
        for draw in range(EVAL_DRAWS):
            torch.manual_seed(1234 + draw)
            for batch in batches:
                data = distiller.data_preprocessor(copy.deepcopy(batch), True)
                inputs, samples = distiller.augmenter(data['inputs'], data['data_samples'])
                for i, (model, normalizer) in enumerate((
                        (distiller.teacher, distiller.teacher_normalizer),
                        (distiller.student, distiller.student_normalizer))):
                    losses = model(normalizer(inputs, samples), samples, 'loss')
                    totals[i] += float(distiller.parse_losses(losses)[0])
    views = EVAL_DRAWS * len(batches)
    return totals[0] / views, totals[1] / views


def train_pair(tmp: str, seed: int = 0) -> tuple:
    """Generate the digits set, train the teacher and the student; returns the data
    root, the teacher's checkpoint and the student's state dict."""
    root = make_cityscapes_digits(osp.join(tmp, 'cityscapes'), num_train=TRAIN_IMAGES,
                                  num_val=16, image_size=(64, 128), seed=1 + seed,
                                  digits_per_image=(1, 3), digit_size=(24, 40))
    torch.manual_seed(seed)
    with DefaultScope.overwrite_default_scope('mmseg'):
        teacher, student = MODELS.build(_model_cfg(16)), MODELS.build(_model_cfg(8))
    _train(teacher, root, TEACHER_ITERS)
    _train(student, root, STUDENT_ITERS, STUDENT_IMAGES)
    ckpt = osp.join(tmp, 'teacher.pth')
    torch.save({'state_dict': teacher.state_dict()}, ckpt)
    return root, ckpt, student.state_dict()


@pytest.fixture(scope='module')
def trained_pair(tmp_path_factory):
    """A PSPNet (ResNetV1c-18 at 1/4 width) trained on 48 digit scenes, and a 1/8-width
    student trained on a quarter of them: a weaker student by design (half the width,
    a quarter of the data: it fits its 12 scenes and generalises worse), and a confident
    one, so that its inverse term matters."""
    return train_pair(str(tmp_path_factory.mktemp('direction')), TEST_SEED)


def _phase(trained_pair, **weights) -> dict:
    """One augment phase on the one-op policy: the change of the op's mean strength
    (magnitude and probability) and of both task losses on the held-out views."""
    root, ckpt, student_state = trained_pair
    torch.manual_seed(0)
    with DefaultScope.overwrite_default_scope('mmseg'):
        distiller = MODELS.build(dict(
            type='TSTDistiller', student=_model_cfg(8), teacher=_model_cfg(16),
            teacher_ckpt=ckpt, augmenter=dict(type='TSTAugmenter', ops=[OP], num_ops=1),
            augment_loss_weights=weights,
            data_preprocessor=Config.fromfile(CONFIG).data_preprocessor))
    distiller.student.load_state_dict(student_state)
    optim = TSTOptimWrapperConstructor(dict(
        student=dict(type='OptimWrapper', optimizer=dict(type='SGD', lr=0.0)),
        # Adam: each step moves theta by about lr whatever the term's scale, so how far
        # the op moves depends on how consistent its gradient's sign is, not its size.
        augmenter=dict(type='OptimWrapper',
                       optimizer=dict(type='Adam', lr=AUGMENT_LR))))(distiller)
    held_out = list(_loader(root, 'val', False))

    def strength():
        policy = distiller.augmenter.policy()[OP]
        return (policy['magnitude'] + policy['probability']) / 2

    before, start = _task_losses(distiller, held_out), strength()
    distiller.train()
    for _, batch in zip(range(AUGMENT_STEPS), _loader(root, 'train', True)):
        distiller.augment_step(batch, optim)
    after = _task_losses(distiller, held_out)
    return dict(strength=strength() - start, teacher=after[0] - before[0],
                student=after[1] - before[1])


def test_the_pair_is_a_teacher_and_a_weaker_student(trained_pair):
    root, ckpt, student_state = trained_pair
    with DefaultScope.overwrite_default_scope('mmseg'):
        distiller = MODELS.build(dict(
            type='TSTDistiller', student=_model_cfg(8), teacher=_model_cfg(16),
            teacher_ckpt=ckpt, augmenter=dict(type='TSTAugmenter', ops=[OP], num_ops=1),
            data_preprocessor=Config.fromfile(CONFIG).data_preprocessor))
    distiller.student.load_state_dict(student_state)
    teacher, student = _task_losses(distiller, list(_loader(root, 'val', False)))
    # Measured 0.35-0.57 (5 seeds x 1, 2, 4 threads); the old pair, two students of
    # one data set, was 1.07 on another CPU.
    assert teacher < PREMISE_RATIO * student, (teacher, student)


@pytest.mark.parametrize('sign', [1.0, -1.0])
def test_teacher_term_makes_views_easy_for_the_teacher(trained_pair, sign):
    effect = _phase(trained_pair, teacher=sign, student_inverse=0.0)
    if sign > 0:
        assert effect['strength'] < 0 and effect['teacher'] < 0, effect
    else:  # flipped: the views get harder for the teacher
        assert effect['strength'] > 0 and effect['teacher'] > 0, effect


@pytest.mark.parametrize('sign', [1.0, -1.0])
def test_student_inverse_term_makes_views_hard_for_the_student(trained_pair, sign):
    effect = _phase(trained_pair, teacher=0.0, student_inverse=sign)
    if sign > 0:
        assert effect['strength'] > 0 and effect['student'] > 0, effect
    else:  # flipped: the op gets weaker (its held-out effect is too small to assert)
        assert effect['strength'] < 0, effect


def test_full_objective_widens_the_student_teacher_gap(trained_pair):
    """The issue's criterion: the phase raises the student's task loss on the views
    more than the teacher's (on this pair the teacher term is the stronger one, so both
    fall, the teacher's by more)."""
    effect = _phase(trained_pair)
    assert effect['student'] > effect['teacher'], effect
