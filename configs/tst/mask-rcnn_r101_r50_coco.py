# TST: Mask R-CNN ResNet-101 (teacher, frozen) -> Mask R-CNN ResNet-50 (student), COCO
# 2x, instance segmentation. Student: mmdet's mask-rcnn_r50_fpn_2x_coco (39.2 box AP,
# 35.4 mask AP without distillation), with its ImageNet-pretrained backbone, optimizer
# and schedule unchanged. The augmenter warps each instance's mask with its image and
# makes the warped mask's tight box the instance's box.
_base_ = ['mmdet::mask_rcnn/mask-rcnn_r50_fpn_2x_coco.py', './_base_/tst_runtime.py']

model = dict(
    _base_.tst_model, student=_base_.model,
    teacher='mmdet::mask_rcnn/mask-rcnn_r101_fpn_2x_coco.py',
    # mmdet model zoo, mask-rcnn_r101_fpn_2x_coco: 40.8 box AP, 36.6 mask AP on COCO
    # val2017.
    teacher_ckpt='https://download.openmmlab.com/mmdetection/v2.0/mask_rcnn/'
    'mask_rcnn_r101_fpn_2x_coco/'
    'mask_rcnn_r101_fpn_2x_coco_bbox_mAP-0.408__segm_mAP-0.366_20200505_071027-14b391c7.pth',
    # RoI-level distillation on the student's own RoIs: its sampled RoIs are the
    # teacher's proposals (box head), its positive RoIs the teacher's mask RoIs (mask
    # head), so both heads' outputs line up row for row.
    teacher_inputs=[
        dict(student='roi_head.bbox_roi_extractor', student_arg='rois',
             teacher='rpn_head.predict'),
        dict(student='roi_head.mask_roi_extractor', teacher='roi_head.mask_roi_extractor',
             arg='rois')],
    distill_losses=dict(
        # softmax KL (tau 1) of each RoI's class logits, averaged over the RoIs, as the
        # reference distils its two-stage pair
        loss_kd_roi_cls=dict(type='KLDivergence', student='roi_head.bbox_head.fc_cls',
                             teacher='roi_head.bbox_head.fc_cls', tau=1.0,
                             reduction='batchmean', loss_weight=1.0),
        # Bernoulli KL of each mask pixel's sigmoid score, averaged over the RoIs'
        # 80 x 28 x 28 logits: the per-element scale of the mask head's own BCE. The
        # reference has no mask pair; this strength is not measured here.
        loss_kd_mask=dict(type='BinaryKLDivergence',
                          student='roi_head.mask_head.conv_logits',
                          teacher='roi_head.mask_head.conv_logits', tau=1.0,
                          reduction='mean', loss_weight=1.0),
        # MSE on each of the five FPN levels (mean over its elements), summed, as the
        # reference; both necks have 256 channels, so no adapter.
        loss_mimic_fpn=dict(type='FeatureMimic', student='neck', teacher='neck',
                            reduction='mean', level_reduction='sum', loss_weight=1.0)))

# Two views per image, [x_aug ; x], on mmdet's 2 images per GPU (its train_dataloader,
# unchanged): 4 images per GPU through the student, the lr (0.02 for 8 GPUs x 2) and
# schedule of mmdet's 2x config. See retinanet_r101_r50_coco.py for the trade-off and
# the batch_size=1 alternative.
train_cfg = _base_.tst_train_cfg
optim_wrapper = dict(_base_.tst_optim_wrapper, student=_base_.optim_wrapper)
param_scheduler = dict(_base_.tst_param_scheduler, student=_base_.param_scheduler)
