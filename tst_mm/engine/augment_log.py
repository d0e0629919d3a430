"""What an augment phase logs: the objective's terms and their share of the gradient.

The augmenter minimises a sum of terms (teacher task loss, student inverse task loss,
optionally minus the distillation divergence or the transfer). If one term's gradient is orders of
magnitude larger than the others', the augmenter serves that term alone. The phase log
shows it at a glance: each term's value and its share of the augmenter's gradient norm,
at the start and at the end of the phase (means over its first and last quarter of
steps, so one noisy batch does not decide the line).

Augmenter steps are not student iterations, so nothing here goes through the message
hub's ``train/`` scalars (which the logger would repeat on every later student line);
the summary goes to the log and to the visualizer, at the student iteration the phase
precedes. Steps with a non-finite value (their update was skipped, see
:mod:`tst_mm.distill.nonfinite`) are left out of the means and counted on the line.
"""
import time
from typing import Dict, List, Tuple

import torch
from torch import Tensor

TERMS = ('teacher', 'student_inverse', 'divergence', 'transfer')
# log_vars key of each term's (unweighted) value, as TSTDistiller.augment_step names it
VALUE_KEYS = {'teacher': 'augment.teacher.loss',
              'student_inverse': 'augment.student_inverse.loss',
              'divergence': 'augment.divergence',
              'transfer': 'augment.transfer'}


class AugmentPhaseLog:
    """Collects the augment steps of one phase and summarises them.

    Args:
        name (str): How the log names the phase, e.g. ``'before iteration 1'``.
        timed (bool): Say how long the phase took, from this object's creation to its
            summary, and per step (False for steps interleaved with student steps).
            Defaults to True.
    """

    def __init__(self, name: str, timed: bool = True) -> None:
        self.name = name
        self.started = time.perf_counter() if timed else None
        self.keys: List[str] = []
        self.steps: List[Tensor] = []  # one row per step; read back once, at the end

    def add(self, outputs: Dict[str, Tensor]) -> None:
        """Records one augment step's outputs (no host sync)."""
        if not self.keys:
            self.keys = [k for k in _summary_keys() if k in outputs]
        self.steps.append(torch.stack([outputs[k].detach().float().reshape(())
                                       for k in self.keys]))

    def summary(self) -> Tuple[str, Dict[str, float]]:
        """One log line and the scalars for the visualizer (``augment/...``)."""
        rows = torch.stack(self.steps).cpu()  # waits for the last step: time it after
        elapsed = None if self.started is None else time.perf_counter() - self.started
        took = '' if elapsed is None else \
            f' in {elapsed:.1f} s, {elapsed / len(self.steps):.4f} s a step'
        finite = rows.isfinite().all(1)
        skipped, rows = int((~finite).sum()), rows[finite]
        if not len(rows):
            return (f'TST augment phase {self.name}: all {skipped} steps had non-finite '
                    f'values (their updates were skipped){took}', {})
        quarter = max(1, len(rows) // 4)
        start, end = (dict(zip(self.keys, part.mean(0).tolist()))
                      for part in (rows[:quarter], rows[-quarter:]))
        terms = [t for t in TERMS if f'augment.grad_norm.{t}' in self.keys]
        shares = [_shares(values, terms) for values in (start, end)]
        parts = [f'{t} {start[VALUE_KEYS[t]]:.4g} -> {end[VALUE_KEYS[t]]:.4g}'
                 for t in terms if VALUE_KEYS[t] in self.keys]
        share_text = ', '.join(f'{t} {100 * shares[0][t]:.0f}% -> '
                               f'{100 * shares[1][t]:.0f}%' for t in terms)
        left_out = f', {skipped} non-finite left out' if skipped else ''
        line = (f'TST augment phase {self.name} ({len(rows)} steps{took}{left_out}; start -> '
                f'end, means of the first and last {quarter}): ' + ', '.join(parts) +
                f'; share of the augmenter gradient: {share_text}')
        scalars = {f'augment/{k.split("augment.", 1)[1]}': v for k, v in end.items()}
        scalars.update({f'augment/grad_share.{t}': shares[1][t] for t in terms})
        return line, scalars


def _summary_keys() -> List[str]:
    return [*VALUE_KEYS.values(), 'augment.loss',
            *(f'augment.grad_norm.{t}' for t in (*TERMS, 'total'))]


def _shares(values: Dict[str, float], terms: List[str]) -> Dict[str, float]:
    """Each term's gradient norm over the sum of the terms' norms."""
    norms = {t: values[f'augment.grad_norm.{t}'] for t in terms}
    total = sum(norms.values()) or 1.0
    return {t: n / total for t, n in norms.items()}
