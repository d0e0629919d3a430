# mmseg's PSPNet-R18-d8 Cityscapes config made tiny for CPU tests: a narrow ResNetV1c-18
# (dilated, output stride 8), BatchNorm instead of SyncBN, no ImageNet weights, and the
# generated 64 x 128 Cityscapes-format digits set (tst_mm.datasets.make_cityscapes_digits:
# digits are trainIds 0-9, background 10) read by mmseg's own CityscapesDataset.
_base_ = 'mmseg::pspnet/pspnet_r18-d8_4xb2-80k_cityscapes-512x1024.py'

data_root = 'data/demo/cityscapes/'
crop_size = (64, 128)  # (h, w): the images' own size, so nothing is resized or cropped
max_iters = 4
norm_cfg = dict(type='BN', requires_grad=True)
# mmseg configs keep a top-level `data_preprocessor` too (the Runner gives it to a model
# dict without one, e.g. a TSTDistiller): both pad to the crop size.
data_preprocessor = dict(size=crop_size)
model = dict(
    pretrained=None,
    data_preprocessor=data_preprocessor,
    backbone=dict(stem_channels=8, base_channels=8, norm_cfg=norm_cfg),
    decode_head=dict(in_channels=64, channels=16, norm_cfg=norm_cfg),
    auxiliary_head=dict(in_channels=32, channels=8, norm_cfg=norm_cfg))

train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='LoadAnnotations'),
    dict(type='PackSegInputs'),
]
test_pipeline = train_pipeline
train_dataloader = dict(
    batch_size=2, num_workers=0, persistent_workers=False,
    dataset=dict(data_root=data_root, pipeline=train_pipeline))
val_dataloader = dict(
    batch_size=2, num_workers=0, persistent_workers=False,
    dataset=dict(data_root=data_root, pipeline=test_pipeline))
test_dataloader = val_dataloader

train_cfg = dict(max_iters=max_iters, val_interval=max_iters)
param_scheduler = [dict(type='ConstantLR', factor=1.0, by_epoch=False, begin=0,
                        end=max_iters)]
default_hooks = dict(logger=dict(interval=1),
                     checkpoint=dict(interval=2, max_keep_ckpts=-1))
randomness = dict(seed=0)
env_cfg = dict(cudnn_benchmark=False)
