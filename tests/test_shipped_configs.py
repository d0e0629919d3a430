"""Every shipped TST config in configs/tst (mmdet and mmseg) builds, offline, into what
it promises.

The model-zoo teacher checkpoint is replaced by a local file holding the weights of a
teacher built from the teacher's own config, and the student's ImageNet init is turned
off: nothing is downloaded. One student step on a small batch (SyncBN reverted to BN
for the CPU) checks that the distill losses fit the real architectures.
"""
import copy
import glob
import os.path as osp

import pytest
import torch
from mmengine.config import Config
from mmengine.model import revert_sync_batchnorm
from mmengine.optim import OptimWrapperDict, build_optim_wrapper
from mmengine.registry import (HOOKS, LOOPS, MODELS, PARAM_SCHEDULERS,
                               DefaultScope)

import tst_mm  # noqa: F401  (registers the TST components)
from tests.conftest import REPO
from tst_mm.distill.teacher import model_cfg as resolve_model_cfg
from tst_mm.engine import TSTEpochBasedTrainLoop, TSTIterBasedTrainLoop

CONFIGS = sorted(glob.glob(osp.join(REPO, 'configs', 'tst', '*.py')))
MODEL_ZOO = 'https://download.openmmlab.com/'
IMAGE = (64, 128)  # (h, w) of the images of the one student step


def test_configs_are_shipped():
    names = {osp.basename(path) for path in CONFIGS}
    assert {'retinanet_r101_r50_coco.py', 'retinanet_x101_r50_coco.py',
            'faster-rcnn_r101_r50_coco.py', 'mask-rcnn_r101_r50_coco.py',
            'cascade-rcnn_x101_faster-rcnn_r50_coco.py'} <= names


@pytest.fixture(params=CONFIGS, ids=lambda path: osp.basename(path))
def cfg(request) -> Config:
    return Config.fromfile(request.param)


def test_runtime_is_tst(cfg):
    assert cfg.model.type == 'TSTDistiller'
    assert 'tst_mm' in cfg.custom_imports.imports
    assert cfg.model_wrapper_cfg.type == 'TSTDistributedDataParallel'
    # Resolve the loop type the way the Runner does, in the config's scope.
    with LOOPS.switch_scope_and_registry(cfg.train_cfg.get('_scope_')) as registry:
        loop = registry.get(cfg.train_cfg.type)
    assert loop in (TSTEpochBasedTrainLoop, TSTIterBasedTrainLoop)
    assert cfg.optim_wrapper.constructor == 'TSTOptimWrapperConstructor'
    for hook in cfg.get('custom_hooks', []):
        with HOOKS.switch_scope_and_registry(hook.get('_scope_')) as registry:
            assert registry.build(copy.deepcopy(hook)) is not None, hook
    assert set(cfg.param_scheduler) == {'student', 'augmenter'}
    # The real teacher comes from the model zoo; the student stays ImageNet-initialised
    # (mmdet: backbone.init_cfg, mmseg: the model's `pretrained`).
    assert cfg.model.teacher_ckpt.startswith(MODEL_ZOO)
    student = cfg.model.student
    assert student.get('pretrained') or \
        (student.backbone.get('init_cfg') or {}).get('type') == 'Pretrained'


def _no_pretrained(model_cfg: dict) -> dict:
    """``model_cfg`` without ImageNet weights (mmdet and mmseg spellings)."""
    if 'pretrained' in model_cfg:
        model_cfg['pretrained'] = None
    model_cfg['backbone']['init_cfg'] = None
    model_cfg['backbone'].pop('pretrained', None)
    return model_cfg


def _offline(cfg: Config, tmp_path) -> dict:
    """The model config with a local teacher checkpoint and no download anywhere.

    Returns the teacher's state dict that was written to the checkpoint.
    """
    teacher_cfg = _no_pretrained(resolve_model_cfg(cfg.model.teacher))
    with DefaultScope.overwrite_default_scope(cfg.default_scope):
        teacher = MODELS.build(teacher_cfg)
    state = {key: value.clone() for key, value in teacher.state_dict().items()}
    ckpt = tmp_path / 'teacher.pth'
    torch.save({'state_dict': state, 'meta': {}}, ckpt)
    cfg.model.teacher_ckpt = str(ckpt)
    _no_pretrained(cfg.model.student)
    # mmseg pads every batch to the crop size: keep the one student step small.
    preprocessor = cfg.model.student.get('data_preprocessor') or {}
    if preprocessor.get('size'):
        preprocessor['size'] = IMAGE
    return state


@pytest.mark.parametrize('cfg', [p for p in CONFIGS if p.endswith('_coco.py')],
                         ids=osp.basename, indirect=True)
def test_builds_offline_and_trains_one_step(cfg, tmp_path):
    # (the Cityscapes configs get the same and more in test_shipped_seg_configs.py)
    expected = _offline(cfg, tmp_path)
    rcnn = cfg.model.student.get('train_cfg', {}).get('rcnn')
    if rcnn is not None:  # two-stage: 64 sampled RoIs per image, not 512, on the CPU
        rcnn.sampler.num = 64
    with DefaultScope.overwrite_default_scope(cfg.default_scope):
        model = revert_sync_batchnorm(MODELS.build(copy.deepcopy(cfg.model)))
        # The Runner initialises the whole model: the loaded teacher must survive it.
        model.init_weights()

        teacher = model.teacher.state_dict()
        assert sorted(teacher) == sorted(expected)
        for key, value in expected.items():
            assert torch.equal(teacher[key], value), key
        assert not model.teacher.training
        assert not any(p.requires_grad for p in model.teacher.parameters())

        student_modules = dict(model.student.named_modules())
        teacher_modules = dict(model.teacher.named_modules())
        assert set(model.loss_paths) == set(cfg.model.distill_losses)
        for student_path, teacher_path in model.loss_paths.values():
            assert student_path in student_modules and teacher_path in teacher_modules

        optim_wrapper = build_optim_wrapper(model, copy.deepcopy(cfg.optim_wrapper))
        assert isinstance(optim_wrapper, OptimWrapperDict)
        assert set(optim_wrapper.keys()) == {'student', 'augmenter'}
        _check_optimizers(cfg, model, optim_wrapper)
        for scheduler in cfg.param_scheduler.student:
            PARAM_SCHEDULERS.build(dict(scheduler, optimizer=optim_wrapper['student']))

        _one_student_step(cfg, model, optim_wrapper)


def _check_optimizers(cfg, model, optim_wrapper):
    def ids(wrapper):
        return {id(p) for g in wrapper.optimizer.param_groups for p in g['params']}

    student, augmenter = ids(optim_wrapper['student']), ids(optim_wrapper['augmenter'])
    # mmengine's constructor also lists frozen parameters (frozen_stages); SGD skips them.
    expected = {id(p) for p in model.student.parameters()}
    expected |= {id(p) for p in model.distill_losses.parameters()}
    assert student == expected
    assert augmenter == {id(p) for p in model.augmenter.parameters()}
    assert not {id(p) for p in model.teacher.parameters()} & (student | augmenter)

    lr = cfg.optim_wrapper.student.optimizer.lr
    assert optim_wrapper['student'].optimizer.param_groups[0]['lr'] == lr
    sgd = optim_wrapper['augmenter'].optimizer
    assert isinstance(sgd, torch.optim.SGD)
    assert sgd.defaults['lr'] == 0.01 and sgd.defaults['momentum'] == 0.9
    assert optim_wrapper['augmenter'].clip_grad_kwargs['max_norm'] == 20


def _one_student_step(cfg, model, optim_wrapper):
    """One student step on two small images: the distill losses are finite and the
    student (not the teacher) changes."""
    torch.manual_seed(0)
    data = _batch(cfg.default_scope, model.student)
    teacher_before = copy.deepcopy(model.teacher.state_dict())
    student_before = copy.deepcopy(model.student.state_dict())
    model.train()
    log_vars = model.train_step(data, optim_wrapper)
    for name in cfg.model.distill_losses:
        assert torch.isfinite(log_vars[f'distill.{name}']), name
    assert all(torch.equal(v, model.teacher.state_dict()[k])
               for k, v in teacher_before.items())
    assert any(not torch.equal(v, model.student.state_dict()[k])
               for k, v in student_before.items() if v.is_floating_point())


def test_readme_snippet_is_the_shipped_retinanet_config(tmp_path):
    """README's "Adding TST to any existing mmdet config" builds the same run as
    configs/tst/retinanet_r101_r50_coco.py but for the distillation losses, which it
    leaves to the automatic choice, so the two cannot drift apart."""
    with open(osp.join(REPO, 'README.md')) as f:
        section = f.read().split('### Adding TST to any existing mmdet config', 1)[1]
    snippet = section.split('```python\n', 1)[1].split('```', 1)[0]
    (tmp_path / 'readme_tst.py').write_text(snippet)
    readme = Config.fromfile(str(tmp_path / 'readme_tst.py'))
    shipped = Config.fromfile(
        osp.join(REPO, 'configs', 'tst', 'retinanet_r101_r50_coco.py'))
    for key in ('custom_imports', 'train_cfg', 'optim_wrapper', 'param_scheduler',
                'model_wrapper_cfg', 'custom_hooks', 'train_dataloader'):
        assert readme[key] == shipped[key], key
    # The recipe names no module path: its losses are chosen automatically, and those
    # pick the shipped config's modules (test_automatic_distillation_chooses_...).
    assert 'distill_losses' not in snippet
    expected = shipped.model.to_dict()
    del expected['distill_losses']
    assert readme.model.to_dict() == expected


def _batch(scope: str, student) -> dict:
    """Two small images with random annotations, as the dataloader gives them."""
    if scope == 'mmdet':
        from mmdet.testing import demo_mm_inputs
        head = student.bbox_head if hasattr(student, 'bbox_head') else \
            student.roi_head.bbox_head
        with_mask = getattr(getattr(student, 'roi_head', None), 'with_mask', False)
        return demo_mm_inputs(batch_size=2, image_shapes=[(3, *IMAGE)] * 2,
                              num_items=[2, 1], num_classes=head.num_classes,
                              use_box_type=True, with_mask=with_mask)
    assert scope == 'mmseg', f'no test batch for default_scope {scope!r}'
    from mmengine.structures import PixelData
    from mmseg.structures import SegDataSample
    inputs, samples = [], []
    for _ in range(2):
        inputs.append(torch.randint(0, 256, (3, *IMAGE), dtype=torch.uint8))
        labels = torch.randint(0, student.decode_head.num_classes, (1, *IMAGE))
        samples.append(SegDataSample(
            gt_sem_seg=PixelData(data=labels),
            metainfo=dict(img_shape=IMAGE, ori_shape=IMAGE, pad_shape=IMAGE)))
    return dict(inputs=inputs, data_samples=samples)


def test_a_shipped_coco_student_gets_to_its_imagenet_download(tmp_path, monkeypatch):
    """torchvision is installed: the student's `torchvision://resnet50` init reaches the
    download, and offline that ends in an error naming the file and the fix."""
    cfg = Config.fromfile(osp.join(REPO, 'configs', 'tst', 'retinanet_r101_r50_coco.py'))
    teacher_cfg = _no_pretrained(resolve_model_cfg(cfg.model.teacher))
    with DefaultScope.overwrite_default_scope(cfg.default_scope):
        teacher = MODELS.build(teacher_cfg)
        torch.save({'state_dict': teacher.state_dict()}, tmp_path / 'teacher.pth')
        cfg.model.teacher_ckpt = str(tmp_path / 'teacher.pth')
        model = MODELS.build(copy.deepcopy(cfg.model))
    # Offline: no cached weights, and every connection refused at once.
    monkeypatch.setenv('TORCH_HOME', str(tmp_path / 'torch'))
    for var in ('https_proxy', 'HTTPS_PROXY', 'http_proxy', 'HTTP_PROXY'):
        monkeypatch.setenv(var, 'http://127.0.0.1:9')
    monkeypatch.delenv('no_proxy', raising=False)
    monkeypatch.delenv('NO_PROXY', raising=False)
    with pytest.raises(RuntimeError) as error:
        model.init_weights()
    message = str(error.value)
    assert "model.student.backbone.init_cfg.checkpoint='torchvision://resnet50'" in message
    assert 'https://download.pytorch.org/models/resnet50' in message
    assert 'give the local path' in message


# What automatic distillation adds to, or writes otherwise than, the shipped pairs'
# hand-written losses (docs/configs.md, "Automatic distillation"): the RPN's scores
# where the two RPNs match, and PKD (standardised features) on the necks instead of
# the plain MSE, including for the Cascade pair whose reference distils RoIs only.
AUTO_EXTRAS = {'loss_kd_rpn', 'loss_pkd_neck'}


@pytest.mark.parametrize('cfg', CONFIGS, ids=osp.basename, indirect=True)
def test_automatic_distillation_chooses_the_shipped_pairs_modules(cfg):
    from tst_mm.distill.auto import choose_distillation
    with DefaultScope.overwrite_default_scope(cfg.default_scope):
        student = revert_sync_batchnorm(MODELS.build(_no_pretrained(cfg.model.student)))
        teacher = revert_sync_batchnorm(MODELS.build(
            _no_pretrained(resolve_model_cfg(cfg.model.teacher))))
        choice = choose_distillation(student, teacher, cfg.model.get('teacher_inputs'))
    chosen = {(c['student'], c['teacher']): c for c in choice.losses.values()}
    for name, written in cfg.model.distill_losses.items():
        auto = chosen.get((written.student, written.teacher))
        assert auto is not None, (name, choice.table())
        if written.type == 'FeatureMimic':  # the neck: PKD instead of the MSE
            assert auto['type'] == 'FeatureMimic' and auto['normalize'], name
        else:
            assert auto['type'] == written.type, name
            assert auto.get('reduction') == written.get('reduction', 'batchmean'), name
            assert auto.get('loss_weight', 1.0) == written.get('loss_weight', 1.0), name
    written_modules = {(w.student, w.teacher) for w in cfg.model.distill_losses.values()}
    extras = {n for n, c in choice.losses.items()
              if (c['student'], c['teacher']) not in written_modules}
    assert extras <= AUTO_EXTRAS, choice.table()
    assert not choice.teacher_inputs  # the config's own are used
