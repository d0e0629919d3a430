# The demo's student: the teacher's RetinaNet with a quarter-width ResNet-18 (the
# teacher's is half width) and a narrower neck and head, about 4x fewer multiply-adds,
# trained alone.
_base_ = './retinanet_r18_digits.py'

model = dict(
    backbone=dict(base_channels=16),
    neck=dict(in_channels=[16, 32, 64, 128], out_channels=32),
    bbox_head=dict(in_channels=32, feat_channels=32))

# The students train 300 iterations (the teacher 900).
max_iters = 300
train_cfg = dict(max_iters=max_iters, val_interval=max_iters)
param_scheduler = [_base_.scratch_warmup, dict(_base_.scratch_cosine, end=max_iters,
                   T_max=max_iters - _base_.scratch_cosine.begin)]
default_hooks = dict(checkpoint=dict(interval=max_iters))
