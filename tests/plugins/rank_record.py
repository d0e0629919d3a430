"""A test-only hook: each rank writes its own losses and final weights, so tests can
compare every rank of a resumed run with the uninterrupted one, bit for bit."""
import json
import os.path as osp

import torch
from mmengine.dist import get_rank
from mmengine.hooks import Hook
from mmengine.model import is_model_wrapper
from mmengine.registry import HOOKS


@HOOKS.register_module()
class RankRecordHook(Hook):
    """After training, writes ``losses_rank<R>.json`` (1-based iteration -> this
    rank's logged values, as the exact floats' hex) and ``final_rank<R>.pth`` (the
    model's state dict)."""

    def __init__(self) -> None:
        self.losses = {}

    def after_train_iter(self, runner, batch_idx, data_batch=None,
                         outputs=None):
        self.losses[runner.iter + 1] = {k: float(v).hex() for k, v in outputs.items()}

    def after_train(self, runner):
        model = runner.model.module if is_model_wrapper(runner.model) else runner.model
        with open(osp.join(runner.work_dir, f'losses_rank{get_rank()}.json'), 'w') as f:
            json.dump(self.losses, f)
        torch.save(model.state_dict(),
                   osp.join(runner.work_dir, f'final_rank{get_rank()}.pth'))
