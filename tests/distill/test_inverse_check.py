"""A task loss the augmenter's student term does not invert is named at the first
augmenter step, instead of being minimised the wrong way."""
import copy
import random

import numpy as np
import pytest
import torch
import torch.nn as nn
from mmdet.models.dense_heads import RetinaHead
from mmdet.registry import MODELS as MMDET_MODELS

from tests.distill.test_distiller import build, one_batch, tiny_cfg
from tst_mm.distill.inverse_check import InversionCheck
from tst_mm.engine import TSTOptimWrapperConstructor


@MMDET_MODELS.register_module(force=True)
class InlineLossRetinaHead(RetinaHead):
    """RetinaHead plus a loss computed inline (no `loss_*` submodule to swap)."""

    def loss_by_feat(self, cls_scores, bbox_preds, *args, **kwargs):
        losses = super().loss_by_feat(cls_scores, bbox_preds, *args, **kwargs)
        losses['loss_logit_l2'] = 1e-3 * sum(s.square().mean() for s in cls_scores)
        return losses


def distiller_and_optim(head=None):
    cfg = tiny_cfg()
    if head:
        cfg.model.student.bbox_head.type = head
    distiller = build(cfg.model)
    distiller.train()
    optim = TSTOptimWrapperConstructor(dict(
        student=dict(type='OptimWrapper', optimizer=dict(type='SGD', lr=0.0)),
        augmenter=dict(type='OptimWrapper', optimizer=dict(type='SGD', lr=0.0))))(distiller)
    return distiller, optim


def test_a_loss_computed_inline_stops_the_first_augmenter_step(coco_digits):
    distiller, optim = distiller_and_optim('InlineLossRetinaHead')
    with pytest.raises(NotImplementedError) as error:
        distiller.augment_step(one_batch(coco_digits), optim)
    message = str(error.value)
    assert "'loss_logit_l2'" in message and 'student_inverse=0' in message
    assert 'loss_cls' not in message.split('are the same')[0]  # the focal loss is fine


def test_inverted_losses_pass_and_are_checked_once(coco_digits):
    distiller, optim = distiller_and_optim()
    batch = one_batch(coco_digits)
    distiller.augment_step(copy.deepcopy(batch), optim)
    check = distiller.inversion_check
    assert check.checked == {'loss_cls', 'loss_bbox'} and not check.pending
    calls = []
    distiller.student.register_forward_hook(lambda *args: calls.append(1))
    distiller.augment_step(copy.deepcopy(batch), optim)
    assert len(calls) == 1  # no extra forward after the first step


class RandomLosses(nn.Module):
    """A student whose loss draws from every generator, and whose `loss_zero` is 0."""

    def forward(self, inputs, samples, mode):
        random.random(), np.random.rand()
        return dict(loss_x=torch.rand(()) + 1, loss_zero=torch.zeros(()),
                    acc=torch.ones(()))


@pytest.mark.parametrize('inverted', [False, True])
def test_the_check_leaves_every_random_stream(inverted):
    check, student, inputs = InversionCheck(), RandomLosses(), torch.zeros(1)
    state = torch.get_rng_state(), random.getstate(), np.random.get_state()
    check.before(student, inputs, [])
    assert torch.equal(torch.get_rng_state(), state[0])
    assert random.getstate() == state[1]
    assert np.array_equal(np.random.get_state()[1], state[2][1])
    losses = student(inputs, [], 'loss')  # the same draw as before()'s ...
    if not inverted:
        with pytest.raises(NotImplementedError, match="'loss_x'"):
            check.after(losses)  # ... so not inverting it is caught
        return
    check.after(dict(losses, loss_x=-losses['loss_x']))
    assert check.checked == {'loss_x'} and not check.pending  # loss_zero: unchecked
