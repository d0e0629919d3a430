"""Demo and test data generated on the fly: digits on photos, in COCO and Cityscapes
layouts. Importing this package registers nothing and writes nothing."""
from .digits import (BACKGROUND_TRAIN_ID, DIGIT_CLASSES, ensure_digits_set,
                     make_cityscapes_digits, make_coco_digits, mask_to_rle)
from .digits_render import DigitInstance, DigitScene, render_background, render_scene

__all__ = [
    'BACKGROUND_TRAIN_ID', 'DIGIT_CLASSES', 'DigitInstance', 'DigitScene',
    'ensure_digits_set', 'make_cityscapes_digits', 'make_coco_digits', 'mask_to_rle',
    'render_background', 'render_scene'
]
