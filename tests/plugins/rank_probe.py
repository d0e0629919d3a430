"""A test-only hook: each rank writes what it trained, so tests can check DDP runs."""
import json
import os.path as osp

import torch
from mmengine.dist import get_rank, get_world_size
from mmengine.hooks import Hook
from mmengine.model import is_model_wrapper
from mmengine.registry import HOOKS


@HOOKS.register_module()
class RankProbeHook(Hook):
    """After training, writes ``rank<R>.json`` with the iterations this rank ran and a
    checksum of its trainable parameters (equal on every rank when DDP works)."""

    def __init__(self) -> None:
        self.iters = 0

    def after_train_iter(self, runner, batch_idx, data_batch=None, outputs=None):
        self.iters += 1

    def after_train(self, runner):
        model = runner.model.module if is_model_wrapper(runner.model) else runner.model
        with torch.no_grad():
            checksum = sum(float(p.double().abs().sum()) for p in model.parameters()
                           if p.requires_grad)
        with open(osp.join(runner.work_dir, f'rank{get_rank()}.json'), 'w') as f:
            json.dump(dict(rank=get_rank(), world_size=get_world_size(),
                           iters=self.iters, checksum=checksum), f)
