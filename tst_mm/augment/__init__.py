"""TST's learned, differentiable augmenter: op table, policy, geometry, module."""
from .augmenter import TSTAugmenter
from .ops import OPS, OpSpec
from .policy import TSTPolicy, relaxed_bernoulli

__all__ = ['OPS', 'OpSpec', 'TSTAugmenter', 'TSTPolicy', 'relaxed_bernoulli']
