# The tiny TST RetinaNet with both TST hooks: the policy recorded every iteration, and
# the distillation weights warmed up over 2 iterations and switched off from iteration 3.
_base_ = './tst_retinanet_tiny.py'

custom_hooks = [
    dict(type='TSTPolicyHook', interval=1, plot_interval=2),
    dict(type='DistillLossWeightHook', warmup=2, stop=3),
]
# Log each iteration's own losses, not a 10-iteration running mean, so the test can
# read the distillation losses of single iterations.
log_processor = dict(window_size=1)
# No validation: the test reads only the training logs.
train_cfg = dict(val_interval=1000)
