# TST: DeepLabV3 ResNet-101 (teacher, frozen) -> DeepLabV3 ResNet-18 (student),
# Cityscapes 512 x 1024, 80k iterations.
# Student: mmseg's deeplabv3_r18-d8_4xb2-80k_cityscapes-512x1024 (76.70 mIoU without
# distillation), with its ImageNet-pretrained backbone, data pipeline, optimizer and
# poly schedule unchanged.
_base_ = [
    'mmseg::deeplabv3/deeplabv3_r18-d8_4xb2-80k_cityscapes-512x1024.py',
    './_base_/tst_cityscapes_80k.py',
]

model = dict(
    _delete_=True,
    type='TSTDistiller',
    student={{_base_.model}},
    teacher='mmseg::deeplabv3/deeplabv3_r101-d8_4xb2-80k_cityscapes-512x1024.py',
    # mmseg model zoo, deeplabv3_r101-d8_4xb2-80k_cityscapes-512x1024: 80.20 mIoU.
    teacher_ckpt='https://download.openmmlab.com/mmsegmentation/v0.5/deeplabv3/'
    'deeplabv3_r101-d8_512x1024_80k_cityscapes/'
    'deeplabv3_r101-d8_512x1024_80k_cityscapes_20200606_113503-9e428899.pth',
    augmenter={{_base_.tst_augmenter}},
    distill_losses={{_base_.tst_seg_distill_losses}})

train_cfg = {{_base_.tst_train_cfg}}
optim_wrapper = dict(
    _delete_=True,
    constructor='TSTOptimWrapperConstructor',
    student={{_base_.optim_wrapper}},
    augmenter={{_base_.tst_augmenter_optim_wrapper}})
# mmengine needs one scheduler list per optimizer wrapper; the augmenter's lr is reset
# before each augment phase instead.
param_scheduler = dict(
    _delete_=True, student={{_base_.param_scheduler}}, augmenter=[])
