# The study's segmentation TST arm: the narrow PSPNet student distilled from the half-width
# teacher (tools/study/study.py trains it first and passes its checkpoint), with the
# shipped Cityscapes configs' distillation (per-pixel KL of the decode-head (1.5) and
# auxiliary-head (0.5) logits) and augment phases of one pass over the 200 training
# images (25 batches of 8) before iterations 1, 201 and 401 of 600.
_base_ = './pspnet_r18-narrow_cityscapes_digits.py'

teacher_ckpt = 'work_dirs/study/seg/teacher/iter_900.pth'
model = dict(
    _delete_=True,
    type='TSTDistiller',
    student={{_base_.model}},
    teacher='{{fileDirname}}/pspnet_r18_cityscapes_digits.py',
    teacher_ckpt=teacher_ckpt,
    augmenter=dict(type='TSTAugmenter', num_ops=4, temperature=0.05),
    distill_losses=dict(
        loss_kd_decode=dict(type='KLDivergence', student='decode_head.conv_seg',
                            teacher='decode_head.conv_seg', tau=1.0, reduction='pixelmean',
                            loss_weight=1.5),
        loss_kd_aux=dict(type='KLDivergence', student='auxiliary_head.conv_seg',
                         teacher='auxiliary_head.conv_seg', tau=1.0, reduction='pixelmean',
                         loss_weight=0.5)))
model_wrapper_cfg = dict(type='TSTDistributedDataParallel')
train_cfg = dict(_delete_=True, type='TSTIterBasedTrainLoop',
                 max_iters={{_base_.max_iters}}, val_interval={{_base_.max_iters}},
                 augment_iters=[0, 200, 400], augment_steps=25)
custom_hooks = [dict(type='TSTPolicyHook', interval=100)]
optim_wrapper = dict(
    _delete_=True,
    constructor='TSTOptimWrapperConstructor',
    student={{_base_.optim_wrapper}},
    augmenter=dict(type='OptimWrapper',
                   optimizer=dict(type='SGD', lr=0.01, momentum=0.9),
                   clip_grad=dict(max_norm=20)))
param_scheduler = dict(_delete_=True, student={{_base_.param_scheduler}}, augmenter=[])
