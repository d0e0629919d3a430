# TST: DeepLabV3 ResNet-101 (teacher, frozen) -> DeepLabV3 ResNet-18 (student),
# Cityscapes 512 x 1024, 80k iterations.
# Student: mmseg's deeplabv3_r18-d8_4xb2-80k_cityscapes-512x1024 (76.70 mIoU without
# distillation), with its ImageNet-pretrained backbone, data pipeline, optimizer and
# poly schedule unchanged.
_base_ = ['mmseg::deeplabv3/deeplabv3_r18-d8_4xb2-80k_cityscapes-512x1024.py',
          './_base_/tst_cityscapes_80k.py']

model = dict(
    _base_.tst_model, student=_base_.model,
    teacher='mmseg::deeplabv3/deeplabv3_r101-d8_4xb2-80k_cityscapes-512x1024.py',
    # mmseg model zoo, deeplabv3_r101-d8_4xb2-80k_cityscapes-512x1024: 80.20 mIoU.
    teacher_ckpt='https://download.openmmlab.com/mmsegmentation/v0.5/deeplabv3/'
    'deeplabv3_r101-d8_512x1024_80k_cityscapes/'
    'deeplabv3_r101-d8_512x1024_80k_cityscapes_20200606_113503-9e428899.pth',
    distill_losses=_base_.tst_seg_distill_losses)

train_cfg = _base_.tst_train_cfg
optim_wrapper = dict(_base_.tst_optim_wrapper, student=_base_.optim_wrapper)
param_scheduler = dict(_base_.tst_param_scheduler, student=_base_.param_scheduler)
