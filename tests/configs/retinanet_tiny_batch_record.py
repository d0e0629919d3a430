# The tiny RetinaNet trained alone, with random flips loaded by a worker process and a
# hook that records each step's images: the "student alone" arm of a study.
_base_ = './retinanet_tiny_digits.py'
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
train_cfg = dict(max_iters=6, val_interval=6)
