"""RoI-level distillation for two-stage detectors: the teacher scores exactly the
student's RoIs (``TSTDistiller(teacher_inputs=...)``)."""
import copy
import os.path as osp

import pytest
import torch
from mmengine.config import Config, ConfigDict
from mmengine.registry import MODELS, DefaultScope

import tst_mm  # noqa: F401
from tests.distill.tiny_models import det_batch
from tst_mm.engine import TSTOptimWrapperConstructor

ROIS = dict(student='roi_head.bbox_roi_extractor', student_arg='rois',
            teacher='rpn_head.predict')
ROI_KL = dict(type='KLDivergence', student='roi_head.bbox_head.fc_cls',
              teacher='roi_head.bbox_head.fc_cls')
FROZEN = dict(student=dict(type='OptimWrapper', optimizer=dict(type='SGD', lr=0.0)),
              augmenter=dict(type='OptimWrapper', optimizer=dict(type='SGD', lr=0.0)))


def _two_stage(config: str) -> dict:
    """A tiny mmdet two-stage detector config; BatchNorm on its running statistics in
    training too (norm_eval), so a student and a teacher with the same weights compute
    the same features."""
    import mmdet
    path = osp.join(osp.dirname(mmdet.__file__), '.mim', 'configs', config)
    cfg = Config.fromfile(path)
    model = cfg.model
    model.backbone.update(depth=18, base_channels=8, init_cfg=None, frozen_stages=-1,
                          norm_eval=True)
    model.neck.update(in_channels=[8, 16, 32, 64], out_channels=16)
    model.rpn_head.update(in_channels=16, feat_channels=16)
    model.roi_head.bbox_roi_extractor.out_channels = 16
    heads = model.roi_head.bbox_head
    for head in heads if isinstance(heads, list) else [heads]:
        head.update(in_channels=16, fc_out_channels=16, num_classes=3)
    model.train_cfg.rpn_proposal.max_per_img = 64
    model.test_cfg.rpn.max_per_img = 64
    rcnn = model.train_cfg.rcnn
    for stage in rcnn if isinstance(rcnn, list) else [rcnn]:
        stage.sampler.num = 32
    return model.to_dict()


def _distiller(student: dict, teacher: dict, tmp_path, **kwargs):
    """A TSTDistiller whose teacher has the weights a build of ``teacher`` gets under
    seed 0, as the student does: the same weights when the configs are the same."""
    torch.manual_seed(0)
    with DefaultScope.overwrite_default_scope('mmdet'):
        model = MODELS.build(ConfigDict(copy.deepcopy(teacher)))
        ckpt = tmp_path / 'teacher.pth'
        torch.save({'state_dict': model.state_dict()}, ckpt)
        torch.manual_seed(0)
        distiller = MODELS.build(dict(type='TSTDistiller', student=copy.deepcopy(student),
                                      teacher=copy.deepcopy(teacher),
                                      teacher_ckpt=str(ckpt), **kwargs))
    distiller.train()
    return distiller


def _step(distiller):
    optim = TSTOptimWrapperConstructor(copy.deepcopy(FROZEN))(distiller)
    inputs, samples = det_batch(size=(64, 64))
    return distiller.train_step(dict(inputs=list((inputs * 50 + 128).clamp(0, 255)),
                                     data_samples=samples), optim)


def test_teacher_scores_exactly_the_students_rois(tmp_path):
    """Same weights, same views, the student's RoIs: the teacher's class logits are the
    student's, row for row, and the RoI KL is 0. Without teacher_inputs the teacher
    scores its own proposals, and the rows differ."""
    faster = _two_stage('faster_rcnn/faster-rcnn_r50_fpn_1x_coco.py')
    distiller = _distiller(faster, faster, tmp_path, teacher_inputs=[ROIS],
                           distill_losses=dict(loss_kd_roi=ROI_KL))
    log_vars = _step(distiller)
    student = distiller.student_recorder.get('roi_head.bbox_head.fc_cls')
    teacher = distiller.teacher_recorder.get('roi_head.bbox_head.fc_cls')
    assert student.shape == teacher.shape and len(student) > 32  # both views' RoIs
    torch.testing.assert_close(teacher, student.detach(), rtol=1e-5, atol=1e-5)
    assert abs(float(log_vars['distill.loss_kd_roi'])) < 1e-6

    # Without teacher_inputs: the teacher samples RoIs of its own, other boxes.
    own = _distiller(faster, faster, tmp_path, distill_losses=dict(loss_kd_roi=ROI_KL))
    log_vars = _step(own)
    student = own.student_recorder.get('roi_head.bbox_head.fc_cls')
    teacher = own.teacher_recorder.get('roi_head.bbox_head.fc_cls')
    assert student.shape != teacher.shape or not torch.allclose(teacher, student)
    assert float(log_vars['distill.loss_kd_roi']) > 1e-4


def test_cascade_teacher_first_stage_gets_the_students_rois(tmp_path):
    faster = _two_stage('faster_rcnn/faster-rcnn_r50_fpn_1x_coco.py')
    cascade = _two_stage('cascade_rcnn/cascade-rcnn_r50_fpn_1x_coco.py')
    distiller = _distiller(
        faster, cascade, tmp_path, teacher_inputs=[ROIS],
        distill_losses=dict(loss_kd_roi=dict(ROI_KL, teacher='roi_head.bbox_head.0.fc_cls')))
    seen = {}

    def keep(name):
        def hook(module, args, output):  # returns None: the output stays as it is
            seen.setdefault(name, args[1].clone())
        return hook

    student_rois = distiller.student.roi_head.bbox_roi_extractor.register_forward_hook(
        keep('student'))
    teacher_rois = distiller.teacher.roi_head.bbox_roi_extractor[0].register_forward_hook(
        keep('teacher'))
    log_vars = _step(distiller)
    student_rois.remove()
    teacher_rois.remove()
    assert torch.equal(seen['teacher'], seen['student'])
    assert torch.isfinite(log_vars['distill.loss_kd_roi'])
    logits = distiller.teacher_recorder.get('roi_head.bbox_head.0.fc_cls')
    assert logits.shape == distiller.student_recorder.get('roi_head.bbox_head.fc_cls').shape


def test_bad_teacher_inputs_are_named(tmp_path):
    faster = _two_stage('faster_rcnn/faster-rcnn_r50_fpn_1x_coco.py')
    with pytest.raises(ValueError, match="did you mean 'roi_head.bbox_roi_extractor'"):
        _distiller(faster, faster, tmp_path,
                   teacher_inputs=[dict(ROIS, student='roi_head.bbox_roi_extractr')])
    with pytest.raises(ValueError, match=r"takes no argument 'boxes'.*'rois'"):
        _distiller(faster, faster, tmp_path, teacher_inputs=[
            dict(student='roi_head.bbox_roi_extractor', teacher='roi_head.bbox_roi_extractor',
                 arg='boxes')])
    with pytest.raises(ValueError, match="neck .*has no predict"):
        _distiller(faster, faster, tmp_path, teacher_inputs=[dict(ROIS, teacher='neck.predict')])
    with pytest.raises(ValueError, match='must have the keys'):
        _distiller(faster, faster, tmp_path, teacher_inputs=[dict(module='x')])
    with pytest.raises(ValueError, match='divergence=0'):
        _distiller(faster, faster, tmp_path, teacher_inputs=[ROIS],
                   distill_losses=dict(loss_kd_roi=ROI_KL),
                   augment_loss_weights=dict(divergence=1.0))


def test_mask_head_scores_the_students_positive_rois(tmp_path):
    """Mask R-CNN: the proposals for the box head and the positive RoIs for the mask
    head; with the same weights the two mask heads' logits are equal."""
    mask_rcnn = _two_stage('mask_rcnn/mask-rcnn_r50_fpn_1x_coco.py')
    mask_rcnn['roi_head']['mask_roi_extractor']['out_channels'] = 16
    mask_rcnn['roi_head']['mask_head'].update(in_channels=16, conv_out_channels=16,
                                              num_classes=3)
    distiller = _distiller(
        mask_rcnn, mask_rcnn, tmp_path,
        teacher_inputs=[ROIS, dict(student='roi_head.mask_roi_extractor',
                                   teacher='roi_head.mask_roi_extractor', arg='rois')],
        distill_losses=dict(
            loss_kd_roi=ROI_KL,
            loss_kd_mask=dict(type='BinaryKLDivergence', reduction='mean',
                              student='roi_head.mask_head.conv_logits',
                              teacher='roi_head.mask_head.conv_logits')))
    inputs, samples = det_batch(size=(64, 64))
    from mmdet.structures.mask import BitmapMasks
    for s in samples:  # a mask per box: its rectangle
        masks = torch.zeros(len(s.gt_instances), 64, 64, dtype=torch.uint8)
        for m, (x1, y1, x2, y2) in zip(masks, s.gt_instances.bboxes.int().tolist()):
            m[y1:y2, x1:x2] = 1
        s.gt_instances.masks = BitmapMasks(masks.numpy(), 64, 64)
    optim = TSTOptimWrapperConstructor(copy.deepcopy(FROZEN))(distiller)
    log_vars = distiller.train_step(dict(inputs=list((inputs * 50 + 128).clamp(0, 255)),
                                         data_samples=samples), optim)
    student = distiller.student_recorder.get('roi_head.mask_head.conv_logits')
    teacher = distiller.teacher_recorder.get('roi_head.mask_head.conv_logits')
    assert student.shape == teacher.shape and len(student) > 0
    torch.testing.assert_close(teacher, student.detach(), rtol=1e-4, atol=1e-4)
    assert abs(float(log_vars['distill.loss_kd_mask'])) < 1e-6
