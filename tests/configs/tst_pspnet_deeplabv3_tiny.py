# A heterogeneous TST pair, both models given as config files: the tiny PSPNet teacher
# (output stride 8) -> the tiny DeepLabV3 student (ASPP head, output stride 16). The
# teacher's logits are resized to the student's; the decode heads are distilled
# channel-wise (CWD), the auxiliary heads with KL. Pass the teacher's weights as
# `--cfg-options model.teacher_ckpt=PATH`.
_base_ = './tst_pspnet_tiny.py'

model = dict(
    student='{{fileDirname}}/deeplabv3_tiny_cityscapes_digits.py',
    teacher='{{fileDirname}}/pspnet_tiny_cityscapes_digits.py',
    distill_losses=dict(
        _delete_=True,
        loss_cwd_decode=dict(type='ChannelWiseDivergence', student='decode_head.conv_seg',
                             teacher='decode_head.conv_seg', tau=1.0, loss_weight=3.0),
        loss_kd_aux=dict(type='KLDivergence', student='auxiliary_head.conv_seg',
                         teacher='auxiliary_head.conv_seg', tau=1.0, loss_weight=0.5)))
