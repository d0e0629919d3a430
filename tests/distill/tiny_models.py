"""Tiny real mmdet / mmseg models for the distill tests (random init, no downloads)."""
import os.path as osp

import torch
from mmengine.config import Config
from mmengine.registry import DefaultScope
from mmengine.structures import InstanceData, PixelData


def _mmdet_cfg(config: str, **overrides) -> dict:
    import mmdet
    from mmdet.utils import register_all_modules

    register_all_modules(init_default_scope=False)
    path = osp.join(osp.dirname(mmdet.__file__), '.mim', 'configs', config)
    cfg = Config.fromfile(path)
    cfg.merge_from_dict({f'model.{key}': value for key, value in overrides.items()})
    # ResNet-18 at a quarter of its width: real mmdet code paths, little CPU time.
    cfg.model.backbone.update(depth=18, base_channels=16, init_cfg=None, style='pytorch',
                              frozen_stages=-1, norm_eval=False)  # from scratch
    cfg.model.neck.update(in_channels=[16, 32, 64, 128], out_channels=32)
    return cfg.model


def _mmdet_model(config: str, **overrides):
    from mmdet.registry import MODELS
    cfg = _mmdet_cfg(config, **overrides)
    with DefaultScope.overwrite_default_scope('mmdet'):
        return MODELS.build(cfg)


# A dense head as narrow as the neck: one conv per branch, 3 classes.
DENSE_HEAD = {'bbox_head.in_channels': 32, 'bbox_head.feat_channels': 32,
              'bbox_head.stacked_convs': 1, 'bbox_head.num_classes': 3}


def tiny_retinanet(build=True):
    make = _mmdet_model if build else _mmdet_cfg  # a model, or its config
    return make('retinanet/retinanet_r50_fpn_1x_coco.py', **DENSE_HEAD)


def tiny_fcos(build=True):
    make = _mmdet_model if build else _mmdet_cfg  # a model, or its config
    return make('fcos/fcos_r50-caffe_fpn_gn-head_1x_coco.py', **DENSE_HEAD,
                **{'bbox_head.loss_bbox': dict(type='GIoULoss', loss_weight=1.0)})


def tiny_faster_rcnn(build=True):
    make = _mmdet_model if build else _mmdet_cfg  # a model, or its config
    return make('faster_rcnn/faster-rcnn_r50_fpn_1x_coco.py',
                **{'rpn_head.in_channels': 32, 'rpn_head.feat_channels': 32,
                   'roi_head.bbox_roi_extractor.out_channels': 32,
                   'roi_head.bbox_head.in_channels': 32,
                   'roi_head.bbox_head.fc_out_channels': 32,
                   'roi_head.bbox_head.num_classes': 3,
                   # fewer proposals and sampled RoIs keep the CPU test fast
                   'train_cfg.rpn_proposal.max_per_img': 64,
                   'train_cfg.rcnn.sampler.num': 32})


def det_batch(size=(64, 64), batch=2):
    from mmdet.structures import DetDataSample

    h, w = size
    samples = []
    for i in range(batch):
        sample = DetDataSample(metainfo=dict(img_shape=size, pad_shape=size,
                                             batch_input_shape=size, ori_shape=size,
                                             scale_factor=(1.0, 1.0)))
        sample.gt_instances = InstanceData(
            bboxes=torch.tensor([[4.0, 6.0, 40.0, 50.0], [30.0 + i, 10.0, 60.0, 60.0]]),
            labels=torch.tensor([i % 3, 2]))
        samples.append(sample)
    return torch.randn(batch, 3, h, w), samples


def tiny_segmentor(with_ohem: bool = True):
    """FCN with a ResNetV1c-18 backbone, 19 classes, a decode and an auxiliary head.

    The auxiliary head has two losses in an nn.ModuleList, one averaging over
    non-ignored pixels only.
    """
    from mmseg.registry import MODELS
    from mmseg.utils import register_all_modules

    register_all_modules(init_default_scope=False)
    norm_cfg = dict(type='BN', requires_grad=True)
    cfg = dict(
        type='EncoderDecoder',
        backbone=dict(type='ResNetV1c', depth=18, num_stages=4, out_indices=(0, 1, 2, 3),
                      dilations=(1, 1, 2, 4), strides=(1, 2, 1, 1), norm_cfg=norm_cfg,
                      contract_dilation=True, init_cfg=None),
        decode_head=dict(
            type='FCNHead', in_channels=512, in_index=3, channels=32, num_convs=1,
            concat_input=False, num_classes=19, norm_cfg=norm_cfg, align_corners=False,
            # thresh near 1/19 so that OHEM drops about half the pixels of a random net
            sampler=dict(type='OHEMPixelSampler', thresh=0.05, min_kept=10)
            if with_ohem else None,
            loss_decode=dict(type='CrossEntropyLoss', use_sigmoid=False, loss_weight=1.0)),
        auxiliary_head=dict(
            type='FCNHead', in_channels=256, in_index=2, channels=16, num_convs=1,
            concat_input=False, num_classes=19, norm_cfg=norm_cfg, align_corners=False,
            loss_decode=[
                dict(type='CrossEntropyLoss', loss_weight=0.4, loss_name='loss_ce'),
                dict(type='CrossEntropyLoss', loss_weight=0.2, loss_name='loss_ce_valid',
                     avg_non_ignore=True),
            ]),
        train_cfg=dict(), test_cfg=dict(mode='whole'))
    with DefaultScope.overwrite_default_scope('mmseg'):
        return MODELS.build(cfg)


def seg_batch(size=(32, 48), batch=2, num_classes=19):
    from mmseg.structures import SegDataSample

    samples = []
    for _ in range(batch):
        label = torch.randint(0, num_classes, (1, *size))
        label[:, :4] = 255  # an ignored band, as Cityscapes' void pixels
        sample = SegDataSample(
            metainfo=dict(img_shape=size, pad_shape=size, ori_shape=size))
        sample.gt_sem_seg = PixelData(data=label)
        samples.append(sample)
    return torch.randn(batch, 3, *size), samples


def _mmseg_cfg(config: str, **overrides) -> dict:
    from mmseg.utils import register_all_modules

    import mmseg
    register_all_modules(init_default_scope=False)
    path = osp.join(osp.dirname(mmseg.__file__), '.mim', 'configs', config)
    cfg = Config.fromfile(path)
    cfg.model.pretrained = None
    cfg.model.backbone.init_cfg = None
    cfg.merge_from_dict({f'model.{key}': value for key, value in overrides.items()})
    return _no_sync_bn(cfg.model)


def _no_sync_bn(cfg):
    """SyncBN -> BN everywhere in a config (the CPU has no SyncBN)."""
    if isinstance(cfg, dict):
        if cfg.get('type') == 'SyncBN':
            cfg['type'] = 'BN'
        for value in cfg.values():
            _no_sync_bn(value)
    elif isinstance(cfg, (list, tuple)):
        for value in cfg:
            _no_sync_bn(value)
    return cfg


def _mmseg_model(config: str, **overrides):
    from mmseg.registry import MODELS
    cfg = _mmseg_cfg(config, **overrides)
    with DefaultScope.overwrite_default_scope('mmseg'):
        return MODELS.build(cfg)


def _narrow_resnet_v1c(**head_overrides) -> dict:
    """A ResNetV1c-18 at an eighth of its width (output stride 8) and small heads."""
    return {'backbone.depth': 18, 'backbone.stem_channels': 8, 'backbone.base_channels': 8,
            'decode_head.in_channels': 64, 'decode_head.channels': 16,
            'auxiliary_head.in_channels': 32, 'auxiliary_head.channels': 8,
            **head_overrides}


def tiny_pspnet(build=True):
    make = _mmseg_model if build else _mmseg_cfg  # a model, or its config
    return make('pspnet/pspnet_r18-d8_4xb2-80k_cityscapes-512x1024.py',
                **_narrow_resnet_v1c())


def tiny_deeplabv3(build=True):
    make = _mmseg_model if build else _mmseg_cfg  # a model, or its config
    return make('deeplabv3/deeplabv3_r50-d8_4xb2-40k_cityscapes-512x1024.py',
                **_narrow_resnet_v1c())


def tiny_segformer(build=True):
    """SegFormer's MiT at a quarter of B0's width, 19 classes."""
    make = _mmseg_model if build else _mmseg_cfg  # a model, or its config
    return make('segformer/segformer_mit-b0_8xb1-160k_cityscapes-1024x1024.py',
                **{'backbone.embed_dims': 8, 'backbone.num_layers': [1, 1, 1, 1],
                   'decode_head.in_channels': [8, 16, 40, 64],
                   'decode_head.channels': 16})


def tiny_atss(build=True):
    make = _mmdet_model if build else _mmdet_cfg  # a model, or its config
    return make('atss/atss_r50_fpn_1x_coco.py', **DENSE_HEAD)


def tiny_gfl(build=True):
    make = _mmdet_model if build else _mmdet_cfg  # a model, or its config
    return make('gfl/gfl_r50_fpn_1x_coco.py', **DENSE_HEAD)
