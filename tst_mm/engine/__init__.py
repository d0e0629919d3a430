"""Training machinery: alternating loops, optimizer constructor and the augmenter's
normalized SGD, DDP wrapper, hooks."""
from .ddp import CPUDistributedDataParallel, TSTDistributedDataParallel
from .hooks import DistillLossWeightHook, TSTPolicyHook
from .loops import TSTEpochBasedTrainLoop, TSTIterBasedTrainLoop
from .normalized_sgd import NormalizedSGD
from .optim_constructor import TSTOptimWrapperConstructor
from .rng_state import RNGStateHook

__all__ = [
    'CPUDistributedDataParallel', 'DistillLossWeightHook', 'NormalizedSGD', 'RNGStateHook',
    'TSTDistributedDataParallel', 'TSTEpochBasedTrainLoop', 'TSTIterBasedTrainLoop',
    'TSTOptimWrapperConstructor', 'TSTPolicyHook'
]
