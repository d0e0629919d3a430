# The demo's teacher: a small RetinaNet (ResNet-18 at half width, trained from scratch:
# no ImageNet weights offline) on the generated COCO-format digits set (1000 train /
# 200 val images, `make demo` writes it), sized for about 4 minutes on 2 CPU cores at
# 128 x 128. `make demo` trains it through tools/train.py.
_base_ = ['mmdet::retinanet/retinanet_r50_fpn_1x_coco.py', '../_base_/digits_from_scratch.py']
custom_imports = dict(imports=['tst_mm'], allow_failed_imports=False)

data_root = 'data/demo/coco/'
metainfo = dict(classes=('0', '1', '2', '3', '4', '5', '6', '7', '8', '9'))
max_iters = 900  # the teacher trains 3x longer than the students
image_size = (128, 128)  # (w, h) for mmdet's Resize

# No ImageNet weights can be fetched offline: the backbone starts from scratch, so
# every stage trains and BatchNorm normalises with batch statistics (mmdet's defaults,
# frozen_stages=1 and norm_eval=True, are for an ImageNet-initialised backbone: they
# would keep a random stem frozen and BatchNorm at its initial statistics).
# Anchors half mmdet's size (octave_base_scale 2: 16-25 px at stride 8), as the digits
# are 16-38 px tall at 128 x 128.
model = dict(
    backbone=dict(depth=18, base_channels=32, init_cfg=None, frozen_stages=-1,
                  norm_eval=False),
    neck=dict(in_channels=[32, 64, 128, 256], out_channels=64),
    bbox_head=dict(num_classes=10, in_channels=64, feat_channels=64, stacked_convs=2,
                   anchor_generator=dict(octave_base_scale=2)))

# No flips: a mirrored digit is a different symbol.
train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='LoadAnnotations', with_bbox=True),
    dict(type='Resize', scale=image_size, keep_ratio=True),
    dict(type='PackDetInputs'),
]
test_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='Resize', scale=image_size, keep_ratio=True),
    dict(type='LoadAnnotations', with_bbox=True),
    dict(type='PackDetInputs',
         meta_keys=('img_id', 'img_path', 'ori_shape', 'img_shape', 'scale_factor')),
]
train_dataloader = dict(
    batch_size=8, num_workers=1, persistent_workers=True,
    sampler=dict(type='InfiniteSampler', shuffle=True),
    dataset=dict(
        data_root=data_root, metainfo=metainfo,
        ann_file='annotations/instances_train.json', data_prefix=dict(img='train/'),
        pipeline=train_pipeline))
val_dataloader = dict(
    batch_size=4, num_workers=1, persistent_workers=True,
    dataset=dict(
        data_root=data_root, metainfo=metainfo,
        ann_file='annotations/instances_val.json', data_prefix=dict(img='val/'),
        pipeline=test_pipeline))
test_dataloader = val_dataloader
val_evaluator = dict(ann_file=data_root + 'annotations/instances_val.json')
test_evaluator = val_evaluator

train_cfg = dict(_delete_=True, type='IterBasedTrainLoop', max_iters=max_iters,
                 val_interval=max_iters)
optim_wrapper = _base_.scratch_optim_wrapper
param_scheduler = [_base_.scratch_warmup, dict(_base_.scratch_cosine, end=max_iters,
                   T_max=max_iters - _base_.scratch_cosine.begin)]
default_hooks = dict(
    logger=dict(type='LoggerHook', interval=20),
    checkpoint=dict(type='CheckpointHook', by_epoch=False, interval=max_iters,
                    max_keep_ckpts=1))
log_processor = dict(by_epoch=False)
randomness = dict(seed=0)  # the demo's seed; `tools/demo.py --cfg-options randomness.seed=N`
auto_scale_lr = dict(enable=False, base_batch_size=8)
