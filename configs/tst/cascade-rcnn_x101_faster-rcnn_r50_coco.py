# TST: Cascade Mask R-CNN ResNeXt-101-64x4d (teacher, frozen) -> Faster R-CNN ResNet-50
# (student), COCO 2x: the reference's two-stage pair, with its RoI-level distillation.
# Student: mmdet's faster-rcnn_r50_fpn_2x_coco (38.4 box AP without distillation), with
# its ImageNet-pretrained backbone, optimizer and schedule unchanged.
_base_ = ['mmdet::faster_rcnn/faster-rcnn_r50_fpn_2x_coco.py', './_base_/tst_runtime.py']

model = dict(
    _base_.tst_model, student=_base_.model,
    teacher='mmdet::cascade_rcnn/cascade-mask-rcnn_x101-64x4d_fpn_20e_coco.py',
    # mmdet model zoo, cascade-mask-rcnn_x101-64x4d_fpn_20e_coco: 45.6 box AP, 39.5 mask
    # AP on COCO val2017 (the reference's teacher checkpoint).
    teacher_ckpt='https://download.openmmlab.com/mmdetection/v2.0/cascade_rcnn/'
    'cascade_mask_rcnn_x101_64x4d_fpn_20e_coco/'
    'cascade_mask_rcnn_x101_64x4d_fpn_20e_coco_20200512_161033-bdb5126a.pth',
    # The teacher's proposals are the student's sampled RoIs, so its first stage
    # scores exactly the student's boxes, row for row (the reference feeds the
    # student's RoIs into the teacher's first-stage RoI extractor). The reference
    # builds the teacher with one stage and no mask head; here the whole checkpoint
    # loads strictly, so the teacher's later stages and mask head run on the refined
    # student RoIs as well (their outputs are not used).
    teacher_inputs=[dict(student='roi_head.bbox_roi_extractor', student_arg='rois',
                         teacher='rpn_head.predict')],
    distill_losses=dict(
        # The reference's only distillation: softmax KL (tau 1) between the student's
        # and the teacher's first-stage class logits of each RoI, averaged over the
        # RoIs (mmrazor's 'batchmean' on N_rois x 81).
        loss_kd_roi_cls=dict(type='KLDivergence', student='roi_head.bbox_head.fc_cls',
                             teacher='roi_head.bbox_head.0.fc_cls', tau=1.0,
                             reduction='batchmean', loss_weight=1.0)))

# Two views per image, [x_aug ; x], on mmdet's 2 images per GPU (its train_dataloader,
# unchanged; see retinanet_r101_r50_coco.py for the trade-off and the batch_size=1
# alternative).
train_cfg = _base_.tst_train_cfg
optim_wrapper = dict(_base_.tst_optim_wrapper, student=_base_.optim_wrapper)
param_scheduler = dict(_base_.tst_param_scheduler, student=_base_.param_scheduler)
