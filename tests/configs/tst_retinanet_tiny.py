# TST on the tiny RetinaNet: the student and an (untrained) teacher of the same shape,
# binary KL on the classification logits and an FPN mimic, augment phases at
# iterations 0 and 2.
_base_ = './retinanet_tiny_digits.py'

model = dict(
    _delete_=True,
    type='TSTDistiller',
    student={{_base_.model}},
    teacher={{_base_.model}},
    teacher_ckpt=None,
    augmenter=dict(type='TSTAugmenter', num_ops=4),
    distill_losses=dict(
        loss_kd_cls=dict(type='BinaryKLDivergence', student='bbox_head.retina_cls',
                         teacher='bbox_head.retina_cls', loss_weight=1.0),
        loss_mimic_fpn=dict(type='FeatureMimic', student='neck', teacher='neck',
                            loss_weight=1.0)))
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
