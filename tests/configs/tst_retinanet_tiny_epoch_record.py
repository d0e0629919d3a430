# The epoch-loop probe config for exact-resume checks: a checkpoint after every epoch
# (as mmdet's configs save them), and every rank records its losses and final weights.
_base_ = './tst_retinanet_tiny_epoch_probe.py'
custom_imports = dict(imports=['tst_mm', 'tst_probe', 'rank_record'],
                      allow_failed_imports=False)
custom_hooks = [dict(type='TSTPhaseProbeHook'), dict(type='RankRecordHook')]
default_hooks = dict(checkpoint=dict(interval=1, by_epoch=True))
