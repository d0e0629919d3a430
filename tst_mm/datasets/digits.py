"""Tiny detection / segmentation sets of handwritten digits, generated on the fly.

Two layouts, both rendered by ``digits_render.render_scene`` (10 classes, digits 0-9):

* COCO (``make_coco_digits``)::

      root/annotations/instances_{train,val}.json   category_id 1..10, names '0'..'9'
      root/{train,val}/{000000..}.png               lossless PNG, RGB

  Loads with mmdet's ``CocoDataset(data_root=root, ann_file='annotations/instances_train.json',
  data_prefix=dict(img='train/'), metainfo=dict(classes=DIGIT_CLASSES))``.

* Cityscapes (``make_cityscapes_digits``)::

      root/leftImg8bit/{split}/<city>/<city>_<seq:06d>_000019_leftImg8bit.png
      root/gtFine/{split}/<city>/<city>_<seq:06d>_000019_gtFine_labelTrainIds.png
      root/annotations/instances_{split}.json       the same scenes as COCO boxes

  Label maps are uint8, single channel: digit d has trainId d (road..terrain in
  Cityscapes' vocabulary) and the background trainId 10 ('sky'); 255 is never written.
  Only ``labelTrainIds`` maps are written (no ``labelIds``/``color``/polygon files).
  Loads with mmseg's ``CityscapesDataset(data_root=root, data_prefix=dict(
  img_path='leftImg8bit/train', seg_map_path='gtFine/train'))``.

Each annotation's ``bbox`` is the tight box of the digit's painted pixels and its
``segmentation`` their exact mask as uncompressed RLE. Sets are deterministic given the
seed (each image has its own generator seeded from ``(seed, kind, split, index)``), and
a marker file ``tst_mm_digits.json`` makes a second call with the same parameters a no-op.
"""
import glob
import json
import os
import os.path as osp
from typing import Dict, List, Optional, Tuple

import cv2
import numpy as np

from .digits_render import DigitScene, render_scene

DIGIT_CLASSES = tuple(str(d) for d in range(10))
BACKGROUND_TRAIN_ID = 10  # 'sky' in Cityscapes' 19 train ids; 0-9 are the digits
MARKER = 'tst_mm_digits.json'
_FORMAT_VERSION = 1
_KINDS = ('coco', 'cityscapes')
_SPLITS = ('train', 'val')
# Made-up single-word city names: Cityscapes tools split stems on '_'.
_CITIES = {'train': ('digitsburg', 'digitstadt', 'digitsdorf'), 'val': ('digitsfurt', )}
_CS_FRAME = 19  # gtFine annotates the 20th frame of each Cityscapes snippet


def _check_size(name: str, value, minimum: int) -> Tuple[int, int]:
    if (not isinstance(value, (tuple, list)) or len(value) != 2
            or not all(isinstance(v, (int, np.integer)) and not isinstance(v, bool)
                       for v in value) or min(value) < minimum):
        raise ValueError(f'{name} must be two ints >= {minimum}, got {value!r}')
    return int(value[0]), int(value[1])


def _check_count(name: str, value) -> int:
    if not isinstance(value, (int, np.integer)) or isinstance(value, bool) or value < 0:
        raise ValueError(f'{name} must be an int >= 0, got {value!r}')
    return int(value)


def _resolve_params(kind: str, num_train, num_val, image_size, seed, digits_per_image,
                    digit_size) -> Dict:
    """Checks the arguments and returns them, defaults resolved, as the marker's dict."""
    if kind not in _KINDS:
        raise ValueError(f'kind must be one of {_KINDS}, got {kind!r}')
    height, width = _check_size('image_size', image_size, 16)
    if digit_size is None:
        # An eighth to 30% of the short side, but never below 12 px, where an upscaled
        # 8x8 digit stops being legible.
        side = min(height, width)
        digit_size = (max(12, side // 8), max(12, side * 3 // 10))
    lo, hi = _check_size('digit_size', digit_size, 8)
    if lo > hi or hi > min(height, width):
        raise ValueError(f'digit_size must satisfy 8 <= lo <= hi <= min(image_size) = '
                         f'{min(height, width)}, got {digit_size!r}')
    n_lo, n_hi = _check_size('digits_per_image', digits_per_image, 1)
    if n_lo > n_hi:
        raise ValueError(f'digits_per_image must be (lo, hi) with lo <= hi, '
                         f'got {digits_per_image!r}')
    return dict(generator='tst_mm.datasets.digits', format_version=_FORMAT_VERSION,
                kind=kind, num_train=_check_count('num_train', num_train),
                num_val=_check_count('num_val', num_val), image_size=[height, width],
                seed=_check_count('seed', seed), digits_per_image=[n_lo, n_hi],
                digit_size=[lo, hi])


def _image_names(params: Dict, split: str) -> Tuple[str, List[Tuple[str, Optional[str]]]]:
    """The image folder of a split and its (file name, label path or None) pairs.

    File names are relative to the image folder, as COCO's ``file_name`` and a
    dataset's ``data_prefix`` expect; label paths are relative to ``root``.
    """
    if params['kind'] == 'coco':
        return split, [(f'{idx:06d}.png', None) for idx in range(params[f'num_{split}'])]
    names = []
    cities = _CITIES[split]
    for idx in range(params[f'num_{split}']):
        city = cities[idx % len(cities)]
        stem = f'{city}/{city}_{idx // len(cities):06d}_{_CS_FRAME:06d}'
        names.append((f'{stem}_leftImg8bit.png',
                      f'gtFine/{split}/{stem}_gtFine_labelTrainIds.png'))
    return f'leftImg8bit/{split}', names


def _is_complete(root: str, params: Dict) -> bool:
    try:
        with open(osp.join(root, MARKER), encoding='utf-8') as f:
            if json.load(f) != params:
                return False
    except (OSError, ValueError):
        return False
    paths = [f'annotations/instances_{split}.json' for split in _SPLITS]
    for split in _SPLITS:
        img_dir, names = _image_names(params, split)
        for file_name, seg_path in names:
            paths += [osp.join(img_dir, file_name)] + ([seg_path] if seg_path else [])
    return all(osp.isfile(osp.join(root, p)) for p in paths)


def _remove_previous(root: str) -> None:
    """Deletes the marker and any images of our naming scheme an earlier run left.

    mmseg lists every ``*_leftImg8bit.png`` under the image folder, so a stale file
    would silently join a new, smaller set. This also runs without a marker, because an
    interrupted run leaves none; the city names are made up, so only our files match.
    """
    if osp.isfile(osp.join(root, MARKER)):
        os.remove(osp.join(root, MARKER))
    patterns = []
    for split in _SPLITS:
        patterns.append(osp.join(root, split, '[0-9]' * 6 + '.png'))
        for city in _CITIES[split]:
            patterns.append(osp.join(root, 'leftImg8bit', split, city, '*_leftImg8bit.png'))
            patterns.append(
                osp.join(root, 'gtFine', split, city, '*_gtFine_labelTrainIds.png'))
    for pattern in patterns:
        for path in glob.glob(pattern):
            os.remove(path)


def mask_to_rle(mask: np.ndarray) -> Dict:
    """Encodes a bool mask as COCO's uncompressed RLE (column-major run lengths).

    Args:
        mask (np.ndarray): Bool ``(H, W)`` mask.

    Returns:
        Dict: ``{'counts': [int, ...], 'size': [H, W]}``; counts start with a zero run.
    """
    flat = mask.ravel(order='F').astype(bool)
    change = np.flatnonzero(flat[1:] != flat[:-1]) + 1
    counts = np.diff(np.concatenate([[0], change, [flat.size]])).tolist()
    if flat.size and flat[0]:
        counts = [0] + counts
    return {'counts': counts, 'size': [int(mask.shape[0]), int(mask.shape[1])]}


def _write_png(path: str, array: np.ndarray) -> None:
    os.makedirs(osp.dirname(path), exist_ok=True)
    if array.ndim == 3:
        array = cv2.cvtColor(array, cv2.COLOR_RGB2BGR)
    # Level 1: these are tiny files, and writing speed matters more than a few bytes.
    if not cv2.imwrite(path, array, [cv2.IMWRITE_PNG_COMPRESSION, 1]):
        raise OSError(f'cv2 could not write {path!r}')


def _write_split(root: str, params: Dict, split: str) -> None:
    images, annotations = [], []
    kind_id, split_id = _KINDS.index(params['kind']), _SPLITS.index(split)
    img_dir, names = _image_names(params, split)
    for idx, (file_name, seg_path) in enumerate(names):
        rng = np.random.default_rng([params['seed'], kind_id, split_id, idx])
        scene: DigitScene = render_scene(rng, tuple(params['image_size']),
                                         tuple(params['digit_size']),
                                         tuple(params['digits_per_image']), split)
        _write_png(osp.join(root, img_dir, file_name), scene.image)
        if seg_path is not None:
            label = np.full(params['image_size'], BACKGROUND_TRAIN_ID, dtype=np.uint8)
            for inst in scene.instances:
                label[inst.mask] = inst.label
            _write_png(osp.join(root, seg_path), label)
        height, width = params['image_size']
        images.append(dict(id=idx + 1, file_name=file_name, height=height, width=width))
        for inst in scene.instances:
            annotations.append(
                dict(id=len(annotations) + 1, image_id=idx + 1,
                     category_id=inst.label + 1, bbox=list(inst.bbox),
                     area=int(inst.mask.sum()), iscrowd=0,
                     segmentation=mask_to_rle(inst.mask)))
    categories = [dict(id=d + 1, name=name) for d, name in enumerate(DIGIT_CLASSES)]
    path = osp.join(root, 'annotations', f'instances_{split}.json')
    os.makedirs(osp.dirname(path), exist_ok=True)
    with open(path, 'w', encoding='utf-8') as f:
        json.dump(dict(images=images, annotations=annotations, categories=categories), f)


def ensure_digits_set(kind: str,
                      root: str,
                      num_train: int = 200,
                      num_val: int = 50,
                      image_size: Tuple[int, int] = (256, 256),
                      seed: int = 0,
                      digits_per_image: Tuple[int, int] = (2, 6),
                      digit_size: Optional[Tuple[int, int]] = None) -> Tuple[str, bool]:
    """Writes a digits set under ``root`` unless an identical one is already there.

    1. Check the arguments and resolve defaults into the marker's parameter dict.
    2. If ``root/tst_mm_digits.json`` holds the same dict and every file exists, stop.
    3. Otherwise remove the marker and our images from an earlier run, render and write
       each split, and write the marker last, so an interrupted run is redone.

    Args:
        kind (str): ``'coco'`` or ``'cityscapes'`` (see the module docstring).
        root (str): Folder to write into; created if missing.
        num_train (int): Training images. Defaults to 200.
        num_val (int): Validation images. Defaults to 50.
        image_size (Tuple[int, int]): ``(height, width)``. Defaults to (256, 256).
        seed (int): Seed (>= 0) of the whole set. Defaults to 0.
        digits_per_image (Tuple[int, int]): Inclusive range of digits per image; fewer
            when a crowded image has no room left. Defaults to (2, 6).
        digit_size (Tuple[int, int], optional): Inclusive range of digit heights in
            pixels. Defaults to None: from an eighth to 30% of the short side
            (at least 12 px).

    Returns:
        Tuple[str, bool]: ``root`` and whether anything was written.
    """
    params = _resolve_params(kind, num_train, num_val, image_size, seed,
                             digits_per_image, digit_size)
    root = str(root)
    if _is_complete(root, params):
        return root, False
    os.makedirs(root, exist_ok=True)
    _remove_previous(root)
    for split in _SPLITS:
        _write_split(root, params, split)
    tmp = osp.join(root, MARKER + '.tmp')
    with open(tmp, 'w', encoding='utf-8') as f:
        json.dump(params, f, indent=1)
    os.replace(tmp, osp.join(root, MARKER))
    return root, True


def make_coco_digits(root: str,
                     num_train: int = 200,
                     num_val: int = 50,
                     image_size: Tuple[int, int] = (256, 256),
                     seed: int = 0,
                     digits_per_image: Tuple[int, int] = (2, 6),
                     digit_size: Optional[Tuple[int, int]] = None) -> str:
    """Writes (or finds) a COCO-format digits detection set; see ``ensure_digits_set``.

    Args:
        root (str): Folder to write into; created if missing.
        num_train (int): Training images. Defaults to 200.
        num_val (int): Validation images. Defaults to 50.
        image_size (Tuple[int, int]): ``(height, width)``. Defaults to (256, 256).
        seed (int): Seed (>= 0) of the whole set. Defaults to 0.
        digits_per_image (Tuple[int, int]): Inclusive range of digits per image.
            Defaults to (2, 6).
        digit_size (Tuple[int, int], optional): Inclusive range of digit heights.
            Defaults to None (an eighth to 30% of the short side).

    Returns:
        str: ``root``.
    """
    return ensure_digits_set('coco', root, num_train, num_val, image_size, seed,
                             digits_per_image, digit_size)[0]


def make_cityscapes_digits(root: str,
                           num_train: int = 200,
                           num_val: int = 50,
                           image_size: Tuple[int, int] = (128, 256),
                           seed: int = 0,
                           digits_per_image: Tuple[int, int] = (2, 6),
                           digit_size: Optional[Tuple[int, int]] = None) -> str:
    """Writes (or finds) a Cityscapes-format digits set; see ``ensure_digits_set``.

    Args:
        root (str): Folder to write into; created if missing.
        num_train (int): Training images. Defaults to 200.
        num_val (int): Validation images. Defaults to 50.
        image_size (Tuple[int, int]): ``(height, width)``. Defaults to (128, 256),
            Cityscapes' 1:2 aspect ratio.
        seed (int): Seed (>= 0) of the whole set. Defaults to 0.
        digits_per_image (Tuple[int, int]): Inclusive range of digits per image.
            Defaults to (2, 6).
        digit_size (Tuple[int, int], optional): Inclusive range of digit heights.
            Defaults to None (an eighth to 30% of the short side).

    Returns:
        str: ``root``.
    """
    return ensure_digits_set('cityscapes', root, num_train, num_val, image_size, seed,
                             digits_per_image, digit_size)[0]
