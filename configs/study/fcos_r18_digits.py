# A second detection teacher of another family, for automatic distillation across
# families (docs/results.md, "Automatic distillation"): FCOS (anchor-free, one score
# per position and class) with the RetinaNet teacher's backbone, neck widths, data,
# schedule and optimizer (ResNet-18 at half width from scratch, 900 iterations on the
# study's 1000 images). mmdet's FCOS improvements (normalised boxes, centre sampling,
# centre-ness on the regression branch, GIoU) are on; the regression ranges are scaled
# to the digits (16-38 px at 128 x 128).
_base_ = './retinanet_r18_digits.py'

model = dict(
    _delete_=True,
    type='FCOS',
    data_preprocessor=dict(type='DetDataPreprocessor', mean=[123.675, 116.28, 103.53],
                           std=[58.395, 57.12, 57.375], bgr_to_rgb=True,
                           pad_size_divisor=32),
    backbone=dict(type='ResNet', depth=18, base_channels=32, num_stages=4,
                  out_indices=(0, 1, 2, 3), frozen_stages=-1,
                  norm_cfg=dict(type='BN', requires_grad=True), norm_eval=False,
                  style='pytorch', init_cfg=None),
    neck=dict(type='FPN', in_channels=[32, 64, 128, 256], out_channels=64, start_level=1,
              add_extra_convs='on_output', num_outs=5, relu_before_extra_convs=True),
    bbox_head=dict(
        type='FCOSHead', num_classes=10, in_channels=64, stacked_convs=2,
        feat_channels=64, strides=[8, 16, 32, 64, 128],
        regress_ranges=((-1, 24), (24, 48), (48, 96), (96, 192), (192, 1e8)),
        norm_on_bbox=True, centerness_on_reg=True, center_sampling=True,
        center_sample_radius=1.5, conv_bias=True,
        norm_cfg=dict(type='GN', num_groups=32, requires_grad=True),
        loss_cls=dict(type='FocalLoss', use_sigmoid=True, gamma=2.0, alpha=0.25,
                      loss_weight=1.0),
        loss_bbox=dict(type='GIoULoss', loss_weight=1.0),
        loss_centerness=dict(type='CrossEntropyLoss', use_sigmoid=True, loss_weight=1.0)),
    test_cfg=dict(nms_pre=1000, min_bbox_size=0, score_thr=0.05,
                  nms=dict(type='nms', iou_threshold=0.5), max_per_img=100))
