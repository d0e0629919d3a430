# TST on the tiny PSPNet pair with SyncBN in student and teacher (see pspnet_tiny_syncbn.py).
_base_ = './tst_pspnet_tiny.py'

norm_cfg = dict(type='SyncBN', requires_grad=True)
syncbn_model = dict(backbone=dict(norm_cfg=norm_cfg), decode_head=dict(norm_cfg=norm_cfg),
                    auxiliary_head=dict(norm_cfg=norm_cfg))
model = dict(student=syncbn_model, teacher=syncbn_model)
