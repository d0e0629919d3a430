"""Make mmengine checkpoints loadable on torch >= 2.6 without disabling its safety check.

torch 2.6 made ``torch.load(weights_only=True)`` the default. mmengine 0.10.x calls
``torch.load`` without the argument, and its checkpoints hold a few plain Python / numpy
objects besides tensors (the message hub's ``HistoryBuffer`` of logged scalars, numpy
arrays and scalars inside it), so every ``--resume`` and every local teacher checkpoint
fails to unpickle. Rather than turning the check off (``weights_only=False`` runs arbitrary
pickled code), we allow-list exactly those classes.
"""
from typing import Callable, List

import numpy as np
import torch


def _numpy_globals() -> List[Callable]:
    """Numpy objects that pickled arrays and scalars reconstruct through."""
    # numpy 1.x keeps these in numpy.core, numpy 2.x in numpy._core.
    core = getattr(np, '_core', None) or np.core
    allowed = [np.ndarray, np.dtype, core.multiarray._reconstruct, core.multiarray.scalar]
    # Since numpy 1.25 every dtype has its own class (numpy.dtypes.Float64DType, ...),
    # and pickles name that class.
    dtypes = getattr(np, 'dtypes', None)
    if dtypes is not None:
        allowed += [getattr(dtypes, name) for name in dir(dtypes)
                    if name.endswith('DType')]
    return allowed


def allow_mmengine_checkpoints() -> None:
    """Allow-list the non-tensor classes that mmengine checkpoints contain.

    Idempotent; a no-op on torch < 2.4, which has no ``add_safe_globals`` (and loads
    everything anyway, since it defaults to ``weights_only=False``).
    """
    add_safe_globals = getattr(torch.serialization, 'add_safe_globals', None)
    if add_safe_globals is None:
        return
    from mmengine.logging import HistoryBuffer
    add_safe_globals([HistoryBuffer, *_numpy_globals()])
