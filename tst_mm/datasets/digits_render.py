"""Synthetic scenes of coloured handwritten digits on photo backgrounds.

The digits are scikit-learn's ``load_digits()`` (1797 handwritten 8x8 images, classes
0-9, from the UCI "Optical Recognition of Handwritten Digits" set); the backgrounds are
crops of its two bundled photographs (``load_sample_images()``: china.jpg, flower.jpg).
Both ship inside the scikit-learn wheel, so nothing is downloaded.

A scene is rendered in pure numpy/cv2 from a ``numpy.random.Generator`` alone, so the
same generator state always gives the same pixels. ``digits.py`` writes scenes to disk.
"""
import functools
from typing import Dict, List, NamedTuple, Tuple

import cv2
import numpy as np

# Alpha ramp over the upscaled stroke intensity (0..1): pixels below _INK_LO are not
# painted at all, so the mask (alpha > 0) is exactly the set of changed pixels and a box
# of the mask encloses the whole visible digit. The ramp starts at _ALPHA_MIN rather than
# 0 so that every masked pixel is visibly changed, yet edges stay anti-aliased.
_INK_LO, _INK_HI, _ALPHA_MIN = 0.3, 0.6, 0.35
# Gap in pixels kept between the boxes of two digits: no occlusion, so each mask and box
# is the whole digit as pasted.
_BOX_GAP = 2
_PLACEMENT_TRIES = 30


class DigitInstance(NamedTuple):
    """One pasted digit.

    Attributes:
        label (int): The digit class, 0-9.
        bbox (Tuple[int, int, int, int]): Tight box of ``mask`` as COCO
            ``(x, y, w, h)`` in pixels (pixel edges: the box covers columns
            ``x .. x + w - 1``).
        mask (np.ndarray): Bool ``(H, W)`` map of the pixels the digit painted.
    """
    label: int
    bbox: Tuple[int, int, int, int]
    mask: np.ndarray


class DigitScene(NamedTuple):
    """A rendered scene.

    Attributes:
        image (np.ndarray): ``(H, W, 3)`` uint8 RGB image with the digits.
        background (np.ndarray): ``(H, W, 3)`` uint8 RGB image before pasting.
        instances (List[DigitInstance]): The pasted digits; their masks are disjoint.
    """
    image: np.ndarray
    background: np.ndarray
    instances: List[DigitInstance]


@functools.lru_cache(maxsize=1)
def _digit_bank() -> Tuple[np.ndarray, np.ndarray]:
    """Returns scikit-learn's digits as ``(images (N, 8, 8) float32 in [0, 1], labels)``."""
    from sklearn.datasets import load_digits  # lazy: importing sklearn takes ~1 s
    digits = load_digits()
    return (digits.images / 16.0).astype(np.float32), digits.target.astype(np.int64)


@functools.lru_cache(maxsize=1)
def _photo_bank() -> Tuple[np.ndarray, ...]:
    """Returns scikit-learn's sample photos (china, flower) as uint8 RGB arrays."""
    from sklearn.datasets import load_sample_images
    return tuple(np.ascontiguousarray(img) for img in load_sample_images().images)


@functools.lru_cache(maxsize=2)
def digit_pool(split: str) -> Dict[int, np.ndarray]:
    """Indices into the digit bank usable for one split, per class.

    Every fifth sample of each class is kept for ``'val'`` and the rest for ``'train'``,
    so the validation digits were written by hands the training set never shows.

    Args:
        split (str): ``'train'`` or ``'val'``.

    Returns:
        Dict[int, np.ndarray]: class -> sample indices.
    """
    if split not in ('train', 'val'):
        raise ValueError(f"split must be 'train' or 'val', got {split!r}")
    _, labels = _digit_bank()
    pool = {}
    for cls in range(10):
        idx = np.flatnonzero(labels == cls)
        held_out = np.arange(idx.size) % 5 == 0
        pool[cls] = idx[held_out] if split == 'val' else idx[~held_out]
    return pool


def render_background(rng: np.random.Generator, height: int, width: int) -> np.ndarray:
    """A textured background: a recoloured, flipped photo crop blended with a gradient.

    Args:
        rng (np.random.Generator): Source of all randomness.
        height (int): Output height in pixels.
        width (int): Output width in pixels.

    Returns:
        np.ndarray: ``(height, width, 3)`` uint8 RGB image.
    """
    photos = _photo_bank()
    photo = photos[rng.integers(len(photos))]
    ph, pw = photo.shape[:2]
    # Crop the output's aspect ratio at 35-100% of the largest scale the photo allows,
    # so that small outputs still show texture rather than a blurry upscaled patch.
    scale = rng.uniform(0.35, 1.0) * min(ph / height, pw / width)
    ch = min(ph, max(2, int(round(height * scale))))
    cw = min(pw, max(2, int(round(width * scale))))
    y0 = rng.integers(ph - ch + 1)
    x0 = rng.integers(pw - cw + 1)
    crop = photo[y0:y0 + ch, x0:x0 + cw]
    interp = cv2.INTER_AREA if ch >= height else cv2.INTER_LINEAR
    img = cv2.resize(crop, (width, height), interpolation=interp)
    if rng.random() < 0.5:
        img = img[:, ::-1]

    # Recolour in HSV (cv2's uint8 hue runs 0..179): shift hue, scale saturation/value.
    hsv = cv2.cvtColor(np.ascontiguousarray(img), cv2.COLOR_RGB2HSV).astype(np.float32)
    hsv[..., 0] = (hsv[..., 0] + rng.integers(180)) % 180
    hsv[..., 1] *= rng.uniform(0.5, 1.2)
    hsv[..., 2] *= rng.uniform(0.7, 1.1)
    hsv = np.clip(hsv, 0, [179, 255, 255]).astype(np.uint8)
    img = cv2.cvtColor(hsv, cv2.COLOR_HSV2RGB).astype(np.float32)

    # Linear gradient between two random colours at a random angle.
    angle = rng.uniform(0, 2 * np.pi)
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    t = xx * np.cos(angle) + yy * np.sin(angle)
    t = (t - t.min()) / max(float(t.max() - t.min()), 1e-6)
    c0, c1 = rng.uniform(0, 255, size=(2, 3)).astype(np.float32)
    gradient = c0 + t[..., None] * (c1 - c0)
    beta = rng.uniform(0.15, 0.5)
    return np.clip((1 - beta) * img + beta * gradient + 0.5, 0, 255).astype(np.uint8)


def _digit_alpha(digit: np.ndarray, height: int, width: int) -> np.ndarray:
    """Upscales an 8x8 digit to ``(height, width)`` and maps stroke intensity to alpha."""
    ink = cv2.resize(digit, (width, height), interpolation=cv2.INTER_CUBIC)
    ramp = np.clip((ink - _INK_LO) / (_INK_HI - _INK_LO), 0.0, 1.0)
    return np.where(ink > _INK_LO, _ALPHA_MIN + (1 - _ALPHA_MIN) * ramp, 0.0)


def _contrasting_colour(rng: np.random.Generator, region: np.ndarray) -> np.ndarray:
    """A saturated random colour, dark on bright regions and bright on dark ones."""
    luma = float(region.reshape(-1, 3).mean(0) @ np.array([0.299, 0.587, 0.114]))
    value = rng.uniform(0.0, 0.25) if luma > 115 else rng.uniform(0.8, 1.0)
    hsv = np.array([[[rng.integers(180), rng.uniform(0.5, 1.0) * 255, value * 255]]])
    return cv2.cvtColor(hsv.astype(np.uint8), cv2.COLOR_HSV2RGB)[0, 0].astype(np.float32)


def _overlaps(box: Tuple[int, int, int, int], boxes: List[Tuple[int, int, int, int]]) -> bool:
    x, y, w, h = box
    for bx, by, bw, bh in boxes:
        if (x < bx + bw + _BOX_GAP and bx < x + w + _BOX_GAP and y < by + bh + _BOX_GAP
                and by < y + h + _BOX_GAP):
            return True
    return False


def render_scene(rng: np.random.Generator,
                 image_size: Tuple[int, int],
                 digit_size: Tuple[int, int],
                 digits_per_image: Tuple[int, int],
                 split: str = 'train') -> DigitScene:
    """Renders one scene of coloured digits pasted onto a textured background.

    1. Draw a background (``render_background``).
    2. Draw how many digits to paste; for each, a class, a handwritten sample of it
       (from ``digit_pool(split)``), a height in ``digit_size`` and a width of 70-100%
       of it, and a position whose box keeps a gap to earlier boxes. A digit that finds
       no free position in a few tries is dropped, so crowded scenes hold fewer digits.
    3. Alpha-blend each digit in a colour contrasting with the region under it.

    Args:
        rng (np.random.Generator): Source of all randomness.
        image_size (Tuple[int, int]): ``(height, width)`` of the scene.
        digit_size (Tuple[int, int]): Inclusive range of the upscaled digit height.
        digits_per_image (Tuple[int, int]): Inclusive range of digits to try to paste.
        split (str): Which digit pool to draw from, ``'train'`` or ``'val'``.
            Defaults to ``'train'``.

    Returns:
        DigitScene: The image, its background and the pasted instances.
    """
    height, width = image_size
    bank, _ = _digit_bank()
    pool = digit_pool(split)
    background = render_background(rng, height, width)
    image = background.astype(np.float32)
    instances: List[DigitInstance] = []
    boxes: List[Tuple[int, int, int, int]] = []
    for _ in range(rng.integers(digits_per_image[0], digits_per_image[1] + 1)):
        label = int(rng.integers(10))
        sample = bank[rng.choice(pool[label])]
        dh = int(rng.integers(digit_size[0], digit_size[1] + 1))
        dw = max(1, int(round(dh * rng.uniform(0.7, 1.0))))
        alpha = _digit_alpha(sample, dh, dw)
        rows = np.flatnonzero(alpha.any(1))
        cols = np.flatnonzero(alpha.any(0))
        if rows.size == 0:
            continue
        for _ in range(_PLACEMENT_TRIES):
            y, x = int(rng.integers(height - dh + 1)), int(rng.integers(width - dw + 1))
            box = (x + int(cols[0]), y + int(rows[0]), int(cols[-1] - cols[0] + 1),
                   int(rows[-1] - rows[0] + 1))
            if not _overlaps(box, boxes):
                break
        else:
            continue
        region = image[y:y + dh, x:x + dw]
        colour = _contrasting_colour(rng, region)
        a = alpha[..., None].astype(np.float32)
        image[y:y + dh, x:x + dw] = (1 - a) * region + a * colour
        mask = np.zeros((height, width), dtype=bool)
        mask[y:y + dh, x:x + dw] = alpha > 0
        boxes.append(box)
        instances.append(DigitInstance(label, box, mask))
    image = np.clip(image + 0.5, 0, 255).astype(np.uint8)
    # Rounding can leave a faintly painted pixel equal to its background; the mask still
    # counts it, which is right for labels and harmless for boxes (tight by construction).
    return DigitScene(image, background, instances)
