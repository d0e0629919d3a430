"""Is a model one detector / segmentor that TSTDistiller can be the student (or teacher) of?

TST trains one model's ``loss`` on augmented images and inverts its task losses. Several
OpenMMLab models build, and even train, as a ``TSTDistiller`` student, yet are not one
detector or segmentor: a semi-supervised teacher-student pair (SoftTeacher), a tracker
or video model, a re-identification network, a test-time-augmentation wrapper, a
detector that distils from its own teacher. Distilling them would invert the wrong
losses or train a wrapper's student through a second teacher; :func:`check_single_model`
refuses them with an error that says what to distil instead.

The checks go by class names along the model's MRO, so neither mmdet nor mmseg (nor the
optional packages some of these models need) has to be importable.
"""
from typing import Optional, Union

import torch.nn as nn

# (base class name, why it is not a single model, what to do instead). The first base
# class found in the model's MRO wins, so subclasses come before their bases.
_REFUSED = (
    ('TSTDistiller', 'is already a TSTDistiller', 'give its student config instead'),
    ('SemiBaseDetector', 'is a semi-supervised teacher-student wrapper, not a single '
     'detector', "distil its student config instead (the config's "
     '`model.detector`)'),
    ('KnowledgeDistillationSingleStageDetector', 'is itself a knowledge-distillation '
     'detector with its own teacher', 'distil a plain single-stage detector config '
     'instead (e.g. the GFL / PAA detector its student is)'),
    ('BaseMOTModel', 'is a multi-object tracker or video instance segmentor, not a '
     'single detector', "distil its per-frame detector config instead (the config's "
     '`model.detector`)'),
    ('BaseReID', 'is a re-identification (embedding) network, not a detector',
     'TST needs a detection or segmentation task loss'),
    ('BaseTTAModel', 'is a test-time augmentation wrapper, which has no training loss',
     "distil the wrapped model (the config's `tta_model.module` / `model`) instead"),
    ('DepthEstimator', 'is a depth estimator, not a segmentor: its regression '
     'objective has no class labels for the augmenter to make hard',
     'TST supports mmdet detectors and mmseg segmentors'),
)


def _refusal(model_cls: type) -> Optional[str]:
    names = [cls.__name__ for cls in model_cls.__mro__]
    for base, why, instead in _REFUSED:
        if base in names:
            return f'{why}: {instead}'
    return None


def check_single_model(model: Union[nn.Module, type]) -> None:
    """Raises if ``model`` is not one detector or segmentor that TST can distil.

    A model passes when it is none of the wrappers above and has the single-model API
    TSTDistiller calls: ``loss(inputs, data_samples)`` and
    ``predict(inputs, data_samples)`` (mmdet's ``BaseDetector``, mmseg's
    ``BaseSegmentor``).

    Args:
        model (nn.Module | type): The built student (or teacher), or its class (to
            check a config's ``type`` before building it, e.g. ``MODELS.get(type)``).

    Raises:
        TypeError: Naming the model's class, why it is not a single detector /
            segmentor and what to distil instead.
    """
    model_cls = model if isinstance(model, type) else type(model)
    name = model_cls.__name__
    refusal = _refusal(model_cls)
    if refusal is not None:
        raise TypeError(f'{name} {refusal}')
    missing = [m for m in ('loss', 'predict')
               if not callable(getattr(model_cls, m, None))]
    if missing:
        raise TypeError(f'{name} has no {" / ".join(missing)} method: TSTDistiller needs '
                        'a single mmdet detector or mmseg segmentor (a BaseDetector / '
                        'BaseSegmentor with loss() and predict())')
