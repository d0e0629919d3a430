"""tst_mm: TST ("Teaching What You Should Teach", IJCAI 2023) for mmdet 3.x and mmseg 1.x.

Importing the package (e.g. ``custom_imports = dict(imports=['tst_mm'])``) registers its
components in mmengine's root registries, so the same ``type=`` names resolve from the
``mmdet`` and ``mmseg`` default scopes, and allow-lists the classes that mmengine
checkpoints hold so that ``--resume`` and local checkpoints load on torch >= 2.6.
"""
from . import augment, distill, engine, losses  # noqa: F401  (registration)
from .utils import allow_mmengine_checkpoints

__version__ = '0.1.0'

allow_mmengine_checkpoints()
