# The study's segmentation student: the teacher's PSPNet at a quarter of ResNet-18's
# width, 1200 iterations on the first 200 training images (the low-data regime the
# study measures; see docs/results.md). At 300 iterations every arm, KD included, was
# still at the background-only answer (mIoU 8.3); at 600 two of five initialisations
# still were (seeds 3 and 4, in every arm); at 1200 all five learn the digits (18-26
# dev mIoU alone, the teacher 57). 1000 images instead of 200 did not help (seed 3 stayed
# at 8.3 in 600 iterations), nor did twice the learning rate (11.3).
_base_ = './pspnet_r18_cityscapes_digits.py'

max_iters = 1200
width = 16
model = dict(
    backbone=dict(stem_channels=width, base_channels=width),
    decode_head=dict(in_channels=8 * width, channels=2 * width),
    auxiliary_head=dict(in_channels=4 * width, channels=width))
train_dataloader = dict(dataset=dict(indices=200))
train_cfg = dict(max_iters=max_iters, val_interval=max_iters)
param_scheduler = [_base_.scratch_warmup, dict(_base_.scratch_cosine, end=max_iters,
                   T_max=max_iters - _base_.scratch_cosine.begin)]
default_hooks = dict(checkpoint=dict(interval=max_iters))
