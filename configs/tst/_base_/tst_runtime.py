# TST settings shared by the shipped COCO configs, used as a second `_base_` next to an
# mmdet config: the augmenter, its optimizer and the DDP wrapper
# (../../_base_/tst_distiller.py, which says how a config wires them in), the policy
# hook and the COCO 2x schedule of the augment phases. The settings that replace
# mmdet's are `tst_*` variables that each config assigns itself.
_base_ = '../../_base_/tst_distiller.py'

custom_imports = dict(imports=['tst_mm'], allow_failed_imports=False)

# The learned policy in the logs and in work_dir/policy.png. With epoch-level
# alternation it changes only in the augment phases, and the hook records it right
# after each; the interval only adds checkpoints of an unchanged policy.
custom_hooks = [dict(type='TSTPolicyHook', interval=1000)]

# COCO 2x (24 epochs); one pass of augmenter training before epochs 7 and 13 (0-based
# 6 and 12), as the reference does. Augmenter steps are not student iterations: the
# student's schedule, logging and checkpoints are those of the mmdet config.
tst_train_cfg = dict(type='TSTEpochBasedTrainLoop', max_epochs=24, val_interval=1,
                     augment_epochs=[6, 12], augment_passes=1)
