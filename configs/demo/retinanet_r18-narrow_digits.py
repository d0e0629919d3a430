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
param_scheduler = [
    dict(type='LinearLR', start_factor=0.01, by_epoch=False, begin=0, end=30),
    dict(type='CosineAnnealingLR', by_epoch=False, begin=30, end=max_iters,
         T_max=max_iters - 30, eta_min=1e-5),
]
default_hooks = dict(checkpoint=dict(interval=max_iters))
