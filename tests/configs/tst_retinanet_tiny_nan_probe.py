# The tiny TST probe config with a loss that injects NaNs into chosen steps of either
# phase (tests/plugins/nan_probe.py; set its calls with --cfg-options). Distill losses
# also enter the augmenter objective (divergence), so both phases run the probe.
_base_ = './tst_retinanet_tiny_probe.py'
custom_imports = dict(imports=['tst_mm', 'tst_probe', 'nan_probe'],
                      allow_failed_imports=False)
model = dict(
    augment_loss_weights=dict(divergence=1.0),
    distill_losses=dict(
        loss_probe=dict(type='NaNProbeLoss', student='bbox_head.retina_cls',
                        teacher='bbox_head.retina_cls')))
