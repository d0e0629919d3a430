"""Distillation losses: small modules registered in mmengine's root ``MODELS``, so that
``type='KLDivergence'`` etc. resolve from both the mmdet and the mmseg default scope."""
from .binary_kl_divergence import BinaryKLDivergence, binary_kl_divergence
from .channel_wise_divergence import ChannelWiseDivergence, channel_wise_divergence
from .feature_mimic import FeatureMimic
from .kl_divergence import KLDivergence, kl_divergence

__all__ = [
    'KLDivergence', 'BinaryKLDivergence', 'FeatureMimic', 'ChannelWiseDivergence',
    'kl_divergence', 'binary_kl_divergence', 'channel_wise_divergence'
]
