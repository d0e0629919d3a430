# A tiny DeepLabV3 (ASPP head) on the digits Cityscapes set, for heterogeneous pairs:
# the tiny PSPNet's data and narrow ResNetV1c-18, but with output stride 16 (mmseg's
# `d16` layout: strides (1, 2, 2, 1), dilations (1, 1, 1, 2)), so its logits are half
# the PSPNet's resolution.
_base_ = './pspnet_tiny_cityscapes_digits.py'

norm_cfg = dict(type='BN', requires_grad=True)
model = dict(
    backbone=dict(strides=(1, 2, 2, 1), dilations=(1, 1, 1, 2)),
    decode_head=dict(
        _delete_=True,
        type='ASPPHead', in_channels=64, in_index=3, channels=16,
        dilations=(1, 2, 4, 6), dropout_ratio=0.1, num_classes=19, norm_cfg=norm_cfg,
        align_corners=False,
        loss_decode=dict(type='CrossEntropyLoss', use_sigmoid=False, loss_weight=1.0)))
