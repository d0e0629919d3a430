"""Train loops that alternate student updates with augmenter updates (TST).

The loops only schedule; the distiller does the math:
``model.train_step`` is one student update (the augmenter is sampled without gradient),
``model.augment_step`` one augmenter update (student and teacher frozen). An *augment
phase* is a run of augmenter steps at a scheduled point; before each phase the augmenter's
optimizer state is reset, as in the reference. Augmenter steps are not training
iterations: they fire no iteration hooks, so the student's iteration count, its learning
rate schedule and the checkpoint interval are the same as without TST.
"""
from typing import Iterable, Optional, Sequence

from mmengine.logging import print_log
from mmengine.model import MMDistributedDataParallel
from mmengine.registry import LOOPS
from mmengine.runner import EpochBasedTrainLoop, IterBasedTrainLoop

from .rng_state import RNGStateHook

LOG_EVERY = 50  # augmenter steps between progress lines in a long augment phase


def _check_points(name: str, points: Iterable[int], limit: int) -> tuple:
    points = tuple(sorted(set(int(p) for p in points)))
    bad = [p for p in points if not 0 <= p < limit]
    if bad:
        raise ValueError(f'{name} must lie in [0, {limit}), got {bad}')
    return points


class _AlternationMixin:
    """What both loops share: checks, the augment step, the optimizer reset."""

    def _setup_tst(self, augment_interval: Optional[int]) -> None:
        if augment_interval is not None and augment_interval < 1:
            raise ValueError(f'augment_interval must be >= 1 or None, got '
                             f'{augment_interval}')
        self.augment_interval = augment_interval
        model = self.runner.model
        if isinstance(model, MMDistributedDataParallel):
            raise TypeError(
                "MMDistributedDataParallel never calls TSTDistiller.train_step; set "
                "model_wrapper_cfg = dict(type='TSTDistributedDataParallel').")
        if not hasattr(model, 'augment_step'):
            raise TypeError(f'{type(self).__name__} trains a TSTDistiller (a model with '
                            f'`augment_step`), got {type(model).__name__}')
        self.rng_hook = RNGStateHook()
        self.runner.register_hook(self.rng_hook)

    def _reset_augmenter_optimizer(self) -> None:
        """A fresh optimizer state (momentum) and the initial learning rate."""
        optimizer = self.runner.optim_wrapper['augmenter'].optimizer
        optimizer.state.clear()
        for group in optimizer.param_groups:
            if 'initial_lr' in group:
                group['lr'] = group['initial_lr']

    def _augment_step(self, data_batch: Sequence[dict]) -> dict:
        outputs = self.runner.model.augment_step(
            data_batch, optim_wrapper=self.runner.optim_wrapper)
        for key, value in outputs.items():
            self.runner.message_hub.update_scalar(f'train/{key}', value)
        return outputs

    def _run_augment_phase(self, batches: Iterable, num_steps: int, where: str) -> None:
        self._reset_augmenter_optimizer()
        self.runner.model.train()
        print_log(f'TST augment phase {where}: {num_steps} augmenter steps',
                  logger='current')
        for step, data_batch in enumerate(batches, 1):
            outputs = self._augment_step(data_batch)
            if step % LOG_EVERY == 0 or step == num_steps:
                losses = ', '.join(f'{k}: {float(v):.4f}' for k, v in outputs.items())
                print_log(f'TST augment phase {where}: step {step}/{num_steps}  '
                          f'{losses}', logger='current')


@LOOPS.register_module()
class TSTEpochBasedTrainLoop(_AlternationMixin, EpochBasedTrainLoop):
    """Epoch-based training with augment phases before the listed epochs.

    Args:
        runner (Runner): The runner.
        dataloader (DataLoader or dict): The training dataloader.
        max_epochs (int): Total student epochs.
        val_begin (int): First epoch that validates. Defaults to 1.
        val_interval (int): Validation interval in epochs. Defaults to 1.
        augment_epochs (Sequence[int]): 0-based epochs before which the augmenter is
            trained, e.g. ``[6, 12]`` for the reference's COCO 2x schedule.
            Defaults to ().
        augment_passes (int): Passes over the training set per augment phase.
            Defaults to 1.
        augment_interval (int, optional): Also take one augmenter step on the current
            batch before every ``augment_interval``-th student step (iteration-level
            alternation). Defaults to None (off).
        dynamic_intervals: As in ``EpochBasedTrainLoop``. Defaults to None.
    """

    def __init__(self, runner, dataloader, max_epochs: int, val_begin: int = 1,
                 val_interval: int = 1, augment_epochs: Sequence[int] = (),
                 augment_passes: int = 1, augment_interval: Optional[int] = None,
                 dynamic_intervals=None) -> None:
        super().__init__(runner, dataloader, max_epochs, val_begin, val_interval,
                         dynamic_intervals)
        if augment_passes < 1:
            raise ValueError(f'augment_passes must be >= 1, got {augment_passes}')
        self.augment_epochs = _check_points('augment_epochs', augment_epochs, max_epochs)
        self.augment_passes = augment_passes
        self._setup_tst(augment_interval)

    def run(self):
        self.rng_hook.restore()
        return super().run()

    def run_epoch(self) -> None:
        if self._epoch in self.augment_epochs:
            self._run_augment_phase(self._augment_batches(),
                                    self.augment_passes * len(self.dataloader),
                                    f'before epoch {self._epoch + 1}')
        super().run_epoch()

    def _augment_batches(self):
        sampler = getattr(self.dataloader, 'sampler', None)
        for _ in range(self.augment_passes):
            if hasattr(sampler, 'set_epoch'):
                # The same order a resumed run will see, whatever ran before.
                sampler.set_epoch(self._epoch)
            yield from self.dataloader

    def run_iter(self, idx, data_batch: Sequence[dict]) -> None:
        if self.augment_interval and self._iter % self.augment_interval == 0:
            self._augment_step(data_batch)
        super().run_iter(idx, data_batch)


@LOOPS.register_module()
class TSTIterBasedTrainLoop(_AlternationMixin, IterBasedTrainLoop):
    """Iteration-based training with augment phases before the listed iterations.

    Args:
        runner (Runner): The runner.
        dataloader (DataLoader or dict): The training dataloader.
        max_iters (int): Total student iterations.
        val_begin (int): First iteration that validates. Defaults to 1.
        val_interval (int): Validation interval in iterations. Defaults to 1000.
        augment_iters (Sequence[int]): 0-based iterations before which an augment phase
            runs, e.g. ``[0, 20000, 40000]``. Defaults to ().
        augment_steps (int): Augmenter steps (batches) per augment phase.
            Defaults to 1.
        augment_interval (int, optional): Also take one augmenter step on the current
            batch before every ``augment_interval``-th student step. Defaults to None.
        dynamic_intervals: As in ``IterBasedTrainLoop``. Defaults to None.
    """

    def __init__(self, runner, dataloader, max_iters: int, val_begin: int = 1,
                 val_interval: int = 1000, augment_iters: Sequence[int] = (),
                 augment_steps: int = 1, augment_interval: Optional[int] = None,
                 dynamic_intervals=None) -> None:
        super().__init__(runner, dataloader, max_iters, val_begin, val_interval,
                         dynamic_intervals)
        if augment_steps < 1:
            raise ValueError(f'augment_steps must be >= 1, got {augment_steps}')
        self.augment_iters = _check_points('augment_iters', augment_iters, max_iters)
        self.augment_steps = augment_steps
        self._setup_tst(augment_interval)

    def _batches_before(self, iteration: int) -> int:
        """Batches drawn from the data iterator before student step ``iteration``."""
        phases = sum(1 for point in self.augment_iters if point < iteration)
        return iteration + phases * self.augment_steps

    def run(self):
        self.runner.call_hook('before_train')
        self.runner.call_hook('before_train_epoch')
        if self._iter > 0:
            # Resumed: skip the batches the interrupted run had already used, augment
            # phases included, then continue its random stream.
            skip = self._batches_before(self._iter)
            print_log(f'Advance dataloader {skip} steps to skip data that has already '
                      'been used', logger='current')
            for _ in range(skip):
                next(self.dataloader_iterator)
        self.rng_hook.restore()
        while self._iter < self._max_iters and not self.stop_training:
            self.runner.model.train()
            if self._iter in self.augment_iters:
                batches = (next(self.dataloader_iterator)
                           for _ in range(self.augment_steps))
                self._run_augment_phase(batches, self.augment_steps,
                                        f'before iteration {self._iter + 1}')
            data_batch = next(self.dataloader_iterator)
            if self.augment_interval and self._iter % self.augment_interval == 0:
                self._augment_step(data_batch)
            self.run_iter(data_batch)

            self._decide_current_val_interval()
            if (self.runner.val_loop is not None and self._iter >= self.val_begin
                    and self._iter % self.val_interval == 0):
                self.runner.val_loop.run()
        self.runner.call_hook('after_train_epoch')
        self.runner.call_hook('after_train')
        return self.runner.model
