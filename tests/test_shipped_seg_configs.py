"""The shipped Cityscapes TST configs build, offline, into what they promise.

The model-zoo teacher checkpoint is replaced by a local file holding the weights of a
teacher built from the teacher's own mmseg config, and the student's ImageNet init is
turned off: nothing is downloaded. One student step and one augmenter step on a small
Cityscapes-like batch check that the distill losses and the inverse task losses fit the
real architectures.
"""
import copy
import os.path as osp

import pytest
import torch
import yaml
from mmengine.config import Config
from mmengine.optim import OptimWrapperDict, build_optim_wrapper
from mmengine.registry import HOOKS, LOOPS, MODELS, PARAM_SCHEDULERS, DefaultScope
from mmengine.structures import PixelData

import tst_mm  # noqa: F401  (registers the TST components)
from tests.conftest import REPO
from tst_mm.distill.teacher import model_cfg as resolve_model_cfg
from tst_mm.engine import TSTIterBasedTrainLoop

MMSEG_CONFIGS = osp.join(osp.dirname(__import__('mmseg').__file__), '.mim', 'configs')
# config -> (teacher config in mmseg's model zoo, student config it builds on)
SEG_CONFIGS = {
    'pspnet_r101_r18_cityscapes.py': ('pspnet/pspnet_r101-d8_4xb2-80k_cityscapes-512x1024',
                                      'pspnet/pspnet_r18-d8_4xb2-80k_cityscapes-512x1024'),
    'deeplabv3_r101_r18_cityscapes.py': (
        'deeplabv3/deeplabv3_r101-d8_4xb2-80k_cityscapes-512x1024',
        'deeplabv3/deeplabv3_r18-d8_4xb2-80k_cityscapes-512x1024'),
}


def model_zoo_weights(name: str) -> str:
    """The checkpoint URL that mmseg's metafile lists for a model-zoo config."""
    folder, config = name.split('/')
    with open(osp.join(MMSEG_CONFIGS, folder, 'metafile.yaml')) as f:
        models = yaml.safe_load(f)['Models']
    return next(m['Weights'] for m in models if m['Name'] == config)


def _unscoped(cfg):
    """A config dict without the `_scope_` keys that `mmseg::` bases add."""
    if isinstance(cfg, dict):
        return {k: _unscoped(v) for k, v in cfg.items() if k != '_scope_'}
    if isinstance(cfg, (list, tuple)):
        return type(cfg)(_unscoped(v) for v in cfg)
    return cfg


@pytest.fixture(params=sorted(SEG_CONFIGS))
def seg_config(request):
    return request.param, Config.fromfile(osp.join(REPO, 'configs', 'tst', request.param))


def test_runtime_schedule_and_losses(seg_config):
    name, cfg = seg_config
    teacher, student = SEG_CONFIGS[name]
    assert cfg.default_scope == 'mmseg' and 'tst_mm' in cfg.custom_imports.imports
    assert cfg.model.type == 'TSTDistiller'
    assert cfg.model.teacher == f'mmseg::{teacher}.py'
    assert cfg.model.teacher_ckpt == model_zoo_weights(teacher)
    # The student is mmseg's own model and data, ImageNet-initialised, 512 x 1024 crops.
    expected_student = Config.fromfile(osp.join(MMSEG_CONFIGS, f'{student}.py'))
    assert _unscoped(cfg.model.student) == _unscoped(expected_student.model)
    assert cfg.model.student.pretrained == 'open-mmlab://resnet18_v1c'
    assert cfg.data_preprocessor.size == (512, 1024)
    assert cfg.train_dataloader.batch_size == 2  # mmseg's 4xb2
    assert cfg.model_wrapper_cfg.type == 'TSTDistributedDataParallel'

    with LOOPS.switch_scope_and_registry(cfg.train_cfg.get('_scope_')) as registry:
        assert registry.get(cfg.train_cfg.type) is TSTIterBasedTrainLoop
    # The reference's "epochs" 0, 6, 12 at 372 iterations per epoch (2975 images, 4
    # GPUs x 2), one pass (372 augmenter steps) each; mmseg's 80k schedule otherwise.
    assert cfg.train_cfg.max_iters == 80000 and cfg.train_cfg.val_interval == 8000
    assert cfg.train_cfg.augment_iters == [0, 2232, 4464]
    assert cfg.train_cfg.augment_steps == 372
    assert set(cfg.param_scheduler) == {'student', 'augmenter'}
    assert cfg.param_scheduler.student[0].type == 'PolyLR'
    assert cfg.param_scheduler.student[0].end == 80000

    losses = cfg.model.distill_losses
    # the per-pixel KL (the reference's 'batchmean' sums it over the logits)
    assert losses.loss_kd_decode == dict(type='KLDivergence', student='decode_head.conv_seg',
                                         teacher='decode_head.conv_seg', tau=1.0,
                                         reduction='pixelmean', loss_weight=1.5)
    assert losses.loss_kd_aux == dict(type='KLDivergence',
                                      student='auxiliary_head.conv_seg',
                                      teacher='auxiliary_head.conv_seg', tau=1.0,
                                      reduction='pixelmean', loss_weight=0.5)
    assert cfg.tst_seg_cwd_losses.loss_cwd_decode.type == 'ChannelWiseDivergence'
    for hook in cfg.custom_hooks:
        HOOKS.build(copy.deepcopy(hook))


def _offline(cfg: Config, tmp_path) -> dict:
    """A local teacher checkpoint and no ImageNet weights; returns the teacher's
    state dict that was written."""
    teacher_cfg = resolve_model_cfg(cfg.model.teacher)
    teacher_cfg['pretrained'] = None
    with DefaultScope.overwrite_default_scope('mmseg'):
        teacher = MODELS.build(teacher_cfg)
    state = {key: value.clone() for key, value in teacher.state_dict().items()}
    ckpt = tmp_path / 'teacher.pth'
    torch.save({'state_dict': state, 'meta': {}}, ckpt)
    cfg.model.teacher_ckpt = str(ckpt)
    cfg.model.student.pretrained = None
    return state


def _batch(num_classes: int = 19) -> dict:
    """Two 64 x 96 BGR images with Cityscapes train ids and some ignored pixels."""
    from mmseg.structures import SegDataSample
    torch.manual_seed(0)
    inputs, samples = [], []
    for _ in range(2):
        inputs.append(torch.randint(0, 256, (3, 64, 96), dtype=torch.uint8))
        label = torch.randint(0, num_classes, (1, 64, 96))
        label[:, :8] = 255
        sample = SegDataSample(metainfo=dict(img_shape=(64, 96), ori_shape=(64, 96)))
        sample.gt_sem_seg = PixelData(data=label)
        samples.append(sample)
    return dict(inputs=inputs, data_samples=samples)


def test_builds_offline_and_takes_both_steps(seg_config, tmp_path):
    _, cfg = seg_config
    expected = _offline(cfg, tmp_path)
    model_cfg = copy.deepcopy(cfg.model)
    # As the Runner does: the config's top-level (normalising) data_preprocessor.
    model_cfg.setdefault('data_preprocessor', copy.deepcopy(cfg.data_preprocessor))
    # Small crops for a CPU step; everything else as shipped. The student's own
    # preprocessor pads its batches, as in plain mmseg.
    model_cfg.data_preprocessor.size = (64, 96)
    if model_cfg.student.get('data_preprocessor'):
        model_cfg.student.data_preprocessor.size = (64, 96)
    with DefaultScope.overwrite_default_scope('mmseg'):
        model = MODELS.build(model_cfg)
        model.init_weights()  # as the Runner: the loaded teacher must survive it
        optim_wrapper = build_optim_wrapper(model, copy.deepcopy(cfg.optim_wrapper))
        for scheduler in cfg.param_scheduler.student:
            PARAM_SCHEDULERS.build(dict(scheduler, optimizer=optim_wrapper['student']))
    assert isinstance(optim_wrapper, OptimWrapperDict)
    assert not model.data_preprocessor._enable_normalize  # the augmenter sees pixels

    teacher = model.teacher.state_dict()
    assert sorted(teacher) == sorted(expected)
    assert all(torch.equal(teacher[key], value) for key, value in expected.items())
    assert not model.teacher.training
    assert not any(p.requires_grad for p in model.teacher.parameters())
    student_ids = {id(p) for g in optim_wrapper['student'].optimizer.param_groups
                   for p in g['params']}
    assert student_ids == {id(p) for p in model.student.parameters()}

    model.train()
    student_before = copy.deepcopy(model.student.state_dict())
    augmenter_before = copy.deepcopy(model.augmenter.state_dict())
    log_vars = model.train_step(_batch(), optim_wrapper)
    for name in cfg.model.distill_losses:
        assert torch.isfinite(log_vars[f'distill.{name}']), name
    assert any(not torch.equal(v, model.student.state_dict()[k])
               for k, v in student_before.items() if v.is_floating_point())
    assert all(torch.equal(v, model.augmenter.state_dict()[k])
               for k, v in augmenter_before.items())

    student_before = copy.deepcopy(model.student.state_dict())
    log_vars = model.augment_step(_batch(), optim_wrapper)
    for key in ('augment.teacher.decode.loss_ce', 'augment.student_inverse.decode.loss_ce',
                'augment.student_inverse.aux.loss_ce'):
        assert torch.isfinite(log_vars[key]), key
    changed = [k for k, v in student_before.items()
               if not torch.equal(v, model.student.state_dict()[k])]
    assert not changed, changed  # weights, BatchNorm statistics and counters stay
    assert any(not torch.equal(v, model.augmenter.state_dict()[k])
               for k, v in augmenter_before.items())
    assert all(torch.equal(value, model.teacher.state_dict()[key])
               for key, value in expected.items())


def test_readme_mmseg_snippet_matches_the_shipped_config(tmp_path):
    """README's "Adding TST to any existing mmseg config" builds the same run as
    configs/tst/pspnet_r101_r18_cityscapes.py but for the distillation losses (chosen
    automatically), so the two cannot drift apart."""
    with open(osp.join(REPO, 'README.md')) as f:
        section = f.read().split('### Adding TST to any existing mmseg config', 1)[1]
    snippet = section.split('```python\n', 1)[1].split('```', 1)[0]
    (tmp_path / 'readme_tst.py').write_text(snippet)
    readme = Config.fromfile(str(tmp_path / 'readme_tst.py'))
    shipped = Config.fromfile(
        osp.join(REPO, 'configs', 'tst', 'pspnet_r101_r18_cityscapes.py'))
    for key in ('custom_imports', 'train_cfg', 'optim_wrapper', 'param_scheduler',
                'model_wrapper_cfg', 'custom_hooks', 'train_dataloader',
                'data_preprocessor'):
        assert _unscoped(readme[key]) == _unscoped(shipped[key]), key
    # No module paths: the automatic choice picks the shipped losses' modules
    # (tests/test_shipped_configs.py::test_automatic_distillation_chooses_...).
    assert 'distill_losses' not in snippet
    expected = _unscoped(shipped.model)
    del expected['distill_losses']
    assert _unscoped(readme.model) == expected
