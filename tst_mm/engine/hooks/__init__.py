"""TST hooks: the augmentation policy logged and plotted, distill weights scheduled."""
from .loss_weight_hook import DistillLossWeightHook, distill_weight_factor
from .policy_hook import TSTPolicyHook, plot_policy

__all__ = [
    'DistillLossWeightHook', 'TSTPolicyHook', 'distill_weight_factor', 'plot_policy'
]
