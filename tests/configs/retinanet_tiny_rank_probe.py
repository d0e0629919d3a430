# The tiny RetinaNet plus a test-only hook that records what each DDP rank trained.
_base_ = './retinanet_tiny_digits.py'
custom_imports = dict(imports=['tst_mm', 'rank_probe'], allow_failed_imports=False)
custom_hooks = [dict(type='RankProbeHook')]
