"""TSTOptimWrapperConstructor builds each wrapper as mmengine builds a single one."""
import copy
import os.path as osp

import torch
from mmengine.optim import DefaultOptimWrapperConstructor, build_optim_wrapper
from mmengine.registry import OPTIM_WRAPPER_CONSTRUCTORS, DefaultScope, MODELS
from mmengine.config import Config

import tst_mm  # noqa: F401
from tests.conftest import TEST_CONFIGS

BUILT_WITH = []


@OPTIM_WRAPPER_CONSTRUCTORS.register_module(force=True)
class RecordingConstructor(DefaultOptimWrapperConstructor):
    """A student's own constructor (as mmdet's layer-wise lr decay for ConvNeXt)."""

    def __call__(self, model):
        BUILT_WITH.append((type(model).__name__, self.paramwise_cfg))
        return super().__call__(model)


def test_a_wrapper_keeps_its_own_constructor_and_paramwise_cfg():
    cfg = Config.fromfile(osp.join(TEST_CONFIGS, 'tst_retinanet_tiny.py'))
    with DefaultScope.overwrite_default_scope('mmdet'):
        model = MODELS.build(copy.deepcopy(cfg.model))
    optim = copy.deepcopy(cfg.optim_wrapper)
    optim.student.update(constructor='RecordingConstructor',
                         paramwise_cfg=dict(bias_lr_mult=2.0))
    wrappers = build_optim_wrapper(model, optim)
    assert BUILT_WITH == [('RetinaNet', dict(bias_lr_mult=2.0))]
    lrs = {group['lr'] for group in wrappers['student'].optimizer.param_groups}
    assert lrs == {0.01, 0.02}  # the bias groups at twice the lr
    assert isinstance(wrappers['augmenter'].optimizer, torch.optim.SGD)
