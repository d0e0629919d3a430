"""Train loops that alternate student updates with augmenter updates (TST).

The loops only schedule; the distiller does the math:
``model.train_step`` is one student update (the augmenter is sampled without gradient),
``model.augment_step`` one augmenter update (student and teacher frozen). An *augment
phase* is a run of augmenter steps at a scheduled point; before each phase the augmenter's
optimizer state is reset, as in the reference. Augmenter steps are not training
iterations: they fire no iteration hooks, so the student's iteration count, its learning
rate schedule and the checkpoint interval are the same as without TST. A long augment
phase (a pass over COCO) can checkpoint itself every ``augment_checkpoint_interval``
steps; ``--resume`` from such a checkpoint continues the phase where it stopped.
Each phase ends with one summary line: the objective's terms and each term's share of
the augmenter's gradient (:mod:`tst_mm.engine.augment_log`). Its progress lines, the
student's timings and ETA around phases, and the intra-phase checkpoint files:
:mod:`tst_mm.engine.progress`.

Augment phases draw their batches from a second dataloader over the same dataset, with
its own sampler seed (and its own workers): the student's batches are then exactly
those of the same config without TST (same images, same order, same pipeline
randomness when ``num_workers > 0``), so a TST run and its plain-KD control see the
same data.
"""
import copy
import os.path as osp
import time
from typing import Iterable, Iterator, Optional, Sequence

from mmengine.logging import print_log
from mmengine.model import MMDistributedDataParallel
from mmengine.registry import LOOPS
from mmengine.runner import EpochBasedTrainLoop, IterBasedTrainLoop
from mmengine.runner.loops import _InfiniteDataloaderIterator
from torch.utils.data import DataLoader

from ..distill.nonfinite import AUGMENT_STEP_KEY
from .progress import (PHASE_CKPT_KEY, STEP_TIME_KEY, AugmentProgressHook,
                       augment_step_time, checkpoint_target, format_eta,
                       phase_checkpoint_name, remove_phase_checkpoint,
                       restart_iter_timers)
from .augment_log import AugmentPhaseLog
from .config_checks import (check_optim_wrapper, schedulers_per_wrapper,
                            warn_if_augmenter_untrained)
from .rng_state import RNGStateHook

LOG_EVERY = 50  # augmenter steps between progress lines in a long augment phase
PROGRESS_KEY = 'tst_augment_progress'  # message-hub info: dict(phase=..., steps=...)
# The augment dataloader's seed is the run's seed plus this: another order, other workers.
AUGMENT_SEED_OFFSET = 1


def _check_points(name: str, points: Optional[Iterable[int]], limit: int) -> tuple:
    points = tuple(sorted(set(int(p) for p in points or ())))
    bad = [p for p in points if not 0 <= p < limit]
    if bad:
        raise ValueError(f'{name} must lie in [0, {limit}), got {bad}')
    return points


class _AlternationMixin:
    """What both loops share: checks, the augment step, the optimizer reset."""

    def _setup_tst(self, dataloader_cfg, augment_interval: Optional[int],
                   checkpoint_interval: Optional[int], phases_name: str,
                   phases: Optional[Sequence[int]]) -> None:
        for name, value in (('augment_interval', augment_interval),
                            ('augment_checkpoint_interval', checkpoint_interval)):
            if value is not None and value < 1:
                raise ValueError(f'{name} must be >= 1 or None, got {value}')
        self.augment_interval = augment_interval
        self.augment_checkpoint_interval = checkpoint_interval
        model = self.runner.model
        if isinstance(model, MMDistributedDataParallel):
            raise TypeError(
                "MMDistributedDataParallel never calls TSTDistiller.train_step; set "
                "model_wrapper_cfg = dict(type='TSTDistributedDataParallel').")
        if not hasattr(model, 'augment_step'):
            raise TypeError(f'{type(self).__name__} trains a TSTDistiller (a model with '
                            f'`augment_step`), got {type(model).__name__}')
        # Runner.train() builds this loop before the optimizer wrappers and the
        # schedulers: their configs can still be checked and corrected.
        runner = self.runner
        check_optim_wrapper(runner.optim_wrapper)
        runner.param_schedulers = schedulers_per_wrapper(runner.param_schedulers)
        warn_if_augmenter_untrained(model, type(self).__name__, phases_name, phases,
                                    augment_interval)
        self.rng_hook = RNGStateHook(self.runner)
        self.runner.register_hook(self.rng_hook)
        self._interval_log = AugmentPhaseLog('every-k steps', timed=False)
        self._augment_dataloader_cfg = copy.deepcopy(dataloader_cfg) \
            if isinstance(dataloader_cfg, dict) else None
        self._augment_dataloader: Optional[DataLoader] = None

    @property
    def augment_dataloader(self) -> DataLoader:
        """The augment phases' dataloader: the training dataloader's config on the same
        (already built) dataset, seeded ``seed + AUGMENT_SEED_OFFSET``; built at the first
        phase. A training dataloader passed in built is shared instead (its student
        batches then depend on the phases)."""
        if self._augment_dataloader is None:
            if self._augment_dataloader_cfg is None:
                self._augment_dataloader = self.dataloader
            else:
                cfg = dict(self._augment_dataloader_cfg, dataset=self.dataloader.dataset)
                # Between phases its workers would only hold memory.
                cfg['persistent_workers'] = False
                randomness = self.runner._randomness_cfg
                self._augment_dataloader = self.runner.build_dataloader(
                    cfg, seed=self.runner.seed + AUGMENT_SEED_OFFSET,
                    diff_rank_seed=randomness.get('diff_rank_seed', False))
        return self._augment_dataloader

    def _reset_augmenter_optimizer(self) -> None:
        """A fresh optimizer state (momentum) and the initial learning rate.

        With ``accumulative_counts`` on the augmenter's wrapper (several batches per
        update: its gradient is the mean of theirs), a phase also starts a fresh
        accumulation: gradients left over from the last phase's end are dropped, not
        added to this phase's first update, and the augmenter's updates are not tied
        to the student's iteration count (mmengine counts both wrappers from it).
        """
        wrapper = self.runner.optim_wrapper['augmenter']
        optimizer = wrapper.optimizer
        optimizer.state.clear()
        for group in optimizer.param_groups:
            if 'initial_lr' in group:
                group['lr'] = group['initial_lr']
        wrapper.zero_grad()
        counts = wrapper._accumulative_counts
        wrapper._inner_count = -(-wrapper._inner_count // counts) * counts  # round up
        wrapper._max_counts = -1  # never a forced update at the student's last iteration

    def _augment_step(self, data_batch: Sequence[dict], where: str) -> dict:
        # Where the step is, in words, for a non-finite loss's warning and error.
        self.runner.message_hub.update_info(AUGMENT_STEP_KEY, where)
        return self.runner.model.augment_step(data_batch,
                                              optim_wrapper=self.runner.optim_wrapper)

    def _interval_augment_step(self, data_batch: Sequence[dict]) -> None:
        """Iteration-level alternation: one augmenter step, summarised every
        ``LOG_EVERY`` such steps. Its time is not the student iteration's: it goes to
        the ETA (:mod:`tst_mm.engine.progress`)."""
        started = time.perf_counter()
        self._interval_log.add(self._augment_step(
            data_batch, f'the augmenter step before iteration {self._iter + 1}'))
        took = time.perf_counter() - started
        self._progress_hook().add_interval_step(took)
        restart_iter_timers(self.runner, by=took)
        if len(self._interval_log.steps) == LOG_EVERY:
            self._log_summary(self._interval_log)
            self._interval_log = AugmentPhaseLog('every-k steps', timed=False)

    def _log_summary(self, phase_log: AugmentPhaseLog) -> None:
        line, scalars = phase_log.summary()
        print_log(line, logger='current')
        self.runner.visualizer.add_scalars(scalars, step=self.runner.iter)

    def _progress_hook(self) -> AugmentProgressHook:
        """The hook that counts the augmenter steps to come in the student's ETA
        (registered at the first call: the start of ``run``)."""
        if getattr(self, '_progress', None) is None:
            self._progress = AugmentProgressHook(self)
            self.runner.register_hook(self._progress)
        return self._progress

    def _steps_done(self, phase: str) -> int:
        """Augmenter steps of ``phase`` a resumed run had already taken (else 0)."""
        progress = self.runner.message_hub.get_info(PROGRESS_KEY)
        return progress['steps'] if progress and progress['phase'] == phase else 0

    def _run_augment_phase(self, batches: Iterator, num_steps: int, phase: str,
                           where: str) -> None:
        """``num_steps`` augmenter steps on ``batches``; ``phase`` names this phase in
        checkpoints, ``where`` in the log."""
        done = self._steps_done(phase)
        step_time, source = augment_step_time(self.runner)
        expected = '' if step_time is None else \
            f' (eta {format_eta((num_steps - done) * step_time)} at ' \
            f'{step_time:.4f} s a step, {source})'
        if done:
            # Resumed inside this phase: skip the batches it used, then continue the
            # random stream the checkpoint saved (the optimizer state came with it).
            for _ in range(done):
                next(batches)
            self.rng_hook.restore()
            print_log(f'TST augment phase {where}: resuming after step {done}{expected}',
                      logger='current')
        else:
            self._reset_augmenter_optimizer()
            print_log(f'TST augment phase {where}: {num_steps} augmenter steps{expected}',
                      logger='current')
        self.runner.model.train()
        phase_log = AugmentPhaseLog(where)
        started = window_start = time.perf_counter()
        data_time, window_steps = 0.0, 0
        for step in range(done + 1, num_steps + 1):
            loading = time.perf_counter()
            data_batch = next(batches)
            data_time += time.perf_counter() - loading
            outputs = self._augment_step(data_batch,
                                         f'augment phase {where}, step {step}/{num_steps}')
            phase_log.add(outputs)
            window_steps += 1
            self.runner.message_hub.update_info(PROGRESS_KEY, dict(phase=phase, steps=step))
            if step % LOG_EVERY == 0 or step == num_steps:
                # As LoggerHook's lines: ETA, then the means over the steps since the
                # last line (reading the losses waits for the last step to finish).
                losses = ', '.join(f'{k}: {float(v):.4f}' for k, v in outputs.items())
                now = time.perf_counter()
                eta = (now - started) / (step - done) * (num_steps - step)
                print_log(f'TST augment phase {where}: step {step}/{num_steps}  '
                          f'eta: {format_eta(eta)}  '
                          f'time: {(now - window_start) / window_steps:.4f}  '
                          f'data_time: {data_time / window_steps:.4f}  {losses}',
                          logger='current')
                window_start, data_time, window_steps = now, 0.0, 0
            interval = self.augment_checkpoint_interval
            if interval and step % interval == 0 and step < num_steps:
                self._save_phase_checkpoint(phase, step, num_steps, where)
        self.runner.message_hub.update_info(PROGRESS_KEY, None)
        if phase_log.steps:
            self._log_summary(phase_log)
            # What the phases to come are expected to take, per step (for the ETA).
            self.runner.message_hub.update_info(
                STEP_TIME_KEY,
                (time.perf_counter() - started) / len(phase_log.steps))
        # The next student iteration's `time` and `data_time` are its own.
        restart_iter_timers(self.runner)

    def _save_phase_checkpoint(self, phase: str, step: int, num_steps: int,
                               where: str) -> None:
        """Checkpoint inside a phase, removing the previous one (see
        :mod:`tst_mm.engine.progress` for when the last one goes)."""
        runner = self.runner
        hub = runner.message_hub
        out_dir, backend, storage = checkpoint_target(runner)
        filename = phase_checkpoint_name(phase, step)
        path = backend.join_path(out_dir, filename)
        print_log(f'Saving checkpoint at step {step}/{num_steps} of the TST augment phase '
                  f'{where}: {filename}', logger='current')
        previous = hub.get_info(PHASE_CKPT_KEY)
        # The newest checkpoint, as CheckpointHook records its own before saving it (a
        # non-finite loss's error names it; the file's message hub holds its own path).
        hub.update_info('last_ckpt', path)
        hub.update_info(PHASE_CKPT_KEY, path)
        # Taken between student steps: no completed step or epoch to count past.
        runner.save_checkpoint(out_dir, filename,
                               meta=dict(epoch=runner.epoch, iter=runner.iter), **storage)
        if previous != path:
            remove_phase_checkpoint(runner, previous)
        if runner.rank == 0:
            # What `--resume` without a path picks up, as CheckpointHook records it.
            with open(osp.join(runner.work_dir, 'last_checkpoint'), 'w') as f:
                f.write(path)


@LOOPS.register_module()
class TSTEpochBasedTrainLoop(_AlternationMixin, EpochBasedTrainLoop):
    """Epoch-based training with augment phases before the listed epochs.

    Args:
        runner (Runner): The runner.
        dataloader (DataLoader or dict): The training dataloader.
        max_epochs (int): Total student epochs.
        val_begin (int): First epoch that validates. Defaults to 1.
        val_interval (int): Validation interval in epochs. Defaults to 1.
        augment_epochs (Sequence[int], optional): 0-based epochs before which the
            augmenter is trained, e.g. ``[6, 12]`` for the reference's COCO 2x
            schedule. Defaults to None: none, with a warning unless nothing needs
            them (``augment_interval``, plain KD, no teacher); ``[]`` says none on
            purpose.
        augment_passes (int): Passes over the training set per augment phase.
            Defaults to 1.
        augment_interval (int, optional): Also take one augmenter step on the current
            batch before every ``augment_interval``-th student step (iteration-level
            alternation). Defaults to None (off).
        augment_checkpoint_interval (int, optional): Save a checkpoint every this many
            augmenter steps inside an augment phase. Defaults to None.
        dynamic_intervals: As in ``EpochBasedTrainLoop``. Defaults to None.
    """

    def __init__(self, runner, dataloader, max_epochs: int, val_begin: int = 1,
                 val_interval: int = 1,
                 augment_epochs: Optional[Sequence[int]] = None,
                 augment_passes: int = 1, augment_interval: Optional[int] = None,
                 augment_checkpoint_interval: Optional[int] = None,
                 dynamic_intervals=None) -> None:
        dataloader_cfg = copy.deepcopy(dataloader) if isinstance(dataloader, dict) else None
        super().__init__(runner, dataloader, max_epochs, val_begin, val_interval,
                         dynamic_intervals)
        if augment_passes < 1:
            raise ValueError(f'augment_passes must be >= 1, got {augment_passes}')
        self.augment_epochs = _check_points('augment_epochs', augment_epochs, max_epochs)
        self.augment_passes = augment_passes
        self._setup_tst(dataloader_cfg, augment_interval, augment_checkpoint_interval,
                        'augment_epochs', augment_epochs)

    def run(self):
        self._progress_hook()
        if not self._steps_done(f'epoch_{self._epoch}'):
            self.rng_hook.restore()  # else once the phase has skipped its used batches
        return super().run()

    def run_epoch(self) -> None:
        if self._epoch in self.augment_epochs:
            batches = self._augment_batches()
            self._run_augment_phase(batches,
                                    self.augment_passes * len(self.augment_dataloader),
                                    f'epoch_{self._epoch}', f'before epoch {self._epoch + 1}')
            # Let the last pass finish: a batch sampler left suspended after its last
            # batch keeps state (mmdet's AspectRatioBatchSampler still holds that batch
            # in its buckets) and would hand it to the epoch below as an extra batch.
            for _ in batches:
                pass
        super().run_epoch()

    def _augment_batches(self) -> Iterator:
        loader = self.augment_dataloader
        sampler = getattr(loader, 'sampler', None)
        for n in range(self.augment_passes):
            if hasattr(sampler, 'set_epoch'):
                # The same order a resumed run will see, whatever ran before.
                sampler.set_epoch(self._epoch * self.augment_passes + n)
            yield from loader

    def run_iter(self, idx, data_batch: Sequence[dict]) -> None:
        if self.augment_interval and self._iter % self.augment_interval == 0:
            self._interval_augment_step(data_batch)
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
        augment_iters (Sequence[int], optional): 0-based iterations before which an
            augment phase runs, e.g. ``[0, 20000, 40000]``. Defaults to None: none,
            with a warning as ``augment_epochs``.
        augment_steps (int): Augmenter steps (batches) per augment phase.
            Defaults to 1.
        augment_interval (int, optional): Also take one augmenter step on the current
            batch before every ``augment_interval``-th student step. Defaults to None.
        augment_checkpoint_interval (int, optional): Save a checkpoint every this many
            augmenter steps inside an augment phase. Defaults to None.
        dynamic_intervals: As in ``IterBasedTrainLoop``. Defaults to None.
    """

    def __init__(self, runner, dataloader, max_iters: int, val_begin: int = 1,
                 val_interval: int = 1000,
                 augment_iters: Optional[Sequence[int]] = None,
                 augment_steps: int = 1, augment_interval: Optional[int] = None,
                 augment_checkpoint_interval: Optional[int] = None,
                 dynamic_intervals=None) -> None:
        dataloader_cfg = copy.deepcopy(dataloader) if isinstance(dataloader, dict) else None
        super().__init__(runner, dataloader, max_iters, val_begin, val_interval,
                         dynamic_intervals)
        if augment_steps < 1:
            raise ValueError(f'augment_steps must be >= 1, got {augment_steps}')
        self.augment_iters = _check_points('augment_iters', augment_iters, max_iters)
        self.augment_steps = augment_steps
        self._setup_tst(dataloader_cfg, augment_interval, augment_checkpoint_interval,
                        'augment_iters', augment_iters)
        self._augment_iterator: Optional[Iterator] = None

    @property
    def augment_iterator(self) -> Iterator:
        """Batches for the augment phases, endless (one iterator for the whole run)."""
        if self._augment_iterator is None:
            loader = self.augment_dataloader
            self._augment_iterator = self.dataloader_iterator \
                if loader is self.dataloader else _InfiniteDataloaderIterator(loader)
        return self._augment_iterator

    def _augment_batches_before(self, iteration: int) -> int:
        """Augment batches the phases before student step ``iteration`` drew."""
        return self.augment_steps * sum(1 for p in self.augment_iters if p < iteration)

    def run(self):
        self._progress_hook()
        self.runner.call_hook('before_train')
        self.runner.call_hook('before_train_epoch')
        if self._iter > 0:
            # Resumed: skip the batches the interrupted run had already used (the
            # student's, then the augment phases'), then continue its random stream.
            skip = self._iter
            skip_augment = self._augment_batches_before(self._iter)
            if self.augment_dataloader is self.dataloader:
                skip, skip_augment = skip + skip_augment, 0
            print_log(f'Advance dataloader {skip} steps (and the augment dataloader '
                      f'{skip_augment}) to skip data that has already been used',
                      logger='current')
            for _ in range(skip):
                next(self.dataloader_iterator)
            for _ in range(skip_augment):
                next(self.augment_iterator)
        if not self._steps_done(f'iter_{self._iter}'):
            self.rng_hook.restore()  # else once the phase has skipped its used batches
        while self._iter < self._max_iters and not self.stop_training:
            self.runner.model.train()
            if self._iter in self.augment_iters:
                self._run_augment_phase(self.augment_iterator, self.augment_steps,
                                        f'iter_{self._iter}',
                                        f'before iteration {self._iter + 1}')
            data_batch = next(self.dataloader_iterator)
            if self.augment_interval and self._iter % self.augment_interval == 0:
                self._interval_augment_step(data_batch)
            self.run_iter(data_batch)

            self._decide_current_val_interval()
            if (self.runner.val_loop is not None and self._iter >= self.val_begin
                    and self._iter % self.val_interval == 0):
                self.runner.val_loop.run()
        self.runner.call_hook('after_train_epoch')
        self.runner.call_hook('after_train')
        return self.runner.model
