"""A test-only hook that watches which parameters change in which TST phase."""
import json
import os.path as osp

import torch
from mmengine.dist import get_rank
from mmengine.hooks import Hook
from mmengine.model import is_model_wrapper
from mmengine.registry import HOOKS


def _flat(module) -> torch.Tensor:
    return torch.cat([p.detach().flatten().double().clone() for p in module.parameters()])


@HOOKS.register_module()
class TSTPhaseProbeHook(Hook):
    """Records student and augmenter parameters around every student iteration.

    An augment phase runs between ``after_train_iter`` of one iteration and
    ``before_train_iter`` of the next, so comparing the snapshots tells which phase
    changed what. Also records how many images the student's backbone took in each
    student step. Writes ``phases_rank<R>.json`` after training.
    """

    priority = 'VERY_HIGH'

    def __init__(self) -> None:
        self.records = []
        self.last = None
        self.student_batches = []
        self._batch = None

    def _modules(self, runner):
        model = runner.model.module if is_model_wrapper(runner.model) else runner.model
        student = model.student.module if is_model_wrapper(model.student) \
            else model.student
        return student, model.augmenter

    def _snapshot(self, runner):
        return tuple(_flat(module) for module in self._modules(runner))

    def _changed(self, before, after):
        return [bool((a != b).any()) for a, b in zip(before, after)]

    def before_train(self, runner):
        self.last = self._snapshot(runner)  # so the phase before the first step shows
        self._modules(runner)[0].backbone.register_forward_pre_hook(self._record_batch)

    def _record_batch(self, module, args):
        self._batch = args[0].shape[0]  # the last forward before after_train_iter wins

    def before_train_iter(self, runner, batch_idx, data_batch=None):
        now = self._snapshot(runner)
        # Between two student steps (or before the first): the augment phase.
        student, augmenter = self._changed(self.last, now)
        self.records.append(dict(iter=runner.iter, phase='between', student=student,
                                 augmenter=augmenter))
        self.last = now

    def after_train_iter(self, runner, batch_idx, data_batch=None, outputs=None):
        now = self._snapshot(runner)
        student, augmenter = self._changed(self.last, now)
        self.records.append(dict(iter=runner.iter, phase='student_step',
                                 student=student, augmenter=augmenter))
        self.student_batches.append(self._batch)
        self.last = now

    def after_train(self, runner):
        student, augmenter = self._snapshot(runner)
        with open(osp.join(runner.work_dir, f'phases_rank{get_rank()}.json'), 'w') as f:
            json.dump(dict(records=self.records, student_batches=self.student_batches,
                           augmenter=augmenter.tolist(),
                           student_checksum=float(student.abs().sum())), f)
