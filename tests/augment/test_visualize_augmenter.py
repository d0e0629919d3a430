"""tools/visualize_augmenter.py on tiny generated COCO and Cityscapes digits sets."""
import importlib.util
import os.path as osp

import matplotlib.image
import numpy as np
import pytest
import torch

from tst_mm.augment import TSTAugmenter
from tst_mm.datasets import make_cityscapes_digits, make_coco_digits

ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))

DET_CFG = """
default_scope = 'mmdet'
model = dict(data_preprocessor=dict(type='DetDataPreprocessor', bgr_to_rgb=True,
                                    pad_size_divisor=32),
             augmenter=dict(type='TSTAugmenter', num_ops=3))
train_dataloader = dict(dataset=dict(
    type='CocoDataset', data_root={root!r}, ann_file='annotations/instances_train.json',
    data_prefix=dict(img='train/'), metainfo=dict(classes=tuple('0123456789')),
    pipeline=[dict(type='LoadImageFromFile'), dict(type='LoadAnnotations', with_bbox=True),
              dict(type='PackDetInputs')]))
"""
SEG_CFG = """
default_scope = 'mmseg'
model = dict(data_preprocessor=dict(type='SegDataPreProcessor', bgr_to_rgb=True,
                                    seg_pad_val=255, size=(64, 96)))
train_dataloader = dict(dataset=dict(
    type='CityscapesDataset', data_root={root!r},
    data_prefix=dict(img_path='leftImg8bit/train', seg_map_path='gtFine/train'),
    pipeline=[dict(type='LoadImageFromFile'), dict(type='LoadAnnotations'),
              dict(type='PackSegInputs')]))
"""


def _tool():
    spec = importlib.util.spec_from_file_location(
        'visualize_augmenter', osp.join(ROOT, 'tools', 'visualize_augmenter.py'))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize('kind', ['det', 'seg'])
def test_writes_a_grid_png(tmp_path, kind):
    if kind == 'det':
        root = make_coco_digits(str(tmp_path / 'coco'), num_train=2, num_val=1,
                                image_size=(48, 64), seed=1)
        text = DET_CFG.format(root=root)
    else:
        root = make_cityscapes_digits(str(tmp_path / 'cs'), num_train=2, num_val=1,
                                      image_size=(48, 80), seed=1)
        text = SEG_CFG.format(root=root)
    cfg = tmp_path / f'{kind}.py'
    cfg.write_text(text)
    out = tmp_path / 'grid.png'
    _tool().main([str(cfg), '--num-images', '2', '--views', '2', '--out', str(out)])
    img = matplotlib.image.imread(str(out))
    assert img.ndim == 3 and img.shape[0] > 100 and img.shape[1] > img.shape[0]
    assert img[..., :3].std() > 0.05  # something was drawn


def test_loads_the_learned_policy_from_a_checkpoint(tmp_path):
    tool = _tool()
    trained = TSTAugmenter()
    with torch.no_grad():
        trained.probability_logits.uniform_(-3, 3)
        trained.magnitude_logits.uniform_(-3, 3)
    ckpt = tmp_path / 'tst.pth'
    torch.save({'state_dict': {f'augmenter.{k}': v for k, v in
                               trained.state_dict().items()}}, str(ckpt))
    from mmengine.config import Config
    cfg = Config(dict(model=dict(augmenter=dict(type='TSTAugmenter'))))
    loaded = tool.build_augmenter(cfg, str(ckpt))
    assert loaded.policy() == trained.policy()
    torch.save({'state_dict': {'backbone.w': torch.zeros(1)}}, str(ckpt))
    with pytest.raises(KeyError, match='augmenter'):
        tool.build_augmenter(cfg, str(ckpt))


def test_label_maps_are_drawn_in_the_dataset_palette(tmp_path, cityscapes_digits,
                                                     monkeypatch):
    """mmseg's CityscapesDataset has a palette: each class is overlaid in its colour
    (the digits are trainIds 0-9, the background 10, 'sky'), as mmseg draws it."""
    from matplotlib.axes import Axes
    from mmseg.datasets import CityscapesDataset

    overlays, imshow = [], Axes.imshow

    def recording(self, image, *args, **kwargs):
        if getattr(image, 'ndim', 0) == 3 and image.shape[-1] == 4:  # the RGBA overlays
            overlays.append(np.asarray(image))
        return imshow(self, image, *args, **kwargs)

    monkeypatch.setattr(Axes, 'imshow', recording)
    cfg = tmp_path / 'seg.py'
    cfg.write_text(SEG_CFG.format(root=cityscapes_digits).replace('(64, 96)', '(64, 128)'))
    _tool().main([str(cfg), '--num-images', '2', '--views', '1',
                  '--out', str(tmp_path / 'grid.png')])
    palette = np.asarray(CityscapesDataset.METAINFO['palette']) / 255
    assert len(overlays) == 4  # 2 images x (original + 1 view)
    for overlay in overlays:
        shown = overlay[overlay[..., 3] > 0][:, :3]
        nearest = np.abs(shown[:, None] - palette[None]).sum(-1).min(1)
        assert nearest.max() < 1e-6, 'a label drawn in a colour not in the palette'
        assert np.isclose(shown, palette[10]).all(-1).any()  # the background, 'sky'
