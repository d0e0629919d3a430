"""A test-only hook: which images each student step loaded, and the student it started
from, so tests can check that every arm of a study sees the same data."""
import json
import os.path as osp

from mmengine.hooks import Hook
from mmengine.model import is_model_wrapper
from mmengine.registry import HOOKS


def _student(runner):
    model = runner.model.module if is_model_wrapper(runner.model) else runner.model
    return getattr(model, 'student', model)


@HOOKS.register_module()
class BatchRecordHook(Hook):
    """Writes ``batches.json``: the initial student weights' checksum and, per student
    step, the loaded images' paths."""

    priority = 'VERY_HIGH'

    def __init__(self) -> None:
        self.batches = []
        self.initial = None

    def before_train(self, runner):
        params = _student(runner).state_dict().values()
        self.initial = float(sum(p.double().abs().sum() for p in params))

    def before_train_iter(self, runner, batch_idx, data_batch=None):
        self.batches.append([s.img_path for s in data_batch['data_samples']])
        self.batches[-1].append(sum(float(x.double().sum()) for x in data_batch['inputs']))

    def after_train(self, runner):
        with open(osp.join(runner.work_dir, 'batches.json'), 'w') as f:
            json.dump(dict(initial=self.initial, batches=self.batches), f)
