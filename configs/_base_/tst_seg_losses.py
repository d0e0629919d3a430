# The reference's student losses besides the task loss, for mmseg's EncoderDecoder
# models with an auxiliary FCN head: softmax KL (tau 1) between the class logits of the
# decode heads (weight 1.5) and of the auxiliary heads (0.5). Teacher logits of another
# resolution are resized to the student's. A config takes them as
# `distill_losses=_base_.tst_seg_distill_losses`.
# Strength: reduction='pixelmean' is the per-pixel KL averaged over pixels, the usual
# pixel-wise distillation loss. The reference used mmrazor's default 'batchmean' (the
# per-pixel KL summed over the 64 x 128 logits of a 512 x 1024 crop: 8192 times
# stronger, next to a cross-entropy averaged over 512 x 1024 pixels). That choice was
# not measured here (no Cityscapes on our machines); set reduction='batchmean' to
# reproduce it.
tst_seg_distill_losses = dict(
    loss_kd_decode=dict(type='KLDivergence', student='decode_head.conv_seg',
                        teacher='decode_head.conv_seg', tau=1.0, reduction='pixelmean',
                        loss_weight=1.5),
    loss_kd_aux=dict(type='KLDivergence', student='auxiliary_head.conv_seg',
                     teacher='auxiliary_head.conv_seg', tau=1.0, reduction='pixelmean',
                     loss_weight=0.5))
