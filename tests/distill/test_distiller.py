"""TSTDistiller built in-process: preprocessing per model, checks and clear errors."""
import copy
import math
import os
import os.path as osp

import pytest
import torch
from mmdet.models.dense_heads import SSDHead
from mmdet.registry import MODELS as MMDET_MODELS
from mmengine.config import Config
from mmengine.registry import DefaultScope, MODELS
from mmengine.runner import Runner

import tst_mm  # noqa: F401
from tests.conftest import REPO, TEST_CONFIGS

CAFFE = dict(type='DetDataPreprocessor', mean=[103.530, 116.280, 123.675],
             std=[1.0, 1.0, 1.0], bgr_to_rgb=False, pad_size_divisor=32)


def tiny_cfg() -> Config:
    cfg = Config.fromfile(osp.join(TEST_CONFIGS, 'tst_retinanet_tiny.py'))
    # `{{_base_.model}}` gives student and teacher one shared dict: edit them apart.
    cfg.model.teacher = copy.deepcopy(cfg.model.teacher)
    return cfg


def build(model_cfg):
    with DefaultScope.overwrite_default_scope('mmdet'):
        return MODELS.build(model_cfg)


def one_batch(coco_digits):
    cfg = tiny_cfg()
    dataloader = copy.deepcopy(cfg.train_dataloader)
    dataloader.dataset.data_root = coco_digits
    dataloader.sampler = dict(type='DefaultSampler', shuffle=False)
    with DefaultScope.overwrite_default_scope('mmdet'):
        return next(iter(Runner.build_dataloader(dataloader)))


def test_each_model_gets_its_own_preprocessing(coco_digits):
    """A caffe-style BGR teacher and a pytorch-style RGB student see exactly what their
    own mmdet data preprocessors would give them (identity augmentation)."""
    cfg = tiny_cfg()
    cfg.model.teacher.data_preprocessor = CAFFE
    distiller = build(cfg.model)
    data = one_batch(coco_digits)
    pixels = distiller.data_preprocessor(copy.deepcopy(data), True)
    assert pixels['inputs'].max() > 1.5  # still 0-255 pixels
    for model, normalizer in ((distiller.teacher, distiller.teacher_normalizer),
                              (distiller.student, distiller.student_normalizer)):
        expected = model.data_preprocessor(copy.deepcopy(data), True)['inputs']
        got = normalizer(pixels['inputs'], pixels['data_samples'])
        assert got.shape == expected.shape
        torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-4)
    assert distiller.teacher_normalizer.to_bgr and not distiller.student_normalizer.to_bgr


def test_teacher_is_frozen_loaded_and_not_saved(tmp_path):
    cfg = tiny_cfg()
    teacher = build(cfg.model.teacher)
    ckpt = tmp_path / 'teacher.pth'
    torch.save({'state_dict': teacher.state_dict(), 'meta': {}}, ckpt)
    cfg.model.teacher_ckpt = str(ckpt)
    distiller = build(cfg.model)
    for key, value in teacher.state_dict().items():
        torch.testing.assert_close(distiller.teacher.state_dict()[key], value)
    assert not any(p.requires_grad for p in distiller.teacher.parameters())
    distiller.train()
    assert not distiller.teacher.training and distiller.student.training
    distiller.init_weights()  # the Runner does this: must not touch the loaded teacher
    torch.testing.assert_close(distiller.teacher.state_dict(), teacher.state_dict())
    state = distiller.state_dict()
    assert not any(k.startswith('teacher.') for k in state)
    assert any(k.startswith('augmenter.') for k in state)
    distiller.load_state_dict(state, strict=True)  # teacher keys are not "missing"


def test_teacher_checkpoint_of_another_architecture_is_refused(tmp_path):
    """A ResNet-34 checkpoint for a ResNet-18 teacher used to load partially (strict=
    False) and distil from a half-random teacher; now it names the keys and the fix."""
    cfg = tiny_cfg()
    deeper = copy.deepcopy(cfg.model.teacher)
    deeper.backbone.depth = 34
    ckpt = tmp_path / 'r34.pth'
    torch.save({'state_dict': build(deeper).state_dict()}, ckpt)
    cfg.model.teacher_ckpt = str(ckpt)
    with pytest.raises(ValueError) as err:
        build(cfg.model)
    message = str(err.value)
    assert 'r34.pth' in message and 'does not fit the teacher (RetinaNet)' in message
    assert 'checkpoint keys the teacher does not have: backbone.layer1.2.' in message
    assert 'more)' in message  # only the first few keys are quoted
    assert 'the config this checkpoint was trained with' in message

    # Wider stem: same keys, other shapes.
    wider = copy.deepcopy(cfg.model.teacher)
    wider.backbone.base_channels = 16
    wider.neck.in_channels = [16, 32, 64, 128]
    torch.save({'state_dict': build(wider).state_dict()}, ckpt)
    with pytest.raises(ValueError, match=r'shape mismatches.*backbone\.conv1\.weight '
                       r'\(16, 3, 7, 7\) vs \(8, 3, 7, 7\)'):
        build(cfg.model)


def test_teacher_checkpoint_harmless_differences_and_tst_checkpoints(tmp_path):
    cfg = tiny_cfg()
    teacher = build(cfg.model.teacher)
    state = {f'module.{k}': v for k, v in teacher.state_dict().items()
             if not k.endswith('num_batches_tracked')}  # an old, DataParallel checkpoint
    state['data_preprocessor.mean'] = torch.zeros(3, 1, 1)
    ckpt = tmp_path / 'old.pth'
    torch.save({'state_dict': state}, ckpt)
    cfg.model.teacher_ckpt = str(ckpt)
    distiller = build(cfg.model)
    torch.testing.assert_close(distiller.teacher.backbone.conv1.weight,
                               teacher.backbone.conv1.weight)

    # A TSTDistiller checkpoint given as the teacher: say how to extract the student.
    torch.save({'state_dict': distiller.state_dict()}, ckpt)
    with pytest.raises(ValueError, match='teacher keys missing.*TSTDistiller checkpoint.*'
                       'extract_student.py'):
        build(cfg.model)


def test_missing_teacher_checkpoint_fails_before_training(workspace):
    proc = run_failing(['--cfg-options', 'model.teacher_ckpt=nowhere/teacher.pth'],
                       workspace)
    assert "teacher_ckpt 'nowhere/teacher.pth' does not exist" in proc.stdout
    assert 'Iter(train)' not in proc.stdout


def run_failing(extra, cwd):
    import subprocess
    import sys
    proc = subprocess.run([sys.executable, osp.join(REPO, 'tools', 'train.py'),
                           osp.join(TEST_CONFIGS, 'tst_retinanet_tiny.py'), '--work-dir',
                           str(cwd / 'failed'), *extra], cwd=str(cwd), text=True,
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    assert proc.returncode != 0
    return proc


def test_unknown_recorder_path_names_the_nearest():
    cfg = tiny_cfg()
    cfg.model.distill_losses.loss_kd_cls.student = 'bbox_head.retina_clss'
    with pytest.raises(ValueError, match="did you mean 'bbox_head.retina_cls'"):
        build(cfg.model)


def test_mismatched_class_counts():
    cfg = tiny_cfg()
    cfg.model.teacher.bbox_head.num_classes = 80
    with pytest.raises(ValueError, match='num_classes=10 but teacher.*num_classes=80'):
        build(cfg.model)


def test_the_student_starts_as_the_plain_student_config_would():
    """Teacher, augmenter and adapters are built on a side random stream: under the same
    seed the distiller's student gets the plain student's initial weights."""
    from mmengine.runner import set_random_seed
    cfg = tiny_cfg()
    set_random_seed(0)
    plain = build(cfg.model.student)
    plain.init_weights()
    set_random_seed(0)
    distiller = build(cfg.model)
    distiller.init_weights()
    torch.testing.assert_close(distiller.student.state_dict(), plain.state_dict(),
                               rtol=0, atol=0)


def test_no_teacher_is_the_augmentation_control(coco_digits):
    cfg = tiny_cfg()
    cfg.model.teacher = None
    with pytest.raises(ValueError, match='teacher=None.*no distill_losses'):
        build(cfg.model)
    cfg.model.distill_losses = None
    model = build(cfg.model)
    assert model.teacher is None
    from mmengine.optim import OptimWrapper, OptimWrapperDict
    optim = OptimWrapperDict(
        student=OptimWrapper(torch.optim.SGD(model.student.parameters(), lr=0.01)),
        augmenter=OptimWrapper(torch.optim.SGD(model.augmenter.parameters(), lr=0.01)))
    log = model.train_step(one_batch(coco_digits), optim)
    assert not any(key.startswith('distill') for key in log)
    with pytest.raises(RuntimeError, match="teacher=None: the augmenter's objective"):
        model.augment_step(one_batch(coco_digits), optim)


def test_unsupported_task_loss_is_named_at_build():
    cfg = tiny_cfg()
    # LVIS's equalization loss (EQL v2): no inverse yet.
    cfg.model.student.bbox_head.loss_cls = dict(type='EQLV2Loss', num_classes=10)
    with pytest.raises(NotImplementedError, match='EQLV2Loss.*divergence'):
        build(cfg.model)
    cfg.model.augment_loss_weights = dict(student_inverse=0, divergence=1)
    # (a teacher of the same layout: EQL v2 scores no background channel)
    cfg.model.teacher.bbox_head.loss_cls = cfg.model.student.bbox_head.loss_cls
    build(cfg.model)  # the divergence term needs no inverse


def test_distill_loss_names_and_fields_are_checked():
    cfg = tiny_cfg()
    cfg.model.distill_losses = dict(kd_cls=cfg.model.distill_losses.loss_kd_cls)
    with pytest.raises(ValueError, match="must contain 'loss'"):
        build(cfg.model)
    cfg = tiny_cfg()
    del cfg.model.distill_losses.loss_kd_cls['teacher']
    with pytest.raises(ValueError, match=r"needs \['teacher'\]"):
        build(cfg.model)


def test_checkpoint_layout_is_the_same_with_and_without_ddp(tmp_path):
    """A checkpoint written under TSTDistributedDataParallel loads into a single-process
    distiller (and back) with every key matched: no `student.module.` prefix."""
    import torch.distributed as dist
    from mmengine.runner.checkpoint import load_state_dict as mmengine_load_state_dict
    from tst_mm.engine import TSTDistributedDataParallel
    from tests.conftest import free_port
    os.environ.update(MASTER_ADDR='127.0.0.1', MASTER_PORT=str(free_port()), RANK='0',
                      WORLD_SIZE='1')
    dist.init_process_group('gloo')
    try:
        wrapped = TSTDistributedDataParallel(build(tiny_cfg().model)).module
        single = build(tiny_cfg().model)
        state = wrapped.state_dict()
        assert not any('.module.' in key for key in state)
        assert single.load_state_dict(state, strict=True)
        assert wrapped.load_state_dict(single.state_dict(), strict=True)
        torch.testing.assert_close(single.student.state_dict(),
                                   wrapped.student.module.state_dict())
        # an older layout with the wrapper's prefix still loads
        legacy = {k.replace('student.', 'student.module.', 1): v for k, v in state.items()}
        assert single.load_state_dict(legacy, strict=True)
        # mmengine's loader (--resume, load_from) skips the wrappers; it must find every
        # key too (it used to find none of the student's under DDP and say so only as a
        # warning, so a resumed multi-process run restarted the student from scratch).
        for checkpoint in (single.state_dict(), legacy):
            fresh = TSTDistributedDataParallel(build(tiny_cfg().model))
            mmengine_load_state_dict(fresh, checkpoint, strict=True)
            torch.testing.assert_close(fresh.module.student.module.state_dict(),
                                       single.student.state_dict())
    finally:
        dist.destroy_process_group()


def _ssd_student(cfg, head_type='SSDHead'):
    return dict(
        type='SingleStageDetector', backbone=cfg.model.student.backbone,
        neck=cfg.model.student.neck, data_preprocessor=cfg.model.student.data_preprocessor,
        bbox_head=dict(type=head_type, num_classes=10, in_channels=(16, ) * 5,
                       anchor_generator=dict(type='SSDAnchorGenerator', scale_major=False,
                                             input_size=300, strides=[8, 16, 32, 64, 128],
                                             ratios=[[2]] * 5, basesize_ratio_range=(
                                                 0.15, 0.9)),
                       bbox_coder=dict(type='DeltaXYWHBBoxCoder',
                                       target_means=[0.0] * 4,
                                       target_stds=[0.1, 0.1, 0.2, 0.2])),
        train_cfg=dict(assigner=dict(type='MaxIoUAssigner', pos_iou_thr=0.5,
                                     neg_iou_thr=0.5, min_pos_iou=0.0),
                       sampler=dict(type='PseudoSampler'), smoothl1_beta=1.0,
                       allowed_border=-1, pos_weight=-1, neg_pos_ratio=3, debug=False))


@MMDET_MODELS.register_module(force=True)
class SSDHeadWithOwnLoss(SSDHead):
    """A user's SSD head: its loss methods may compute other losses inline."""


def test_a_student_with_inline_losses_is_inverted_or_named_at_build(coco_digits):
    """mmdet's SSD computes its losses inline (no `loss_*` module): tst_mm inverts
    them (tst_mm.distill.inline_inverses); the first augment step checks that every loss
    it returns changed. A subclass of SSDHead is not assumed to compute the same."""
    from tst_mm.engine import TSTOptimWrapperConstructor
    cfg = tiny_cfg()
    cfg.model.student = _ssd_student(cfg)
    cfg.model.teacher = copy.deepcopy(cfg.model.student)
    cfg.model.distill_losses = None
    distiller = build(cfg.model)
    distiller.train()
    optim = TSTOptimWrapperConstructor(dict(
        student=dict(type='OptimWrapper', optimizer=dict(type='SGD', lr=0.0)),
        augmenter=dict(type='OptimWrapper', optimizer=dict(type='SGD', lr=0.0))))(distiller)
    distiller.augment_step(one_batch(coco_digits), optim)
    assert distiller.inversion_check.checked == {'loss_cls', 'loss_bbox'}

    cfg.model.student = _ssd_student(cfg, 'SSDHeadWithOwnLoss')
    with pytest.raises(NotImplementedError, match='SSDHeadWithOwnLoss derives from SSDHead'):
        build(cfg.model)


@pytest.mark.parametrize('head,keys', [
    (dict(type='AutoAssignHead', strides=[8, 16, 32, 64, 128], norm_cfg=None,
          loss_bbox=dict(type='GIoULoss', loss_weight=5.0)),
     {'loss_pos', 'loss_neg', 'loss_center'}),
    (dict(type='FreeAnchorRetinaHead', stacked_convs=1,
          anchor_generator=dict(type='AnchorGenerator', octave_base_scale=4,
                                scales_per_octave=1, ratios=[1.0],
                                strides=[8, 16, 32, 64, 128]),
          bbox_coder=dict(type='DeltaXYWHBBoxCoder', target_means=[0.0] * 4,
                          target_stds=[0.1, 0.1, 0.2, 0.2]),
          loss_bbox=dict(type='SmoothL1Loss', beta=0.11, loss_weight=0.75)),
     {'positive_bag_loss', 'negative_bag_loss'})])
def test_heads_reading_loss_bbox_as_a_confidence_take_an_augment_step(coco_digits, head,
                                                                      keys):
    """AutoAssign and FreeAnchor compute their losses inline and use loss_bbox as a
    confidence exp(-loss): inverted by tst_mm.distill.inline_inverses, loss_bbox kept."""
    from tst_mm.engine import TSTOptimWrapperConstructor
    cfg = tiny_cfg()
    cfg.model.student.bbox_head = dict(head, num_classes=10, in_channels=16,
                                       feat_channels=16)
    cfg.model.teacher = copy.deepcopy(cfg.model.student)
    cfg.model.distill_losses = None
    distiller = build(cfg.model)
    distiller.train()
    optim = TSTOptimWrapperConstructor(dict(
        student=dict(type='OptimWrapper', optimizer=dict(type='SGD', lr=0.0)),
        augmenter=dict(type='OptimWrapper', optimizer=dict(type='SGD', lr=0.0))))(distiller)
    log = distiller.augment_step(one_batch(coco_digits), optim)
    assert all(math.isfinite(float(v)) for v in log.values())
    assert distiller.inversion_check.checked == keys  # each changed when inverted


def test_a_wrapper_is_refused_as_student():
    cfg = tiny_cfg()
    cfg.model.student = dict(type='SoftTeacher', detector=cfg.model.student,
                             data_preprocessor=cfg.model.student.data_preprocessor,
                             semi_train_cfg=dict(freeze_teacher=True))
    with pytest.raises(TypeError, match='semi-supervised teacher-student wrapper'):
        build(cfg.model)


def test_the_teacher_loss_runs_heads_in_train_mode_and_layers_in_eval_mode(coco_digits):
    """Some models compute their loss only in train mode (DINO, YOLACT, K-Net); the
    frozen teacher's BatchNorm must still use (and keep) its running statistics."""
    from mmengine.optim import OptimWrapper, OptimWrapperDict
    from torch.nn.modules.batchnorm import _BatchNorm
    model = build(tiny_cfg().model)
    model.train()
    optim = OptimWrapperDict(
        student=OptimWrapper(torch.optim.SGD(model.student.parameters(), lr=0.01)),
        augmenter=OptimWrapper(torch.optim.SGD(model.augmenter.parameters(), lr=0.01)))
    seen = []
    norms = [m for m in model.teacher.modules() if isinstance(m, _BatchNorm)]
    model.teacher.bbox_head.register_forward_pre_hook(
        lambda head, args: seen.append((model.teacher.training, head.training,
                                        any(m.training for m in norms))))
    stats = {k: v.clone() for k, v in model.teacher.state_dict().items()}
    model.augment_step(one_batch(coco_digits), optim)
    model.train_step(one_batch(coco_digits), optim)
    assert seen == [(True, True, False)] * 2
    assert not model.teacher.training
    torch.testing.assert_close(model.teacher.state_dict(), stats, rtol=0, atol=0)


def test_the_students_own_data_preprocessor_pads_as_in_plain_mmseg(logged):
    """mmengine's Runner only setdefaults a config's top-level data_preprocessor into
    the model: the student's own (a smaller crop here) must win, as in plain mmseg."""
    cfg = Config.fromfile(osp.join(TEST_CONFIGS, 'tst_pspnet_tiny.py'))
    cfg.model.student = copy.deepcopy(cfg.model.student)
    cfg.model.student.data_preprocessor.size = (32, 48)
    assert tuple(cfg.data_preprocessor.size) != (32, 48)
    # What Runner.__init__ does with a top-level data_preprocessor.
    cfg.model.setdefault('data_preprocessor', cfg.data_preprocessor)
    with DefaultScope.overwrite_default_scope('mmseg'):
        distiller = MODELS.build(cfg.model)
    assert tuple(distiller.data_preprocessor.size) == (32, 48)
    log = '\n'.join(logged)
    assert "student's own data_preprocessor" in log
    assert 'size: (64, 128) -> (32, 48)) and is not used' in log


def test_a_relative_teacher_config_is_read_from_the_configs_directory(workspace):
    """As _base_ paths: `teacher='./teacher.py'` next to the config, run from elsewhere."""
    folder = workspace / 'my_configs'
    folder.mkdir()
    (folder / 'teacher.py').write_text(
        f"_base_ = '{osp.join(TEST_CONFIGS, 'retinanet_tiny_digits.py')}'\n")
    (folder / 'tst.py').write_text(
        f"_base_ = '{osp.join(TEST_CONFIGS, 'tst_retinanet_tiny.py')}'\n"
        "model = dict(teacher='./teacher.py')\n"
        "train_cfg = dict(max_iters=1, val_interval=1, augment_iters=[])\n")
    proc = run_tool([osp.join(REPO, 'tools', 'train.py'), str(folder / 'tst.py'),
                     '--work-dir', str(workspace / 'rel')], workspace)
    assert proc.returncode == 0, proc.stdout[-3000:]
    # Built in-process from elsewhere: the error says how relative paths are read.
    cfg = tiny_cfg()
    cfg.model.teacher = './teacher.py'
    with pytest.raises(FileNotFoundError, match=r"does not exist.*current directory.*"
                       r"\{\{fileDirname\}\}"):
        build(cfg.model)


def run_tool(cmd, cwd):
    import subprocess
    import sys
    return subprocess.run([sys.executable, *cmd], cwd=str(cwd), text=True,
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT)


def test_a_mistyped_package_teacher_config_is_one_line_naming_it():
    cfg = tiny_cfg()
    cfg.model.teacher = 'mmdet::retinanet/retinanet_r101_fpn_2x_cooc.py'
    with pytest.raises(FileNotFoundError) as error:
        build(cfg.model)
    message = str(error.value)
    assert message.startswith("teacher config 'mmdet::retinanet/retinanet_r101_fpn_2x_"
                              "cooc.py': the installed mmdet has no ")
    assert "did you mean 'retinanet_r101_fpn_2x_coco.py'" in message
    assert len(message) < 400


def test_a_feature_mimic_channel_mismatch_is_an_error_at_build():
    """Found on a blank image at build, not at the first student step."""
    cfg = tiny_cfg()
    cfg.model.teacher.neck.out_channels = 24
    cfg.model.teacher.bbox_head.in_channels = 24
    cfg.model.teacher.bbox_head.feat_channels = 24
    with pytest.raises(ValueError, match=r'distill_losses.loss_mimic_fpn does not fit.*'
                       r'16 channels but the teacher.s have 24.*student_channels=16'):
        build(cfg.model)
    cfg.model.distill_losses.loss_mimic_fpn.update(student_channels=16,
                                                    teacher_channels=24)
    build(cfg.model)


class CallCountingMSE(torch.nn.Module):
    """A distillation loss with state: how many times it ran."""

    def __init__(self):
        super().__init__()
        self.calls = 0

    def forward(self, student, teacher):
        self.calls += 1
        return sum(((s - t) ** 2).mean() for s, t in zip(student, teacher))


def test_the_build_check_leaves_a_stateful_loss_as_built():
    """The check at build runs each written loss once on blank-image features; a loss
    that counts its calls (or keeps a running statistic) must start training at zero."""
    MODELS.register_module('CallCountingMSE', module=CallCountingMSE, force=True)
    cfg = tiny_cfg()
    cfg.model.distill_losses = dict(loss_count=dict(
        type='CallCountingMSE', student='neck', teacher='neck'))
    model = build(cfg.model)
    assert model.distill_losses['loss_count'].calls == 0
