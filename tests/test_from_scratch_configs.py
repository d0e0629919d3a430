"""Models trained from scratch (the demo's, the tests') train every stage, with
BatchNorm normalising by batch statistics.

mmdet's ResNet defaults (``frozen_stages=1``, ``norm_eval=True``) are meant for an
ImageNet-initialised backbone; inherited by a from-scratch model they keep a random
stem frozen and BatchNorm at its initial statistics, and the model barely learns.
"""
import glob
import os.path as osp

import pytest
from mmengine.config import Config
from mmengine.registry import DefaultScope
from torch.nn.modules.batchnorm import _BatchNorm

import tst_mm  # noqa: F401
from tests.conftest import REPO
from tst_mm.distill.teacher import model_cfg as resolve_model_cfg

CONFIGS = sorted(glob.glob(osp.join(REPO, 'configs', 'demo', '*.py')) +
                 glob.glob(osp.join(REPO, 'tests', 'configs', '*.py')))


def _models(cfg: Config):
    model = cfg.model
    if model.type == 'TSTDistiller':
        return [('student', resolve_model_cfg(model.student)),
                ('teacher', resolve_model_cfg(model.teacher))]
    return [('model', resolve_model_cfg(model))]


def _scope(cfg: Config) -> str:
    return cfg.get('default_scope') or 'mmdet'


@pytest.mark.parametrize('path', CONFIGS, ids=lambda p: osp.relpath(p, REPO))
def test_from_scratch_backbones_train_every_stage(path):
    cfg = Config.fromfile(path, import_custom_modules=False)  # test plugins aside
    scope = _scope(cfg)
    if scope == 'mmdet':
        from mmdet.registry import MODELS
        from mmdet.utils import register_all_modules
    else:
        from mmseg.registry import MODELS
        from mmseg.utils import register_all_modules
    register_all_modules(init_default_scope=False)
    for role, model_cfg in _models(cfg):
        backbone = model_cfg['backbone']
        assert (backbone.get('init_cfg') or {}).get('type') != 'Pretrained' and \
            not model_cfg.get('pretrained'), f'{role} is not trained from scratch'
        with DefaultScope.overwrite_default_scope(scope):
            model = MODELS.build(model_cfg)
        model.train()
        frozen = [n for n, p in model.backbone.named_parameters() if not p.requires_grad]
        assert not frozen, f'{role}: frozen from-scratch parameters {frozen[:3]}'
        eval_norms = [n for n, m in model.named_modules()
                      if isinstance(m, _BatchNorm) and not m.training]
        assert not eval_norms, f'{role}: BatchNorm kept in eval mode {eval_norms[:3]}'
