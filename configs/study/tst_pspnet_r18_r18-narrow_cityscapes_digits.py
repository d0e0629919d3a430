# The study's segmentation TST arm: the narrow PSPNet student distilled from the half-width
# teacher (tools/study/study.py trains it first and passes its checkpoint), with the
# shipped Cityscapes configs' distillation (per-pixel KL of the decode-head (1.5) and
# auxiliary-head (0.5) logits) and augment phases of one pass over the 200 training
# images (25 batches of 8) before iterations 1, 401 and 801 of 1200.
_base_ = ['./pspnet_r18-narrow_cityscapes_digits.py', '../_base_/tst_digits.py',
          '../_base_/tst_seg_losses.py']

teacher_ckpt = 'work_dirs/study/seg/teacher/iter_900.pth'
model = dict(
    _base_.tst_model, student=_base_.model,
    teacher='{{fileDirname}}/pspnet_r18_cityscapes_digits.py', teacher_ckpt=teacher_ckpt,
    distill_losses=_base_.tst_seg_distill_losses)
train_cfg = dict(_delete_=True, type='TSTIterBasedTrainLoop',
                 max_iters=_base_.max_iters, val_interval=_base_.max_iters,
                 augment_iters=[0, 400, 800], augment_steps=25)
optim_wrapper = dict(_base_.tst_optim_wrapper, student=_base_.optim_wrapper)
param_scheduler = dict(_base_.tst_param_scheduler, student=_base_.param_scheduler)
