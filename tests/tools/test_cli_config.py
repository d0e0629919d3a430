"""Config rewriting done by the command-line flags."""
from mmengine.config import Config

from tst_mm.utils import enable_amp


def test_amp_switches_a_single_wrapper():
    cfg = Config(dict(optim_wrapper=dict(type='OptimWrapper', optimizer=dict(type='SGD'))))
    enable_amp(cfg)
    assert cfg.optim_wrapper.type == 'AmpOptimWrapper'
    assert cfg.optim_wrapper.loss_scale == 'dynamic'


def test_amp_switches_every_sub_wrapper_of_a_tst_config():
    cfg = Config(dict(optim_wrapper=dict(
        constructor='TSTOptimWrapperConstructor',
        student=dict(type='OptimWrapper', optimizer=dict(type='SGD', lr=0.01)),
        augmenter=dict(optimizer=dict(type='SGD', lr=0.01), clip_grad=dict(max_norm=20)))))
    enable_amp(cfg)
    assert cfg.optim_wrapper.student.type == 'AmpOptimWrapper'
    assert cfg.optim_wrapper.augmenter.type == 'AmpOptimWrapper'
    assert cfg.optim_wrapper.augmenter.clip_grad == dict(max_norm=20)
    assert 'type' not in cfg.optim_wrapper  # the constructor stays in charge
