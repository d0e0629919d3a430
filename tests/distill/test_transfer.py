"""The transfer term of the augmenter objective: what it measures and where its
gradient goes."""
import copy

import pytest
import torch
from torch.autograd.function import once_differentiable
from mmengine.registry import DefaultScope
from mmengine.runner import Runner

from tests.distill.test_distiller import build, tiny_cfg
from tst_mm.distill.distiller import _requiring_grad
from tst_mm.distill.freeze import frozen
from tst_mm.engine import TSTOptimWrapperConstructor

TRANSFER_ONLY = dict(teacher=0.0, student_inverse=0.0, transfer=1.0)


def _distiller(**model):
    cfg = tiny_cfg()
    cfg.model.update(augment_loss_weights=TRANSFER_ONLY, **model)
    distiller = build(cfg.model)
    distiller.init_weights()
    distiller.train()
    return distiller


def _batch(coco_digits, batch_size=4):
    loader = copy.deepcopy(tiny_cfg().train_dataloader)
    loader.update(batch_size=batch_size)
    loader.dataset.data_root = coco_digits
    loader.sampler = dict(type='DefaultSampler', shuffle=False)
    with DefaultScope.overwrite_default_scope('mmdet'):
        return next(iter(Runner.build_dataloader(loader)))


def _optim(distiller, augmenter_lr=0.0):
    return TSTOptimWrapperConstructor(dict(
        student=dict(type='OptimWrapper', optimizer=dict(type='SGD', lr=0.0)),
        augmenter=dict(type='OptimWrapper',
                       optimizer=dict(type='SGD', lr=augmenter_lr))))(distiller)


def test_transfer_is_the_first_order_gain_of_a_student_step(coco_digits):
    """<g_views, g_target> is how much one SGD step of size eps on the views lowers the
    student's loss on the target images, divided by eps (to first order): take the
    step for real and compare (within 1.7% over 7 seeds, float64; bound 5%)."""
    distiller = _distiller().double()  # the loss differences are small: float64
    data = distiller.data_preprocessor(_batch(coco_digits), True)
    data['inputs'] = data['inputs'].double()
    views, target = (dict(inputs=data['inputs'][i:i + 2],
                          data_samples=data['data_samples'][i:i + 2]) for i in (0, 2))
    student = distiller.student
    params = [p for p in student.parameters() if p.requires_grad]

    def loss(batch):
        losses = distiller._student_losses(student, batch['inputs'],
                                           batch['data_samples'])
        return distiller.parse_losses(losses)[0]

    with frozen(student):  # batch statistics, running averages untouched
        gain = distiller._transfer(views['inputs'], views['data_samples'], target,
                                   params).item()
        assert not any(p.requires_grad for p in params)  # frozen again after it
        with _requiring_grad(params):
            g_views = torch.autograd.grad(loss(views), params, allow_unused=True)
        eps = 1e-5 / torch.cat([g.flatten() for g in g_views if g is not None]).norm()

        def target_loss_after(step):  # the student moved by -step * g_views, then back
            with torch.no_grad():
                for p, g in zip(params, g_views):
                    if g is not None:
                        p -= step * g
                value = loss(target).item()
                for p, g in zip(params, g_views):
                    if g is not None:
                        p += step * g
            return value

        # A central difference: the second-order term cancels.
        lowered = (target_loss_after(-eps) - target_loss_after(eps)) / (2 * eps.item())
    assert gain != 0
    assert lowered == pytest.approx(gain, rel=0.05)


def test_transfer_term_trains_the_augmenter_only(coco_digits):
    distiller = _distiller()
    student_state = copy.deepcopy(distiller.student.state_dict())
    policy = [p.detach().clone() for p in distiller.augmenter.parameters()]
    out = distiller.augment_step(_batch(coco_digits), _optim(distiller, 1e-3))
    assert torch.isfinite(out['augment.transfer'])
    assert out['augment.loss'] == -out['augment.transfer']
    assert out['augment.grad_norm.transfer'] > 0
    assert 'augment.teacher.loss' not in out  # weight 0: not computed
    for before, after in zip(policy, distiller.augmenter.parameters()):
        assert not torch.equal(before, after)  # magnitudes and probabilities both move
    torch.testing.assert_close(distiller.student.state_dict(), student_state)
    assert all(p.requires_grad and (p.grad is None or not p.grad.any())
               for p in distiller.student.parameters())


def test_transfer_needs_two_images(coco_digits):
    distiller = _distiller()
    with pytest.raises(ValueError, match='transfer needs at least 2 images.*batch_size'):
        distiller.augment_step(_batch(coco_digits, batch_size=1), _optim(distiller))


class _OnceDifferentiable(torch.autograd.Function):
    """The identity, with a backward that cannot itself be differentiated (as mmcv's
    CUDA ops)."""

    @staticmethod
    def forward(ctx, x):
        return x.clone()

    @staticmethod
    @once_differentiable
    def backward(ctx, grad):
        return grad


def test_transfer_names_a_loss_differentiable_once_only(coco_digits):
    distiller = _distiller()
    head = distiller.student.bbox_head.retina_cls
    head.register_forward_hook(lambda module, args, out: _OnceDifferentiable.apply(out))
    with pytest.raises(RuntimeError, match='transfer differentiates the student.s '
                       'gradient.*differentiable once only.*sigmoid_focal_loss'):
        distiller.augment_step(_batch(coco_digits), _optim(distiller))
