# The demo's student: the teacher's RetinaNet with a quarter-width ResNet-18 and a
# narrower neck and head (about 16x fewer multiply-adds), trained alone.
_base_ = './retinanet_r18_digits.py'

model = dict(
    backbone=dict(base_channels=16),
    neck=dict(in_channels=[16, 32, 64, 128], out_channels=32),
    bbox_head=dict(in_channels=32, feat_channels=32))
