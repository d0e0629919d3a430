"""tst_mm: TST (learned data augmentation for knowledge distillation) for OpenMMLab.

torch and mmcv are deliberately *not* listed in ``install_requires``: as with mmdet and
mmseg, they come from the environment (``mim install mmcv`` on a CUDA cluster, or
``make install`` here, which builds mmcv with its ops). Letting pip build mmcv on its own
uses an isolated build environment that cannot see torch and silently drops ``mmcv.ops``.
"""
from setuptools import find_packages, setup


def readme():
    with open('README.md', encoding='utf-8') as f:
        return f.read()


setup(
    name='tst_mm',
    version='0.1.0',
    description='TST: "Teaching What You Should Teach" (IJCAI 2023) '
    'data-based distillation for mmdet 3.x and mmseg 1.x',
    long_description=readme(),
    long_description_content_type='text/markdown',
    packages=find_packages(include=['tst_mm', 'tst_mm.*']),
    # the imitator nets of TSTImitationAugmenter (tools/train_imitators.py)
    package_data={'tst_mm.augment': ['imitators.pth']},
    python_requires='>=3.8',
    install_requires=[
        # The OpenMMLab 2.0 stack that works together with mmcv 2.1.x (mmdet and mmseg
        # both assert mmcv < 2.2.0).
        'mmengine>=0.10.4,<0.11',
        'mmdet>=3.3.0,<3.4',
        'mmsegmentation>=1.2.2,<1.3',
        # mmcv 2.1 and pycocotools wheels are compiled against numpy 1.x.
        'numpy>=1.23,<2',
        # opencv-python >= 4.12 requires numpy 2.
        'opencv-python>=4.5,<4.12',
        # mmcv's setup and mmengine's `is_installed` (used by every `mmdet::` base
        # config) import pkg_resources, which setuptools 81 removed.
        'setuptools>=69,<81',
        'pycocotools>=2.0.6',
        'ftfy', 'regex',  # `import mmseg.utils` needs both
        'matplotlib>=3.5',
        'scikit-learn>=1.1',  # the `digits` images behind the demo data
    ],
    extras_require={
        # pytest 9 keeps a test's id where pytest-xdist 3.8 cannot append its
        # xdist_group, so `--dist loadgroup` would split modules that share a trained
        # fixture between the two workers (each then trains it).
        'tests': ['pytest>=7,<9', 'pytest-xdist>=3.2', 'kornia>=0.7'],
    },
    zip_safe=False,
)
