"""TST's learned, differentiable augmenter: op table, policy, geometry, module."""
from .augmenter import TSTAugmenter
from .imitation import TSTImitationAugmenter
from .ops import OPS, OpSpec
from .policy import TSTPolicy, relaxed_bernoulli, straight_through_bernoulli

__all__ = ['OPS', 'OpSpec', 'TSTAugmenter', 'TSTImitationAugmenter', 'TSTPolicy',
           'relaxed_bernoulli', 'straight_through_bernoulli']
