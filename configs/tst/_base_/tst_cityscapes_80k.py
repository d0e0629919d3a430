# TST settings shared by the shipped Cityscapes configs (mmseg, 80k iterations), used as
# a second `_base_` next to an mmseg config. The generic settings (tst_mm import, the
# DDP wrapper, TSTPolicyHook, the augmenter and its optimizer) come from tst_runtime.py
# and the distillation losses from ../../_base_/tst_seg_losses.py; this file replaces
# tst_runtime's epoch-based COCO schedule with mmseg's iteration-based one. As there, the
# settings that replace mmseg's are `tst_*` variables that each config assigns itself.
_base_ = ['./tst_runtime.py', '../../_base_/tst_seg_losses.py']

# When the augmenter trains. The reference trains it for one pass over the training set
# before its "epochs" 0, 6 and 12. Its 80k schedule runs on mmcv's IterBasedRunner, whose
# epoch is one pass of the (distributed) dataloader:
#
#   L = ceil(ceil(2975 / num_gpus) / images_per_gpu) iterations per epoch
#
# 2975 Cityscapes train images, mmseg's 4 GPUs x 2 images (the `4xb2` of the configs,
# kept here; the student sees both views, 4 images per GPU) -> L = ceil(744 / 2) = 372.
# So augment phases start before iterations 0, 6 L = 2232 and 12 L = 4464, and each is
# one pass, 372 augmenter steps (on the same 2-image batches). Augmenter steps are not
# student iterations: the student's 80k iterations, poly lr, logging, validation and
# checkpoints stay mmseg's. With another number of GPUs or images per GPU recompute L
# (e.g. 8 GPUs x 1 image: L = 372 as well; 4 GPUs x 1 image: L = 744 -> [0, 4464, 8928],
# augment_steps=744).
tst_train_cfg = dict(
    _delete_=True,
    type='TSTIterBasedTrainLoop', max_iters=80000, val_interval=8000,
    augment_iters=[0, 6 * 372, 12 * 372], augment_steps=372)

# The alternative: channel-wise distillation of the decode-head logits (Shu et al.,
# ICCV 2021) with mmrazor's Cityscapes setting (tau 1, weight 3). Use it with
# `distill_losses=_base_.tst_seg_cwd_losses`.
tst_seg_cwd_losses = dict(
    loss_cwd_decode=dict(type='ChannelWiseDivergence', student='decode_head.conv_seg',
                         teacher='decode_head.conv_seg', tau=1.0, loss_weight=3.0))
