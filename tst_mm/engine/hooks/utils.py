"""What the TST hooks share: finding the distiller behind the runner's model."""
import torch.nn as nn
from mmengine.model import is_model_wrapper


def get_distiller(runner, hook: str, attr: str) -> nn.Module:
    """The runner's model, unwrapped from DDP, checked to be a TSTDistiller.

    Args:
        runner (Runner): The runner.
        hook (str): The calling hook's name, for the error message.
        attr (str): An attribute the hook needs (``'augmenter'``, ``'distill_losses'``).

    Returns:
        nn.Module: The distiller.
    """
    model = runner.model
    model = model.module if is_model_wrapper(model) else model
    if not hasattr(model, attr):
        raise TypeError(f'{hook} needs a TSTDistiller (a model with `{attr}`), got '
                        f"{type(model).__name__}; set model = dict(type='TSTDistiller', "
                        '...) or remove the hook from custom_hooks')
    return model
