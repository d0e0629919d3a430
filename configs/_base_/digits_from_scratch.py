# How the demo's and the study's small models train from scratch on the generated
# digits (no ImageNet weights offline): AdamW with gradient clipping, a 30-iteration
# linear warm-up, then a cosine decay to 1e-5 at the end of training. Use it as a
# second `_base_` next to an mmdet or mmseg config; the optimizer and schedule replace
# that config's, so they are `scratch_*` variables each config assigns itself, ending
# the cosine at its own max_iters:
#
#   optim_wrapper = _base_.scratch_optim_wrapper
#   param_scheduler = [_base_.scratch_warmup, dict(_base_.scratch_cosine, end=max_iters,
#                      T_max=max_iters - _base_.scratch_cosine.begin)]
scratch_optim_wrapper = dict(
    _delete_=True, type='OptimWrapper',
    optimizer=dict(type='AdamW', lr=2e-3, weight_decay=0.05),
    clip_grad=dict(max_norm=10, norm_type=2))
scratch_warmup = dict(type='LinearLR', start_factor=0.01, by_epoch=False, begin=0, end=30)
scratch_cosine = dict(type='CosineAnnealingLR', by_epoch=False, begin=30, eta_min=1e-5)
