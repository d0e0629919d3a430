# TST: Faster R-CNN ResNet-101 (teacher, frozen) -> Faster R-CNN ResNet-50 (student),
# COCO 2x. Student: mmdet's faster-rcnn_r50_fpn_2x_coco (38.4 box AP without
# distillation), with its ImageNet-pretrained backbone, optimizer and schedule
# unchanged.
_base_ = ['mmdet::faster_rcnn/faster-rcnn_r50_fpn_2x_coco.py', './_base_/tst_runtime.py']

model = dict(
    _base_.tst_model, student=_base_.model,
    teacher='mmdet::faster_rcnn/faster-rcnn_r101_fpn_2x_coco.py',
    # mmdet model zoo, faster-rcnn_r101_fpn_2x_coco: 39.8 box AP on COCO val2017.
    teacher_ckpt='https://download.openmmlab.com/mmdetection/v2.0/faster_rcnn/'
    'faster_rcnn_r101_fpn_2x_coco/'
    'faster_rcnn_r101_fpn_2x_coco_bbox_mAP-0.398_20200504_210455-1d2dac9c.pth',
    # RoI-level distillation: the teacher's proposals are the student's sampled RoIs,
    # so the two bbox heads' class logits describe the same boxes, row for row.
    teacher_inputs=[dict(student='roi_head.bbox_roi_extractor', student_arg='rois',
                         teacher='rpn_head.predict')],
    distill_losses=dict(
        # softmax KL (tau 1) of each RoI's class logits, averaged over the RoIs, as
        # the reference distils its two-stage pair
        loss_kd_roi_cls=dict(type='KLDivergence', student='roi_head.bbox_head.fc_cls',
                             teacher='roi_head.bbox_head.fc_cls', tau=1.0,
                             reduction='batchmean', loss_weight=1.0),
        # MSE on each of the five FPN levels (mean over its elements), summed as the
        # reference sums its per-level losses; both necks have 256 channels, so no
        # adapter.
        loss_mimic_fpn=dict(type='FeatureMimic', student='neck', teacher='neck',
                            reduction='mean', level_reduction='sum', loss_weight=1.0)))

# Two views per image, [x_aug ; x], on mmdet's 2 images per GPU (its train_dataloader,
# unchanged): 4 images per GPU through the student, the lr (0.02 for 8 GPUs x 2) and
# schedule of mmdet's 2x config. See retinanet_r101_r50_coco.py for the trade-off and
# the batch_size=1 alternative.
train_cfg = _base_.tst_train_cfg
optim_wrapper = dict(_base_.tst_optim_wrapper, student=_base_.optim_wrapper)
param_scheduler = dict(_base_.tst_param_scheduler, student=_base_.param_scheduler)
