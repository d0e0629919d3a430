# The tiny TST config on the epoch-based loop: 2 epochs of 4 iterations, an augment
# phase (one pass) before the second epoch; with the phase probe.
_base_ = './tst_retinanet_tiny_probe.py'
train_dataloader = dict(sampler=dict(_delete_=True, type='DefaultSampler', shuffle=True))
train_cfg = dict(_delete_=True, type='TSTEpochBasedTrainLoop', max_epochs=2,
                 val_interval=2, augment_epochs=[1], augment_passes=1)
