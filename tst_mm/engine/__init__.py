"""Training machinery: alternating loops, optimizer constructor, DDP wrapper, hooks."""
from .ddp import TSTDistributedDataParallel
from .hooks import DistillLossWeightHook, TSTPolicyHook
from .loops import TSTEpochBasedTrainLoop, TSTIterBasedTrainLoop
from .optim_constructor import TSTOptimWrapperConstructor
from .rng_state import RNGStateHook

__all__ = [
    'DistillLossWeightHook', 'RNGStateHook', 'TSTDistributedDataParallel',
    'TSTEpochBasedTrainLoop', 'TSTIterBasedTrainLoop', 'TSTOptimWrapperConstructor',
    'TSTPolicyHook'
]
