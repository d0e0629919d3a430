# TST settings shared by the shipped COCO configs, used as a second `_base_` next to an
# mmdet config. Two bases must not define the same key, so the settings that replace
# mmdet's (train_cfg, optim_wrapper, param_scheduler, the model) are `tst_*` variables
# here, and each config assigns them itself: see retinanet_r101_r50_coco.py.
custom_imports = dict(imports=['tst_mm'], allow_failed_imports=False)

# mmengine's MMDistributedDataParallel never calls the distiller's train_step.
model_wrapper_cfg = dict(type='TSTDistributedDataParallel')

# The learned policy in the logs and in work_dir/policy.png. With epoch-level
# alternation it changes only in the augment phases, and the hook records it right
# after each; the interval only adds checkpoints of an unchanged policy.
custom_hooks = [dict(type='TSTPolicyHook', interval=1000)]

# 4 of the 14 ops per image, relaxed-Bernoulli gates at temperature 0.05.
tst_augmenter = dict(type='TSTAugmenter', num_ops=4, temperature=0.05)

# The reference's augmenter optimizer: SGD lr 0.01, momentum 0.9, grad-norm clip 20.
# Its state and learning rate are reset before every augment phase.
tst_augmenter_optim_wrapper = dict(
    type='OptimWrapper',
    optimizer=dict(type='SGD', lr=0.01, momentum=0.9),
    clip_grad=dict(max_norm=20))

# COCO 2x (24 epochs); one pass of augmenter training before epochs 7 and 13 (0-based
# 6 and 12), as the reference does. Augmenter steps are not student iterations: the
# student's schedule, logging and checkpoints are those of the mmdet config.
tst_train_cfg = dict(type='TSTEpochBasedTrainLoop', max_epochs=24, val_interval=1,
                     augment_epochs=[6, 12], augment_passes=1)
