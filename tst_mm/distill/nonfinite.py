"""Keeping TST's weights finite, and saying so when a step is not.

:func:`tst_mm.distill.updates.step` skips an update whose loss or gradient is not
finite (weights and optimizer state untouched). :class:`NonFiniteGuard` counts those
skips per phase and logs each one with the step and the loss terms; ``max_consecutive``
skips in a row in one phase stop training with an error that names the phase, the
non-finite terms, which phase diverged and what to change, and the last checkpoint,
which holds finite weights: no update that could make them non-finite was ever applied
(resuming from it with the same settings would diverge again). :func:`bounded` keeps
the augmenter's parameters finite and in a fixed range whatever its optimizer does.
"""
import math
from contextlib import contextmanager
from typing import Dict, Iterator, List, Optional

import torch
import torch.nn as nn
from mmengine.logging import MessageHub, print_log
from torch import Tensor

# Message-hub info the TST loops set before each augmenter step: where it is, in words.
AUGMENT_STEP_KEY = 'tst_augment_step'


class NonFiniteGuard:
    """Counts the updates skipped for a non-finite loss or gradient, per phase.

    Args:
        max_consecutive (int): Skips in a row in one phase that stop training.
            Defaults to 3.
    """

    def __init__(self, max_consecutive: int = 3) -> None:
        if isinstance(max_consecutive, bool) or not isinstance(max_consecutive, int) \
                or max_consecutive < 1:
            raise ValueError('max_consecutive must be an int >= 1, got '
                             f'{max_consecutive!r}')
        self.max_consecutive = max_consecutive
        self.consecutive: Dict[str, int] = {}
        self.total: Dict[str, int] = {}

    def record(self, phase: str, stepped: Optional[bool], terms: Dict[str, Tensor]) -> None:
        """Notes one update of ``phase`` ('student' or 'augmenter').

        Args:
            phase (str): The phase, as the log and the error name it.
            stepped (bool, optional): Whether the update was applied; None while
                accumulating gradients (not an update).
            terms (dict[str, Tensor]): The loss terms, for the log (read only on a skip).

        Raises:
            FloatingPointError: At the ``max_consecutive``-th skip in a row.
        """
        if stepped is None:
            return
        if stepped:
            self.consecutive[phase] = 0
            return
        count = self.consecutive[phase] = self.consecutive.get(phase, 0) + 1
        self.total[phase] = self.total.get(phase, 0) + 1
        values = {k: float(torch.as_tensor(v).detach()) for k, v in terms.items()}
        bad = [k for k, v in values.items() if not math.isfinite(v)]
        bad = [k for k in bad if k != 'loss'] or bad  # the total, if no term says more
        what = (f'non-finite loss terms {bad}' if bad else
                'all loss terms finite, a non-finite gradient')
        where = _where(phase)
        print_log(f'TST {phase} update at {where} skipped: {what} ({count} in a row, '
                  f'{self.total[phase]} in this run); '
                  + ', '.join(f'{k}: {v:.4g}' for k, v in values.items()),
                  logger='current', level=30)
        if count >= self.max_consecutive:
            raise FloatingPointError(
                f'{count} {phase} updates in a row skipped for a non-finite loss or '
                f'gradient (the last at {where}: {what}). {_diagnosis(phase, bad)} '
                'Training stops; the weights were never updated with a non-finite '
                f'value. {_restart()} To allow more skips in a row: '
                'model.max_nonfinite_skips=N.')


def _where(phase: str) -> str:
    hub = MessageHub.get_current_instance()
    if phase == 'augmenter' and hub.get_info(AUGMENT_STEP_KEY):
        return hub.get_info(AUGMENT_STEP_KEY)
    iteration = hub.get_info('iter')  # mmengine's RuntimeInfoHook, before each iteration
    return f'iteration {iteration + 1}' if iteration is not None else 'an unknown step'


def _diagnosis(phase: str, bad: List[str]) -> str:
    """Which phase diverged, judged by its non-finite terms, and what to change.

    The augmenter's parameters are bounded (:func:`bounded`) and its views are images:
    the student's own (inverse) losses on them non-finite while the teacher's are finite
    means that the student's weights have blown up. An augment phase, many augmenter
    steps in a row, then reaches the limit before the student's own steps do.
    """
    student_side = any(k.startswith('student_inverse.') for k in bad) and \
        not any(k.startswith('teacher.') for k in bad)
    if phase == 'augmenter' and not student_side:
        return ("The augmenter's update diverged: lower its learning rate "
                '(optim_wrapper.augmenter.optimizer.lr), clip its gradient '
                '(optim_wrapper.augmenter.clip_grad=dict(max_norm=...)) or lower the '
                'weight of the terms named (model.augment_loss_weights).')
    verdict = 'The student diverged' if phase == 'student' else (
        'The student diverged, not the augmenter: its own losses on the augmented '
        "images are not finite, the teacher's are")
    distill = [f'model.distill_losses.{k[len("distill."):]}.loss_weight' for k in bad
               if k.startswith('distill.')]
    weights = ', '.join(distill) or 'loss_weight in model.distill_losses'
    return (f'{verdict}. Lower its learning rate (optim_wrapper.student.optimizer.lr), '
            'clip its gradient (optim_wrapper.student.clip_grad=dict(max_norm=...), or '
            f'a smaller max_norm) or lower the distillation weights ({weights}).')


def _restart() -> str:
    last = MessageHub.get_current_instance().get_info('last_ckpt')
    if last is None:
        return 'No checkpoint has been saved in this run yet: change a setting first.'
    return (f'The last checkpoint is {last}; resuming from it unchanged would '
            f'diverge again. `--resume {last}` takes a new clip_grad or loss weight but '
            'restores the learning rates saved in it: for a lower one start a new run '
            f'from its weights with `--cfg-options load_from={last}`.')


@contextmanager
def bounded(module: nn.Module, bound: float) -> Iterator[nn.Module]:
    """On exit, ``module``'s parameters lie in ``[-bound, bound]`` and are finite.

    Wrap an update of ``module``: an infinite or out-of-range value is clamped, a NaN
    put back to its value on entry (whatever the optimizer did, e.g. Adam with
    ``eps=0``). No host sync.

    Args:
        module (nn.Module): The module to update (the augmenter: a few logits).
        bound (float): The bound, > 0.

    Yields:
        nn.Module: ``module``.
    """
    before = [p.detach().clone() for p in module.parameters()]
    yield module
    with torch.no_grad():
        for p, old in zip(module.parameters(), before):
            p.copy_(torch.where(torch.isnan(p), old, p.clamp(-bound, bound)))
