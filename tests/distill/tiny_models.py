"""Tiny real mmdet / mmseg models for the distill tests (random init, no downloads)."""
import os.path as osp

import torch
from mmengine.config import Config
from mmengine.registry import DefaultScope
from mmengine.structures import InstanceData, PixelData


def _mmdet_model(config: str, **overrides):
    import mmdet
    from mmdet.registry import MODELS
    from mmdet.utils import register_all_modules

    register_all_modules(init_default_scope=False)
    path = osp.join(osp.dirname(mmdet.__file__), '.mim', 'configs', config)
    cfg = Config.fromfile(path)
    cfg.merge_from_dict({f'model.{key}': value for key, value in overrides.items()})
    # ResNet-18 at a quarter of its width: real mmdet code paths, little CPU time.
    cfg.model.backbone.update(depth=18, base_channels=16, init_cfg=None, style='pytorch',
                              frozen_stages=-1, norm_eval=False)  # from scratch
    cfg.model.neck.update(in_channels=[16, 32, 64, 128], out_channels=32)
    with DefaultScope.overwrite_default_scope('mmdet'):
        return MODELS.build(cfg.model)


def tiny_retinanet():
    return _mmdet_model('retinanet/retinanet_r50_fpn_1x_coco.py',
                        **{'bbox_head.in_channels': 32, 'bbox_head.feat_channels': 32,
                           'bbox_head.stacked_convs': 1, 'bbox_head.num_classes': 3})


def tiny_fcos():
    return _mmdet_model('fcos/fcos_r50-caffe_fpn_gn-head_1x_coco.py',
                        **{'bbox_head.in_channels': 32, 'bbox_head.feat_channels': 32,
                           'bbox_head.stacked_convs': 1, 'bbox_head.num_classes': 3,
                           'bbox_head.loss_bbox': dict(type='GIoULoss', loss_weight=1.0)})


def tiny_faster_rcnn():
    return _mmdet_model('faster_rcnn/faster-rcnn_r50_fpn_1x_coco.py',
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
