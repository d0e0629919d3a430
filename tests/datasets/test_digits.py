"""The digits demo sets: rendering, mmdet/mmseg loading, metrics, determinism, reuse."""
import glob
import importlib.util
import json
import os
import os.path as osp
import re

import numpy as np
import pytest
import torch
from mmengine.registry import DefaultScope
from pycocotools import mask as mask_utils

from tst_mm.datasets import (BACKGROUND_TRAIN_ID, DIGIT_CLASSES, ensure_digits_set,
                             make_cityscapes_digits, make_coco_digits, render_scene)

# The module's fixtures are trained / written once: its tests share one xdist worker.
pytestmark = pytest.mark.xdist_group('digits_sets')

COCO_KW = dict(num_train=4, num_val=3, image_size=(96, 112), seed=3)
CS_KW = dict(num_train=4, num_val=2, image_size=(64, 128), seed=5)
TINY_KW = dict(num_train=3, num_val=1, image_size=(48, 64), seed=7)


@pytest.fixture(scope='module')
def coco_root(tmp_path_factory):
    return make_coco_digits(str(tmp_path_factory.mktemp('coco')), **COCO_KW)


@pytest.fixture(scope='module')
def cs_root(tmp_path_factory):
    return make_cityscapes_digits(str(tmp_path_factory.mktemp('cityscapes')), **CS_KW)


def _load_coco(root, split):
    with open(osp.join(root, 'annotations', f'instances_{split}.json')) as f:
        return json.load(f)


def _decode(segmentation):
    rle = mask_utils.frPyObjects(segmentation, *segmentation['size'])
    return mask_utils.decode(rle).astype(bool)


def _tight_box(mask):
    ys, xs = np.nonzero(mask)
    return [int(xs.min()), int(ys.min()), int(np.ptp(xs) + 1), int(np.ptp(ys) + 1)]


def _file_times(root):
    paths = sorted(glob.glob(osp.join(root, '**', '*.*'), recursive=True))
    return {p: os.stat(p).st_mtime_ns for p in paths}


def test_render_scene_pastes_visible_digits_with_tight_boxes():
    for seed in range(6):
        scene = render_scene(np.random.default_rng(seed), (96, 128), (16, 40), (2, 6))
        assert len(scene.instances) in range(1, 7)
        # Textured, not a flat colour: neighbouring pixels differ noticeably.
        assert np.abs(np.diff(scene.background.astype(int), axis=1)).mean() > 1.0
        painted = np.zeros((96, 128), dtype=bool)
        diff = np.abs(scene.image.astype(int) - scene.background.astype(int)).sum(-1)
        for inst in scene.instances:
            assert 0 <= inst.label <= 9
            assert list(inst.bbox) == _tight_box(inst.mask)
            assert not (painted & inst.mask).any(), 'digits must not overlap'
            painted |= inst.mask
            assert diff[inst.mask].mean() > 60, f'digit {inst} is hard to see'
        # Nothing outside the masks was touched, so no box misses a visible pixel.
        assert (diff[~painted] == 0).all()


def test_coco_loads_through_mmdet_with_tight_boxes(coco_root):
    from mmdet.datasets import CocoDataset
    coco = _load_coco(coco_root, 'train')
    assert [c['name'] for c in coco['categories']] == list(DIGIT_CLASSES)
    with DefaultScope.overwrite_default_scope('mmdet'):
        dataset = CocoDataset(
            data_root=coco_root, ann_file='annotations/instances_train.json',
            data_prefix=dict(img='train/'), metainfo=dict(classes=DIGIT_CLASSES),
            pipeline=[dict(type='LoadImageFromFile'),
                      dict(type='LoadAnnotations', with_bbox=True, with_mask=True),
                      dict(type='PackDetInputs')])
    assert len(dataset) == COCO_KW['num_train']
    for i in range(len(dataset)):
        info = dataset.get_data_info(i)
        anns = [a for a in coco['annotations'] if a['image_id'] == info['img_id']]
        assert 2 <= len(anns) <= 6
        packed = dataset[i]
        assert tuple(packed['inputs'].shape) == (3, *COCO_KW['image_size'])
        gt = packed['data_samples'].gt_instances
        xyxy = [[x, y, x + w, y + h] for x, y, w, h in (a['bbox'] for a in anns)]
        assert torch.equal(gt.bboxes.tensor, torch.tensor(xyxy, dtype=torch.float32))
        assert gt.labels.tolist() == [a['category_id'] - 1 for a in anns]
        for ann, loaded_mask in zip(anns, gt.masks.masks):
            mask = _decode(ann['segmentation'])
            assert np.array_equal(loaded_mask.astype(bool), mask)
            assert ann['bbox'] == _tight_box(mask) and ann['area'] == int(mask.sum())


def test_coco_metric_scores_ground_truth_as_perfect(coco_root):
    from mmdet.evaluation import CocoMetric
    coco = _load_coco(coco_root, 'val')
    metric = CocoMetric(ann_file=osp.join(coco_root, 'annotations', 'instances_val.json'),
                        metric=['bbox', 'segm'])
    metric.dataset_meta = dict(classes=DIGIT_CLASSES)
    for img in coco['images']:
        anns = [a for a in coco['annotations'] if a['image_id'] == img['id']]
        boxes = [[x, y, x + w, y + h] for x, y, w, h in (a['bbox'] for a in anns)]
        pred = dict(bboxes=torch.tensor(boxes, dtype=torch.float32),
                    scores=torch.ones(len(anns)),
                    labels=torch.tensor([a['category_id'] - 1 for a in anns]),
                    masks=torch.from_numpy(
                        np.stack([_decode(a['segmentation']) for a in anns])))
        metric.process({}, [dict(img_id=img['id'], ori_shape=(img['height'], img['width']),
                                 pred_instances=pred)])
    results = metric.evaluate(size=len(coco['images']))
    assert results['coco/bbox_mAP'] == pytest.approx(1.0)
    assert results['coco/segm_mAP'] == pytest.approx(1.0)


def test_cityscapes_loads_through_mmseg_with_digit_labels(cs_root):
    from mmseg.datasets import CityscapesDataset
    with DefaultScope.overwrite_default_scope('mmseg'):
        dataset = CityscapesDataset(
            data_root=cs_root,
            data_prefix=dict(img_path='leftImg8bit/train', seg_map_path='gtFine/train'),
            pipeline=[dict(type='LoadImageFromFile'), dict(type='LoadAnnotations'),
                      dict(type='PackSegInputs')])
    assert len(dataset) == CS_KW['num_train']
    coco = _load_coco(cs_root, 'train')
    ids = {img['file_name']: img['id'] for img in coco['images']}
    for i in range(len(dataset)):
        packed = dataset[i]
        assert tuple(packed['inputs'].shape) == (3, *CS_KW['image_size'])
        label = packed['data_samples'].gt_sem_seg.data[0].numpy()
        assert set(np.unique(label)) <= set(range(10)) | {BACKGROUND_TRAIN_ID}
        rel = osp.relpath(dataset.get_data_info(i)['img_path'],
                          osp.join(cs_root, 'leftImg8bit', 'train'))
        anns = [a for a in coco['annotations'] if a['image_id'] == ids[rel]]
        painted = np.zeros(label.shape, dtype=bool)
        for ann in anns:
            mask = _decode(ann['segmentation'])
            x, y, w, h = ann['bbox']
            assert (label[mask] == ann['category_id'] - 1).all()
            assert not mask[:y].any() and not mask[y + h:].any()
            assert not mask[:, :x].any() and not mask[:, x + w:].any()
            painted |= mask
        assert (label[~painted] == BACKGROUND_TRAIN_ID).all()


@pytest.mark.parametrize('kind', ['coco', 'cityscapes'])
def test_same_seed_gives_identical_files(tmp_path, kind):
    roots = [ensure_digits_set(kind, str(tmp_path / name), **TINY_KW)[0]
             for name in ('a', 'b')]
    files = [sorted(osp.relpath(p, r) for p in _file_times(r)) for r in roots]
    assert files[0] == files[1] and len(files[0]) > TINY_KW['num_train']
    for rel in files[0]:
        with open(osp.join(roots[0], rel), 'rb') as fa, \
                open(osp.join(roots[1], rel), 'rb') as fb:
            assert fa.read() == fb.read(), rel
    other = ensure_digits_set(kind, str(tmp_path / 'c'), **dict(TINY_KW, seed=8))[0]
    img = next(r for r in files[0] if r.endswith('.png') and 'gtFine' not in r)
    with open(osp.join(roots[0], img), 'rb') as fa, open(osp.join(other, img), 'rb') as fc:
        assert fa.read() != fc.read()


@pytest.mark.parametrize('kind', ['coco', 'cityscapes'])
def test_second_call_reuses_and_new_parameters_regenerate(tmp_path, kind):
    root, written = ensure_digits_set(kind, str(tmp_path), **TINY_KW)
    assert written
    before = _file_times(root)
    assert ensure_digits_set(kind, root, **TINY_KW) == (root, False)
    assert _file_times(root) == before
    # A smaller set must not keep the images of the larger one.
    _, written = ensure_digits_set(kind, root, **dict(TINY_KW, num_train=1))
    assert written
    pattern = 'train/*.png' if kind == 'coco' else 'leftImg8bit/train/*/*.png'
    assert len(glob.glob(osp.join(root, pattern))) == 1
    # A missing file makes the set incomplete, so it is written again.
    os.remove(glob.glob(osp.join(root, pattern))[0])
    assert ensure_digits_set(kind, root, **dict(TINY_KW, num_train=1))[1]


@pytest.mark.parametrize('kwargs, bad', [
    (dict(kind='voc'), "'voc'"),
    (dict(image_size=(8, 64)), '(8, 64)'),
    (dict(digit_size=(20, 80)), '(20, 80)'),
    (dict(digits_per_image=(4, 2)), '(4, 2)'),
    (dict(seed=-1), '-1'),
    (dict(num_train=2.5), '2.5'),
])
def test_bad_arguments_are_quoted(tmp_path, kwargs, bad):
    kw = dict(dict(kind='coco', root=str(tmp_path), **TINY_KW), **kwargs)
    with pytest.raises(ValueError, match=re.escape(bad)):
        ensure_digits_set(**kw)
    assert not osp.exists(osp.join(tmp_path, 'annotations'))


def test_cli_writes_then_reports_present(tmp_path, capsys):
    path = osp.join(osp.dirname(__file__), '..', '..', 'tools', 'make_demo_data.py')
    spec = importlib.util.spec_from_file_location('make_demo_data', path)
    cli = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(cli)
    argv = ['--out', str(tmp_path), '--kind', 'both', '--num-train', '2', '--num-val',
            '1', '--image-size', '48', '96']
    cli.main(argv)
    assert capsys.readouterr().out.count('wrote 2 train + 1 val') == 2
    assert osp.isfile(osp.join(tmp_path, 'coco', 'annotations', 'instances_val.json'))
    assert glob.glob(osp.join(tmp_path, 'cityscapes', 'gtFine', 'val', '*', '*.png'))
    cli.main(argv)
    assert capsys.readouterr().out.count('already present') == 2
