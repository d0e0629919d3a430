# README's recipe on a user's own ATSS config: no distill_losses, no module paths.
_base_ = './atss_tiny_digits.py'
custom_imports = dict(imports=['tst_mm'], allow_failed_imports=False)

model = dict(
    _delete_=True, type='TSTDistiller', student={{_base_.model}},
    teacher={{_base_.model}}, teacher_ckpt=None,
    augmenter=dict(type='TSTAugmenter', num_ops=4, temperature=0.05))
train_cfg = dict(_delete_=True, type='TSTIterBasedTrainLoop', max_iters=2, val_interval=2,
                 augment_iters=[0], augment_steps=1)
optim_wrapper = dict(
    _delete_=True, constructor='TSTOptimWrapperConstructor',
    student={{_base_.optim_wrapper}},
    augmenter=dict(type='OptimWrapper', optimizer=dict(type='SGD', lr=0.01, momentum=0.9),
                   clip_grad=dict(max_norm=20)))
param_scheduler = dict(_delete_=True, student={{_base_.param_scheduler}}, augmenter=[])
model_wrapper_cfg = dict(type='TSTDistributedDataParallel')
