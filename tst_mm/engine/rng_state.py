"""Random-number state in checkpoints, so that a resumed TST run continues exactly.

The augmenter samples its ops and gates from torch's global generator, so the losses
after a resume match an uninterrupted run only if that generator (and numpy's / Python's,
used by data pipelines) continues from where the checkpoint was taken. mmengine saves
none of them; this hook does, and the TST loops restore them once the resumed run has
skipped the data it had already consumed.
"""
import random
from typing import Optional

import numpy as np
import torch
from mmengine.hooks import Hook

CHECKPOINT_KEY = 'tst_rng_state'


def get_rng_state() -> dict:
    """The states of Python's, numpy's and torch's (CPU and current CUDA) generators."""
    state = dict(python=random.getstate(), numpy=np.random.get_state(),
                 torch=torch.get_rng_state())
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state['cuda'] = torch.cuda.get_rng_state()
    return state


def set_rng_state(state: dict) -> None:
    """Restore generator states returned by :func:`get_rng_state`."""
    random.setstate(state['python'])
    np.random.set_state(state['numpy'])
    torch.set_rng_state(state['torch'])
    if 'cuda' in state and torch.cuda.is_available():
        torch.cuda.set_rng_state(state['cuda'])


class RNGStateHook(Hook):
    """Saves the generator states in every checkpoint and keeps them on resume.

    Registered by the TST train loops themselves; ``pending`` holds the loaded state
    until the loop applies it with :meth:`restore`.
    """

    priority = 'VERY_LOW'

    def __init__(self) -> None:
        self.pending: Optional[dict] = None

    def before_save_checkpoint(self, runner, checkpoint: dict) -> None:
        checkpoint[CHECKPOINT_KEY] = get_rng_state()

    def after_load_checkpoint(self, runner, checkpoint: dict) -> None:
        # Only a resumed run continues the random stream; `load_from` alone starts anew.
        if runner._resume and CHECKPOINT_KEY in checkpoint:
            self.pending = checkpoint[CHECKPOINT_KEY]

    def restore(self) -> None:
        """Apply the loaded state once (no-op if nothing was resumed)."""
        if self.pending is not None:
            set_rng_state(self.pending)
            self.pending = None
