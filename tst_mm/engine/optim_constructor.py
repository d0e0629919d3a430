"""One optimizer wrapper for the student, one for the augmenter."""
from typing import Optional

import torch.nn as nn
from mmengine.logging import MessageHub
from mmengine.model import is_model_wrapper
from mmengine.optim import OptimWrapperDict, build_optim_wrapper
from mmengine.registry import OPTIM_WRAPPER_CONSTRUCTORS

PHASES = ('student', 'augmenter')


def unwrap(module: nn.Module) -> nn.Module:
    """The module inside a DDP / mmengine model wrapper, or the module itself."""
    return module.module if is_model_wrapper(module) else module


@OPTIM_WRAPPER_CONSTRUCTORS.register_module()
class TSTOptimWrapperConstructor:
    """Builds ``OptimWrapperDict(student=..., augmenter=...)`` for a ``TSTDistiller``.

    The ``student`` wrapper optimises the student's parameters plus every trainable
    parameter of the distillation losses (e.g. ``FeatureMimic`` adapters), in an extra
    param group with the optimizer's defaults. The ``augmenter`` wrapper optimises the
    augmenter's logits. The teacher is in neither: it is never updated.

    Each entry is an ordinary mmengine optim-wrapper config (``type``, ``optimizer``,
    ``clip_grad``, ``paramwise_cfg``, its own ``constructor``, ...)::

        optim_wrapper = dict(
            constructor='TSTOptimWrapperConstructor',
            student=dict(type='OptimWrapper', optimizer=dict(type='SGD', lr=0.01)),
            augmenter=dict(type='OptimWrapper', optimizer=dict(type='SGD', lr=0.01,
                           momentum=0.9), clip_grad=dict(max_norm=20)))

    Args:
        optim_wrapper_cfg (dict): Must hold exactly the keys ``student`` and
            ``augmenter``.
        paramwise_cfg (dict, optional): Not supported at this level; give it inside
            ``student`` / ``augmenter``. Defaults to None.
    """

    def __init__(self, optim_wrapper_cfg: dict, paramwise_cfg: Optional[dict] = None):
        if paramwise_cfg is not None:
            raise ValueError('put paramwise_cfg inside optim_wrapper.student (or '
                             '.augmenter), not at the top level of optim_wrapper')
        keys = set(optim_wrapper_cfg)
        if keys != set(PHASES):
            raise ValueError(
                'TSTOptimWrapperConstructor needs optim_wrapper=dict(constructor=..., '
                f'student=dict(...), augmenter=dict(...)), got keys {sorted(keys)}')
        self.optim_wrapper_cfg = optim_wrapper_cfg

    def __call__(self, model: nn.Module) -> OptimWrapperDict:
        distiller = unwrap(model)
        for attr in ('student', 'augmenter', 'distill_losses'):
            if not hasattr(distiller, attr):
                raise TypeError('TSTOptimWrapperConstructor works with a TSTDistiller '
                                f'model; {type(distiller).__name__} has no `{attr}`')
        wrappers = {}
        for phase in PHASES:
            # mmengine's own builder: an entry's `constructor` (e.g. mmdet's layer-wise
            # lr decay for ConvNeXt / Swin students) and `paramwise_cfg` are honoured.
            wrappers[phase] = build_optim_wrapper(unwrap(getattr(distiller, phase)),
                                                  dict(self.optim_wrapper_cfg[phase]))
        # Gradient clipping reports its norm as `train/grad_norm`, the student's key,
        # which the logger would print on student lines: the augmenter's goes to a
        # private hub (the loop logs the augmenter's gradient norms per phase). Built
        # directly, not by get_instance(), which would make it the current hub.
        wrappers['augmenter'].message_hub = MessageHub('tst_augmenter')
        extra = [p for p in distiller.distill_losses.parameters() if p.requires_grad]
        if extra:
            wrappers['student'].optimizer.add_param_group({'params': extra})
        return OptimWrapperDict(**wrappers)
