"""Checking that the augmenter's student term inverts every task loss the student returns.

:func:`tst_mm.distill.inverse_losses.inverted_task_losses` swaps the student's
``loss_*`` submodules. A loss computed any other way (inline in a head, or by a module
under another attribute name) comes back unchanged, and the augmenter would minimise it
as it is: make the student's task *easier*, the opposite of TST. So at its first
augmenter step ``TSTDistiller`` runs the student's ``loss()`` once more without
inversion, on the same inputs and from the same random state (samplers draw the same
RoIs), and compares: a ``loss`` key with the same value both ways was not inverted, and
training stops with an error naming it. A key that is 0 both ways (no positives in the
batch) proves nothing; a warning names it. The extra forward runs once, without
gradient, at the same step on every rank (SyncBN communicates inside it).
"""
import random
from contextlib import contextmanager
from typing import Dict, Iterator, Optional, Set

import numpy as np
import torch
import torch.nn as nn
from mmengine.logging import print_log
from torch import Tensor

from .inverse_losses import INVERSIONS


class InversionCheck:
    """Compares the student's task losses with and without inversion, at the first
    augmenter step (see the module docstring)."""

    def __init__(self) -> None:
        self.pending = True
        self.checked: Set[str] = set()
        self._plain: Optional[Dict[str, Tensor]] = None

    def before(self, student: nn.Module, inputs: Tensor, samples: list) -> None:
        """The student's losses without inversion, leaving every random state as it was
        (call it right before the inverted forward on the same arguments)."""
        if self.pending:
            self.pending = False
            with torch.no_grad(), _same_random_state(inputs.device):
                self._plain = _loss_values(student(inputs, samples, 'loss'))

    def after(self, inverted: dict) -> None:
        """Compares the inverted losses with those of :meth:`before`.

        Raises:
            NotImplementedError: A ``loss`` key has the same (non-zero) value both ways.
        """
        if self._plain is None:
            return
        plain, self._plain = self._plain, None
        inverted = _loss_values(inverted)
        same = {k: float(v) for k, v in plain.items()
                if k in inverted and bool(v != 0) and torch.equal(v, inverted[k])}
        if same:
            raise NotImplementedError(
                f"the student's task losses {same} are the same with and without "
                'inverted_task_losses(): no `loss_*` submodule of the student computes '
                'them (a loss computed inline in a head, or a loss module under another '
                'attribute name), so the augmenter would make them smaller instead of '
                'larger. Compute each with a `loss_*` submodule of a supported type '
                f'({sorted(INVERSIONS)}), or leave the student-inverse term out: '
                'TSTDistiller(augment_loss_weights=dict(student_inverse=0, divergence=1))')
        self.checked = {k for k, v in plain.items() if bool(v != 0)}
        unchecked = sorted(set(plain) - self.checked)
        if unchecked:
            print_log(f'TSTDistiller: the student losses {unchecked} were 0 at the first '
                      'augmenter step, so whether they are inverted was not checked',
                      logger='current', level=30)


def _loss_values(losses: dict) -> Dict[str, Tensor]:
    """Each ``loss`` key's value as mmengine's ``parse_losses`` sums it."""
    values = {}
    for key, value in losses.items():
        if 'loss' in key:
            value = value.mean() if isinstance(value, Tensor) else \
                sum(v.mean() for v in value)
            values[key] = value.detach()
    return values


@contextmanager
def _same_random_state(device: torch.device) -> Iterator[None]:
    python, numpy = random.getstate(), np.random.get_state()
    cuda = [device.index if device.index is not None else torch.cuda.current_device()] \
        if device.type == 'cuda' else []
    with torch.random.fork_rng(devices=cuda):
        yield
    random.setstate(python)
    np.random.set_state(numpy)
