# TST on the tiny PSPNet: student and (untrained) teacher of the same shape, the
# reference's KL on the decode-head (1.5) and auxiliary-head (0.5) logits, augment
# phases before iterations 1 and 3 (0-based 0 and 2).
_base_ = './pspnet_tiny_cityscapes_digits.py'
custom_imports = dict(imports=['tst_mm'], allow_failed_imports=False)

model = dict(
    _delete_=True,
    type='TSTDistiller',
    student={{_base_.model}},
    teacher={{_base_.model}},
    teacher_ckpt=None,
    augmenter=dict(type='TSTAugmenter', num_ops=4),
    distill_losses=dict(
        loss_kd_decode=dict(type='KLDivergence', student='decode_head.conv_seg',
                            teacher='decode_head.conv_seg', tau=1.0, loss_weight=1.5),
        loss_kd_aux=dict(type='KLDivergence', student='auxiliary_head.conv_seg',
                         teacher='auxiliary_head.conv_seg', tau=1.0, loss_weight=0.5)))
model_wrapper_cfg = dict(type='TSTDistributedDataParallel')
train_cfg = dict(_delete_=True, type='TSTIterBasedTrainLoop', max_iters=4,
                 val_interval=4, augment_iters=[0, 2], augment_steps=1)
optim_wrapper = dict(
    _delete_=True,
    constructor='TSTOptimWrapperConstructor',
    student=dict(type='OptimWrapper',
                 optimizer=dict(type='SGD', lr=0.01, momentum=0.9, weight_decay=5e-4)),
    augmenter=dict(type='OptimWrapper',
                   optimizer=dict(type='SGD', lr=0.01, momentum=0.9),
                   clip_grad=dict(max_norm=20)))
param_scheduler = dict(
    _delete_=True,
    student=[dict(type='ConstantLR', factor=1.0, by_epoch=False, begin=0, end=4)],
    augmenter=[])
