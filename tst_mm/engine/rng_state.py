"""Random-number state in checkpoints, so that a resumed TST run continues exactly.

The augmenter samples its ops and gates from torch's global generator, so the losses
after a resume match an uninterrupted run only if that generator (and numpy's / Python's,
used by data pipelines, and CUDA's) continues from where the checkpoint was taken, on
every rank: with ``randomness=dict(diff_rank_seed=True)`` each rank has its own stream.
mmengine saves none of them; this hook gathers every rank's states into the checkpoint,
and on resume each rank takes back its own, once the TST loop has skipped the data the
interrupted run had already consumed.
"""
import functools
import random
from typing import List, Optional

import numpy as np
import torch
from mmengine.dist import all_gather_object, get_rank
from mmengine.hooks import Hook
from mmengine.logging import print_log

CHECKPOINT_KEY = 'tst_rng_state'  # {'ranks': [state of rank 0, state of rank 1, ...]}


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


def _per_rank(saved) -> List[dict]:
    # Checkpoints before per-rank states held rank 0's state alone.
    return saved['ranks'] if 'ranks' in saved else [saved]


class RNGStateHook(Hook):
    """Saves every rank's generator states in each checkpoint and restores them on resume.

    Registered by the TST train loops themselves; ``pending`` holds this rank's loaded
    state until the loop applies it with :meth:`restore`.

    ``before_save_checkpoint`` runs on rank 0 alone (mmengine's ``Runner.save_checkpoint``
    writes on the main process only), too late to collect the other ranks' states. Every
    rank does call ``Runner.save_checkpoint``, though (mmengine's hooks and the TST loops
    all do), so the hook wraps it and gathers the states there first.

    Args:
        runner (Runner): The runner whose ``save_checkpoint`` is wrapped.
    """

    priority = 'VERY_LOW'

    def __init__(self, runner) -> None:
        self.pending: Optional[dict] = None
        self._gathered: Optional[List[dict]] = None
        save = runner.save_checkpoint

        @functools.wraps(save)
        def save_checkpoint(*args, **kwargs):
            self._gathered = all_gather_object(get_rng_state())  # one call per checkpoint
            try:
                return save(*args, **kwargs)
            finally:
                self._gathered = None

        runner.save_checkpoint = save_checkpoint

    def before_save_checkpoint(self, runner, checkpoint: dict) -> None:
        checkpoint[CHECKPOINT_KEY] = dict(ranks=self._gathered or [get_rng_state()])

    def after_load_checkpoint(self, runner, checkpoint: dict) -> None:
        # Only a resumed run continues the random stream; `load_from` alone starts anew.
        if not (runner._resume and CHECKPOINT_KEY in checkpoint):
            return
        states, rank = _per_rank(checkpoint[CHECKPOINT_KEY]), get_rank()
        if rank < len(states):
            self.pending = states[rank]
        else:
            print_log(f'RNGStateHook: the checkpoint holds the random state of '
                      f'{len(states)} rank(s); rank {rank} keeps its freshly seeded '
                      'generators, so this run does not continue the interrupted one '
                      'exactly (resume on as many processes as the run had to)',
                      logger='current', level=30)

    def restore(self) -> None:
        """Apply the loaded state once (no-op if nothing was resumed)."""
        if self.pending is not None:
            set_rng_state(self.pending)
            self.pending = None
