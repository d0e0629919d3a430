# The tiny segmentation TST config plus a test-only hook that records what each phase
# changed.
_base_ = './tst_pspnet_tiny.py'
custom_imports = dict(imports=['tst_mm', 'tst_probe'], allow_failed_imports=False)
custom_hooks = [dict(type='TSTPhaseProbeHook')]
