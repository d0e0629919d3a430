# TST: RetinaNet ResNeXt-101-64x4d (teacher, frozen) -> RetinaNet ResNet-50 (student),
# COCO 2x: the reference's detection pair. The settings are those of
# retinanet_r101_r50_coco.py; only the teacher differs.
_base_ = './retinanet_r101_r50_coco.py'

model = dict(
    # The reference's teacher is the 1x model: the model zoo's X-101-64x4d RetinaNet
    # scores 41.0 box AP after 1x and 40.8 after 2x (COCO val2017).
    teacher='mmdet::retinanet/retinanet_x101-64x4d_fpn_1x_coco.py',
    teacher_ckpt='https://download.openmmlab.com/mmdetection/v2.0/retinanet/'
    'retinanet_x101_64x4d_fpn_1x_coco/'
    'retinanet_x101_64x4d_fpn_1x_coco_20200130-366f5af1.pth')
