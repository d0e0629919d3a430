"""Time and checkpoints around augment phases, as mmengine's hooks keep them for iterations.

- **Student timings.** mmengine's ``IterTimerHook`` starts an iteration's clock when the
  previous iteration ends, so an augment phase (run between two iterations) would be
  booked as the next iteration's ``data_time`` and ``time``, and into the average step
  time its ETA comes from. The loops restart that clock after a phase
  (:func:`restart_iter_timers`) and move it past an interleaved augmenter step
  (``augment_interval``): ``time`` and ``data_time`` are the student's alone.
- **ETA.** ``IterTimerHook``'s ETA is then the student's remaining iterations;
  :class:`AugmentProgressHook`, which runs between it and ``LoggerHook``, adds the
  expected time of the augmenter steps still to come (the remaining phases, and the
  interleaved steps): their number times the augmenter step time measured in the last
  phase, or, before any phase, the student's mean step time.
- **Intra-phase checkpoints** (``augment_checkpoint_interval``) are resume points, not
  results: the student in them is the one of the last student iteration. They are named
  after the phase as the log names it (``augment_before_epoch_7_step_500.pth``) and saved
  where ``CheckpointHook`` saves its own (its ``out_dir``), with the same log line. At
  most one is on disk: each removes the one before, and the last is removed once
  ``CheckpointHook`` has saved a newer checkpoint (until then it is what ``--resume``
  picks up). ``max_keep_ckpts`` therefore bounds the run's files as without TST, plus that
  one file while a phase is the newest resume point.
"""
import datetime
import os.path as osp
import time
from typing import Optional, Tuple

from mmengine.dist import is_main_process
from mmengine.fileio import get_file_backend
from mmengine.hooks import CheckpointHook, Hook, IterTimerHook

# message-hub info, saved in checkpoints:
STEP_TIME_KEY = 'tst_augment_step_time'  # seconds per step of the last augment phase
PHASE_CKPT_KEY = 'tst_phase_checkpoint'  # path of the intra-phase checkpoint on disk


def format_eta(seconds: float) -> str:
    """``h:mm:ss``, as mmengine's log lines write an ETA."""
    return str(datetime.timedelta(seconds=int(seconds)))


def restart_iter_timers(runner, by: Optional[float] = None) -> None:
    """Restart ``IterTimerHook``'s clock now, or move it ``by`` seconds later: the time
    until then is not booked to the next student iteration."""
    for hook in runner.hooks:
        if isinstance(hook, IterTimerHook) and hasattr(hook, 't'):
            hook.t = time.time() if by is None else hook.t + by


def student_step_time(runner) -> Optional[float]:
    """The student's mean iteration time so far (``IterTimerHook``'s ``train/time``)."""
    times = runner.message_hub.log_scalars.get('train/time')
    return float(times.mean()) if times is not None and len(times.data[0]) else None


def augment_step_time(runner) -> Tuple[Optional[float], str]:
    """Expected seconds per augmenter step, and where the figure comes from."""
    measured = runner.message_hub.get_info(STEP_TIME_KEY)
    if measured is not None:
        return measured, 'as in the last phase'
    return student_step_time(runner), "the student's step time"


def augment_steps_ahead(loop, runner) -> Tuple[int, int]:
    """Augmenter steps still to come after the current student iteration: in augment
    phases, and interleaved (``augment_interval``)."""
    if hasattr(loop, 'augment_epochs'):
        phases = sum(1 for p in loop.augment_epochs if p > runner.epoch)
        phase_steps = phases * loop.augment_passes * len(loop.dataloader)
    else:
        phases = sum(1 for p in loop.augment_iters if p > runner.iter)
        phase_steps = phases * loop.augment_steps
    k = loop.augment_interval
    # iterations i in (runner.iter, max_iters) with i % k == 0
    interleaved = (runner.max_iters - 1) // k - runner.iter // k if k else 0
    return phase_steps, interleaved


class AugmentProgressHook(Hook):
    """Adds the augmenter steps to come to the student's ETA, and removes the
    intra-phase checkpoint once a newer checkpoint is saved. Registered by the TST loops.

    Args:
        loop: The TST train loop (its phase schedule gives the steps to come).
    """

    # After IterTimerHook (NORMAL, 50) computes the ETA, before LoggerHook
    # (BELOW_NORMAL, 60) logs it.
    priority = 55

    def __init__(self, loop) -> None:
        self.loop = loop
        self.interval_time = 0.0  # interleaved augmenter steps: total seconds, count
        self.interval_steps = 0

    def add_interval_step(self, seconds: float) -> None:
        self.interval_time += seconds
        self.interval_steps += 1

    def expected_augment_time(self, runner) -> float:
        """Seconds the augmenter steps after the current iteration should take."""
        phase_steps, interleaved = augment_steps_ahead(self.loop, runner)
        step, _ = augment_step_time(runner)
        if step is None:
            return 0.0
        interval_step = self.interval_time / self.interval_steps \
            if self.interval_steps else step
        return phase_steps * step + interleaved * interval_step

    def after_train_iter(self, runner, batch_idx: int, data_batch=None,
                         outputs=None) -> None:
        hub = runner.message_hub
        # IterTimerHook sets the ETA after every iteration; without it there is none.
        if 'eta' in hub.runtime_info and any(isinstance(h, IterTimerHook)
                                             for h in runner.hooks):
            hub.update_info('eta', hub.get_info('eta') + self.expected_augment_time(runner))
        remove_superseded_phase_checkpoint(runner)

    def after_train(self, runner) -> None:
        remove_superseded_phase_checkpoint(runner)


def checkpoint_target(runner) -> Tuple[str, object, dict]:
    """Where ``CheckpointHook`` saves (its ``out_dir``, else the work dir), the file
    backend there, and its storage arguments for ``Runner.save_checkpoint``."""
    for hook in runner.hooks:
        if isinstance(hook, CheckpointHook) and hasattr(hook, 'file_backend'):
            return hook.out_dir, hook.file_backend, dict(
                file_client_args=hook.file_client_args, backend_args=hook.backend_args)
    return runner.work_dir, get_file_backend(runner.work_dir), {}


def phase_checkpoint_name(phase: str, step: int) -> str:
    """``'epoch_6'`` (0-based, as ``PROGRESS_KEY`` records a phase), step 500 ->
    ``'augment_before_epoch_7_step_500.pth'``: 1-based, as the log names the phase."""
    kind, index = phase.rsplit('_', 1)
    return f'augment_before_{kind}_{int(index) + 1}_step_{step}.pth'


def remove_phase_checkpoint(runner, path: Optional[str]) -> None:
    """Remove an intra-phase checkpoint of this run (one a resumed run was started
    from elsewhere stays: it belongs to another run)."""
    if not path or not is_main_process():
        return
    out_dir, backend, _ = checkpoint_target(runner)
    here = osp.dirname(backend.join_path(out_dir, 'x'))
    if osp.dirname(path) == here and backend.isfile(path):
        backend.remove(path)


def remove_superseded_phase_checkpoint(runner) -> None:
    """Remove the intra-phase checkpoint once the newest checkpoint is another."""
    hub = runner.message_hub
    path = hub.get_info(PHASE_CKPT_KEY)
    if path and hub.get_info('last_ckpt') != path:
        hub.update_info(PHASE_CKPT_KEY, None)
        remove_phase_checkpoint(runner, path)
