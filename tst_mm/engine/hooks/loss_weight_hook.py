"""DistillLossWeightHook: a schedule for the distillation losses' weights in the
student step (the augmenter's divergence term keeps the configured ones).

mmrazor's ``StopDistillHook`` can only switch distillation off at an epoch; this hook
also warms the weights up and decays them, by iteration or by epoch. The schedule is a
pure function of the step (:func:`distill_weight_factor`), so a resumed run gets the
right weights without any saved state.
"""
import math
from typing import Dict, Optional, Sequence

from mmengine.hooks import Hook
from mmengine.logging import print_log
from mmengine.registry import HOOKS
from mmengine.runner import IterBasedTrainLoop

from .utils import get_distiller

SCALAR_PREFIX = 'distill_weight/'


def distill_weight_factor(step: int, warmup: int = 0, decay_start: Optional[int] = None,
                          decay_end: Optional[int] = None, min_ratio: float = 0.0,
                          stop: Optional[int] = None) -> float:
    """The factor on the initial loss weights at a 0-based iteration or epoch ``step``.

    ``step / warmup`` during the warm-up, 1 until ``decay_start``, then linear down to
    ``min_ratio`` at ``decay_end`` and ``min_ratio`` after it; 0 from ``stop`` on.

    Args:
        step (int): The current 0-based iteration or epoch.
        warmup (int): Length of the linear warm-up from 0; 0 for none. Defaults to 0.
        decay_start (int, optional): Where the decay begins. Defaults to None (no decay).
        decay_end (int, optional): Where the decay reaches ``min_ratio``.
            Defaults to None.
        min_ratio (float): The factor after the decay. Defaults to 0.
        stop (int, optional): The first step with factor 0. Defaults to None (never).

    Returns:
        float: The factor, in [0, 1].
    """
    if stop is not None and step >= stop:
        return 0.0
    if step < warmup:
        return step / warmup
    if decay_start is None or decay_end is None or step <= decay_start:
        return 1.0
    progress = min(1.0, (step - decay_start) / (decay_end - decay_start))
    return 1.0 - (1.0 - min_ratio) * progress


def _check_step(name: str, value, optional: bool = True) -> None:
    if value is None and optional:
        return
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ValueError(f'{name} must be an int >= 0{" or None" if optional else ""}, '
                         f'got {value!r}')


@HOOKS.register_module()
class DistillLossWeightHook(Hook):
    """Schedules the ``loss_weight`` of a TSTDistiller's distillation losses in the
    student step.

    Before every student iteration, each scheduled loss's weight is set to its initial
    (configured) ``loss_weight`` times :func:`distill_weight_factor` of the current
    iteration (or epoch), and logged as the scalar ``distill_weight/<loss name>`` (text
    log and every visualizer backend, unsmoothed).

    The schedule is the student's: after each student iteration the configured weights
    are put back, so the augmenter steps, which run between student iterations, always
    see the configured weights. They matter there only in the augmenter objective's
    ``divergence`` term (``augment_loss_weights.divergence`` times the sum of the
    distillation losses), whose strength ``augment_loss_weights`` sets. Scaling it with
    the student's schedule would remove it during a warm-up and after ``stop``: in an
    augment phase at iteration 0 (every shipped Cityscapes config has one) the
    augmenter would then serve its other terms alone, and with
    ``student_inverse=0`` (the way out for losses without an inverse) only the
    teacher's, making images easier instead of harder.

    Example:
        Warm the distillation losses up over 1000 iterations, decay them linearly to
        10 % between iterations 60k and 80k, and switch them off from 85k on::

            custom_hooks = [dict(type='DistillLossWeightHook', warmup=1000,
                                 decay_start=60000, decay_end=80000, min_ratio=0.1,
                                 stop=85000)]

    Args:
        by_epoch (bool): Steps are epochs (True) or iterations (False).
            Defaults to False.
        warmup (int): Length of a linear warm-up from 0 (step / warmup); 0 for none.
            Defaults to 0.
        decay_start (int, optional): Step where a linear decay begins; needs
            ``decay_end``. Defaults to None (no decay).
        decay_end (int, optional): Step where the decay reaches ``min_ratio``.
            Defaults to None.
        min_ratio (float): Factor kept after the decay, in [0, 1]. Defaults to 0.
        stop (int, optional): First step where the losses are switched off (factor 0).
            Defaults to None (never).
        losses (Sequence[str], optional): Names in ``distill_losses`` to schedule.
            Defaults to None (all of them).
    """

    priority = 'NORMAL'

    def __init__(self, by_epoch: bool = False, warmup: int = 0,
                 decay_start: Optional[int] = None, decay_end: Optional[int] = None,
                 min_ratio: float = 0.0, stop: Optional[int] = None,
                 losses: Optional[Sequence[str]] = None) -> None:
        _check_step('warmup', warmup, optional=False)
        _check_step('decay_start', decay_start)
        _check_step('decay_end', decay_end)
        _check_step('stop', stop)
        if (decay_start is None) != (decay_end is None):
            raise ValueError('decay_start and decay_end go together, got '
                             f'decay_start={decay_start!r}, decay_end={decay_end!r}')
        if decay_start is not None and not warmup <= decay_start < decay_end:
            raise ValueError('need warmup <= decay_start < decay_end, got '
                             f'warmup={warmup!r}, decay_start={decay_start!r}, '
                             f'decay_end={decay_end!r}')
        if isinstance(min_ratio, bool) or not isinstance(min_ratio, (int, float)) or \
                not (math.isfinite(min_ratio) and 0 <= min_ratio <= 1):
            raise ValueError(f'min_ratio must be a number in [0, 1], got {min_ratio!r}')
        if stop is not None and stop <= warmup:
            raise ValueError(f'stop must come after the warm-up, got stop={stop!r}, '
                             f'warmup={warmup!r}')
        if losses is not None and (isinstance(losses, str) or not losses or
                                   not all(isinstance(n, str) for n in losses)):
            raise ValueError(f'losses must be a non-empty list of loss names or None, '
                             f'got {losses!r}')
        self.by_epoch = bool(by_epoch)
        self.schedule = dict(warmup=warmup, decay_start=decay_start,
                             decay_end=decay_end, min_ratio=float(min_ratio), stop=stop)
        self.loss_names = None if losses is None else list(losses)
        self._initial: Dict[str, float] = {}
        self._losses: dict = {}

    def before_run(self, runner) -> None:
        """Checks the model and the loss names; records the initial weights."""
        distill_losses = get_distiller(runner, type(self).__name__,
                                       'distill_losses').distill_losses
        self._losses = self._select(distill_losses)
        self._initial = {name: float(loss.loss_weight)
                         for name, loss in self._losses.items()}
        self._log_unsmoothed(runner)

    def before_train(self, runner) -> None:
        """Checks the schedule against the loop; the configured weights until the first
        student iteration (an augment phase may come first)."""
        self._check_loop(runner)
        self._restore()

    def before_train_iter(self, runner, batch_idx: int, data_batch=None) -> None:
        """Sets this iteration's weights and logs them."""
        for name, weight in self._apply(runner).items():
            runner.message_hub.update_scalar(f'train/{SCALAR_PREFIX}{name}', weight)

    def after_train_iter(self, runner, batch_idx: int, data_batch=None,
                         outputs=None) -> None:
        """Puts the configured weights back for the augmenter steps that may follow."""
        self._restore()

    def factor(self, step: int) -> float:
        """The schedule's factor at ``step``, see :func:`distill_weight_factor`."""
        return distill_weight_factor(step, **self.schedule)

    def _apply(self, runner) -> Dict[str, float]:
        factor = self.factor(runner.epoch if self.by_epoch else runner.iter)
        weights = {name: w * factor for name, w in self._initial.items()}
        for name, weight in weights.items():
            self._losses[name].loss_weight = weight
        return weights

    def _restore(self) -> None:
        for name, weight in self._initial.items():
            self._losses[name].loss_weight = weight

    def _select(self, distill_losses) -> dict:
        names = list(distill_losses) if self.loss_names is None else self.loss_names
        unknown = [n for n in names if n not in distill_losses]
        if unknown:
            raise KeyError(f'{type(self).__name__}: losses {unknown} are not in the '
                           f"model's distill_losses; valid names: {list(distill_losses)}")
        missing = [n for n in names if not hasattr(distill_losses[n], 'loss_weight')]
        if missing:
            raise TypeError(f'{type(self).__name__}: distill losses {missing} have no '
                            '`loss_weight` attribute to schedule')
        return {name: distill_losses[name] for name in names}

    def _log_unsmoothed(self, runner) -> None:
        # Loss names contain 'loss', so the LogProcessor would average the weights over
        # its window like a loss; a schedule must be logged as its current value.
        custom_cfg = runner.log_processor.custom_cfg
        configured = {cfg.get('log_name', cfg['data_src']) for cfg in custom_cfg}
        for name in self._losses:
            key = SCALAR_PREFIX + name
            if key not in configured:
                custom_cfg.append(dict(data_src=key, method_name='current'))

    def _check_loop(self, runner) -> None:
        if self.by_epoch and isinstance(runner.train_loop, IterBasedTrainLoop):
            raise ValueError(f'{type(self).__name__}(by_epoch=True) needs an epoch-based '
                             f'train loop, got {type(runner.train_loop).__name__}; use '
                             'by_epoch=False and give the steps in iterations')
        horizon = runner.max_epochs if self.by_epoch else runner.max_iters
        points = {k: v for k, v in self.schedule.items()
                  if k != 'min_ratio' and v is not None and v > horizon}
        if points:
            unit = 'epochs' if self.by_epoch else 'iterations'
            print_log(f'{type(self).__name__}: {points} lie beyond the {horizon} '
                      f'training {unit}; that part of the schedule never runs',
                      logger='current', level=30)
