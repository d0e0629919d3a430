# The tiny TST pair with the data of retinanet_tiny_batch_record.py (random flips in a
# worker) and augment phases of 3 steps before iterations 1 and 4: the "TST" arm.
_base_ = './tst_retinanet_tiny.py'
custom_imports = dict(imports=['tst_mm', 'batch_record'], allow_failed_imports=False)
custom_hooks = [dict(type='BatchRecordHook')]
train_dataloader = dict(
    num_workers=1, persistent_workers=True,
    dataset=dict(pipeline=[
        dict(type='LoadImageFromFile'),
        dict(type='LoadAnnotations', with_bbox=True),
        dict(type='Resize', scale={{_base_.image_size}}, keep_ratio=True),
        dict(type='RandomFlip', prob=0.5),
        dict(type='PackDetInputs'),
    ]))
train_cfg = dict(max_iters=6, val_interval=6, augment_iters=[0, 3], augment_steps=3)
