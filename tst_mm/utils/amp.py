"""Turn a config's optimizer wrapper(s) into mixed-precision ones (``--amp``)."""
from mmengine.config import Config

AMP_WRAPPER = 'AmpOptimWrapper'


def enable_amp(cfg: Config) -> None:
    """Switch ``cfg.optim_wrapper`` to :class:`AmpOptimWrapper` in place.

    mmdet's ``--amp`` rewrites the single wrapper's ``type``. A config with several
    wrappers (``optim_wrapper=dict(constructor=..., student=dict(...),
    augmenter=dict(...))``) has no top-level ``type``: every sub-wrapper must become AMP,
    otherwise one phase silently runs in fp32 with an unscaled loss.

    Args:
        cfg (Config): The full config; only ``cfg.optim_wrapper`` is changed.
    """
    optim_wrapper = cfg.optim_wrapper
    sub_wrappers = [value for value in optim_wrapper.values()
                    if isinstance(value, dict) and 'optimizer' in value]
    if 'optimizer' in optim_wrapper or not sub_wrappers:
        sub_wrappers = [optim_wrapper]
    for wrapper in sub_wrappers:
        if wrapper.get('type', 'OptimWrapper') != AMP_WRAPPER:
            wrapper['type'] = AMP_WRAPPER
            wrapper.setdefault('loss_scale', 'dynamic')
