# What every TST config adds to its student's config: the TSTDistiller around the
# student, with the augmenter; the two optimizer wrappers and one scheduler list per
# wrapper; the DDP wrapper. Use it as a second `_base_` next to the student's config.
# Two bases must not define the same key, and only the config that inherits the
# student's can reach its model, optimizer and schedule, so this file holds `tst_*`
# variables that each config wires in, reading its bases as `_base_.<name>`:
#
#   model = dict(_base_.tst_model, student=_base_.model, teacher=..., teacher_ckpt=...,
#                distill_losses=...)
#   optim_wrapper = dict(_base_.tst_optim_wrapper, student=_base_.optim_wrapper)
#   param_scheduler = dict(_base_.tst_param_scheduler, student=_base_.param_scheduler)
#
# (`_delete_=True` in them replaces the student's model, optimizer and schedule instead
# of merging into them.)

# mmengine's MMDistributedDataParallel never calls the distiller's train_step.
model_wrapper_cfg = dict(type='TSTDistributedDataParallel')

# 4 of the 14 ops per image, relaxed-Bernoulli gates at temperature 0.05.
tst_augmenter = dict(type='TSTAugmenter', num_ops=4, temperature=0.05)
tst_model = dict(_delete_=True, type='TSTDistiller', augmenter=tst_augmenter)

# The reference's augmenter optimizer: SGD lr 0.01, momentum 0.9, grad-norm clip 20.
# Its state and learning rate are reset before every augment phase, so it has no
# scheduler. mmengine needs a constructor for two optimizer wrappers, and a scheduler
# list for each.
tst_augmenter_optim_wrapper = dict(
    type='OptimWrapper',
    optimizer=dict(type='SGD', lr=0.01, momentum=0.9),
    clip_grad=dict(max_norm=20))
tst_optim_wrapper = dict(_delete_=True, constructor='TSTOptimWrapperConstructor',
                         augmenter=tst_augmenter_optim_wrapper)
tst_param_scheduler = dict(_delete_=True, augmenter=[])
