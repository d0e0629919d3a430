# The tiny TST config for exact-resume checks on several ranks: 6 iterations, augment
# phases before iterations 3 and 4 (either side of the checkpoint after iteration 3),
# each rank with its own random stream; each rank records its losses and weights.
_base_ = './tst_retinanet_tiny.py'
custom_imports = dict(imports=['tst_mm', 'rank_record'], allow_failed_imports=False)
custom_hooks = [dict(type='RankRecordHook')]
train_cfg = dict(max_iters=6, val_interval=1000, augment_iters=[2, 3])
param_scheduler = dict(
    student=[dict(type='ConstantLR', factor=1.0, by_epoch=False, begin=0, end=6)])
default_hooks = dict(checkpoint=dict(interval=3))
randomness = dict(seed=3, diff_rank_seed=True)
