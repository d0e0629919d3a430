# TST on the tiny Mask R-CNN: an (untrained) teacher of the same shape, an FPN mimic,
# augment phases before iterations 1 and 3: the masks follow the augmenter's warps
# into both the student step and the augmenter's objective (the mask head's inverse
# is the flipped sigmoid cross-entropy).
_base_ = './mask_rcnn_tiny_digits.py'

model = dict(
    _delete_=True,
    type='TSTDistiller',
    student={{_base_.model}},
    teacher={{_base_.model}},
    teacher_ckpt=None,
    augmenter=dict(type='TSTAugmenter', num_ops=4),
    distill_losses=dict(
        loss_mimic_fpn=dict(type='FeatureMimic', student='neck', teacher='neck')))
model_wrapper_cfg = dict(type='TSTDistributedDataParallel')
train_cfg = dict(_delete_=True, type='TSTIterBasedTrainLoop', max_iters=4,
                 val_interval=4, augment_iters=[0, 2], augment_steps=1)
optim_wrapper = dict(
    _delete_=True,
    constructor='TSTOptimWrapperConstructor',
    student=dict(type='OptimWrapper',
                 optimizer=dict(type='SGD', lr=0.01, momentum=0.9, weight_decay=1e-4),
                 clip_grad=dict(max_norm=10)),
    augmenter=dict(type='OptimWrapper',
                   optimizer=dict(type='SGD', lr=0.01, momentum=0.9),
                   clip_grad=dict(max_norm=20)))
param_scheduler = dict(
    _delete_=True,
    student=[dict(type='ConstantLR', factor=1.0, by_epoch=False, begin=0, end=4)],
    augmenter=[])
