# The tiny PSPNet with SyncBN, as mmseg's Cityscapes configs (the shipped pairs included)
# have it: a distributed run without CUDA must still train it.
_base_ = './pspnet_tiny_cityscapes_digits.py'

norm_cfg = dict(type='SyncBN', requires_grad=True)
model = dict(backbone=dict(norm_cfg=norm_cfg), decode_head=dict(norm_cfg=norm_cfg),
             auxiliary_head=dict(norm_cfg=norm_cfg))
