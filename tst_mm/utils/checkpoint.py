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
    # numpy 1.x pickles name numpy.core.multiarray, numpy 2.x numpy._core.multiarray.
    if int(np.__version__.split('.')[0]) >= 2:
        from numpy._core import multiarray
    else:
        from numpy.core import multiarray
    allowed = [np.ndarray, np.dtype, multiarray._reconstruct, multiarray.scalar]
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

    # A HistoryBuffer that has been queried pickles its cached statistics methods as
    # `getattr(buffer, 'mean')`, so `getattr` must be allowed. The unpickler still calls
    # only allow-listed callables, so the bound methods it yields are never invoked.
    add_safe_globals([HistoryBuffer, getattr, *_numpy_globals()])
