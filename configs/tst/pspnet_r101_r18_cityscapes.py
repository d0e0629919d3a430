# TST: PSPNet ResNet-101 (teacher, frozen) -> PSPNet ResNet-18 (student), Cityscapes
# 512 x 1024, 80k iterations: the reference's segmentation pair.
# Student: mmseg's pspnet_r18-d8_4xb2-80k_cityscapes-512x1024 (74.87 mIoU without
# distillation), with its ImageNet-pretrained backbone, data pipeline, optimizer and
# poly schedule unchanged.
_base_ = ['mmseg::pspnet/pspnet_r18-d8_4xb2-80k_cityscapes-512x1024.py',
          './_base_/tst_cityscapes_80k.py']

model = dict(
    _base_.tst_model, student=_base_.model,
    teacher='mmseg::pspnet/pspnet_r101-d8_4xb2-80k_cityscapes-512x1024.py',
    # mmseg model zoo, pspnet_r101-d8_4xb2-80k_cityscapes-512x1024: 79.76 mIoU.
    teacher_ckpt='https://download.openmmlab.com/mmsegmentation/v0.5/pspnet/'
    'pspnet_r101-d8_512x1024_80k_cityscapes/'
    'pspnet_r101-d8_512x1024_80k_cityscapes_20200606_112211-e1e1100f.pth',
    distill_losses=_base_.tst_seg_distill_losses)

# The augmenter needs pixel values: TSTDistiller pads and stacks with this config's
# SegDataPreProcessor (to the 512 x 1024 crop, labels padded with 255) but without its
# normalisation, augments, then normalises for the teacher and the student separately.
train_cfg = _base_.tst_train_cfg
optim_wrapper = dict(_base_.tst_optim_wrapper, student=_base_.optim_wrapper)
param_scheduler = dict(_base_.tst_param_scheduler, student=_base_.param_scheduler)
