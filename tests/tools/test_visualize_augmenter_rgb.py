"""tools/visualize_augmenter.py draws what the augmenter sees in training: RGB pixels,
also for a caffe-style (BGR) model."""
import importlib.util
import os.path as osp

import mmcv
import pytest
import torch
from mmengine.config import Config
from mmengine.registry import init_default_scope

from tests.conftest import REPO, TEST_CONFIGS


def _tool():
    spec = importlib.util.spec_from_file_location(
        'visualize_augmenter', osp.join(REPO, 'tools', 'visualize_augmenter.py'))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize('config', ['retinanet_tiny_caffe.py', 'retinanet_tiny_digits.py',
                                    'tst_retinanet_tiny_caffe_teacher.py'])
def test_pixels_are_rgb_whatever_the_model_takes(coco_digits, config):
    cfg = Config.fromfile(osp.join(TEST_CONFIGS, config))
    cfg.train_dataloader.dataset.data_root = coco_digits
    cfg.train_dataloader.dataset.pipeline = [
        dict(type='LoadImageFromFile'), dict(type='LoadAnnotations', with_bbox=True),
        dict(type='PackDetInputs')]  # no resize: the pixels are the file's
    init_default_scope('mmdet')
    inputs, samples, _ = _tool().pixel_batch(cfg, 2)
    for pixels, sample in zip(inputs, samples):
        rgb = torch.from_numpy(mmcv.imread(sample.img_path, channel_order='rgb'))
        h, w = rgb.shape[:2]
        torch.testing.assert_close(pixels[:, :h, :w], rgb.permute(2, 0, 1).float(),
                                   rtol=0, atol=0)
        assert not torch.equal(rgb[..., 0], rgb[..., 2])  # BGR would not pass
