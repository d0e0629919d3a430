"""Distributed data parallel for ``TSTDistiller``.

mmengine's ``MMDistributedDataParallel.train_step`` runs its own forward/backward and
never calls the wrapped model's ``train_step``, so an alternating TST step cannot run
under it. This wrapper keeps the distiller's own steps and parallelises the parts:

- the student is wrapped in DDP, so its gradients are all-reduced, overlapped with the
  backward pass, as in any mmdet/mmseg run;
- the augmenter and the distillation adapters are tiny: the distiller all-reduces their
  gradients itself (see ``TSTDistiller``), so they stay identical on every rank;
- the teacher has no trainable parameters and is not wrapped.
"""
from typing import Optional, Sequence

import torch
import torch.distributed as dist
import torch.nn as nn
from mmengine.model import MMDistributedDataParallel
from mmengine.registry import MODEL_WRAPPERS

from ..utils import revert_sync_bn_on_cpu


@MODEL_WRAPPERS.register_module()
class TSTDistributedDataParallel(nn.Module):
    """Wraps a ``TSTDistiller`` for multi-process training.

    Use it with ``model_wrapper_cfg = dict(type='TSTDistributedDataParallel')`` (the
    shipped TST configs set this).

    Args:
        module (nn.Module): The ``TSTDistiller``.
        device_ids (Sequence[int], optional): Passed to the student's DDP. Defaults to
            the current CUDA device, or None (CPU / gloo) without CUDA.
        **ddp_kwargs: Further ``DistributedDataParallel`` arguments for the student,
            e.g. ``find_unused_parameters=True``.
    """

    def __init__(self, module: nn.Module, device_ids: Optional[Sequence[int]] = None,
                 **ddp_kwargs):
        super().__init__()
        self.module = module
        if device_ids is None and torch.cuda.is_available():
            device_ids = [torch.cuda.current_device()]
        # The teacher stays in eval mode, where SyncBatchNorm syncs nothing and runs
        # on the CPU too; the student's must become BatchNorm there.
        module.student = MMDistributedDataParallel(
            module=revert_sync_bn_on_cpu(module.student), device_ids=device_ids,
            **ddp_kwargs)
        module.student._register_load_state_dict_pre_hook(_into_wrapper)
        # Start every rank from rank 0's augmenter and adapters (the student's DDP
        # does the same for the student).
        for tensor in [*module.augmenter.state_dict().values(),
                       *module.distill_losses.state_dict().values()]:
            dist.broadcast(tensor, src=0)

    def train_step(self, data, optim_wrapper):
        """The student step of the wrapped distiller."""
        return self.module.train_step(data, optim_wrapper)

    def augment_step(self, data, optim_wrapper):
        """The augmenter step of the wrapped distiller."""
        return self.module.augment_step(data, optim_wrapper)

    def val_step(self, data):
        return self.module.val_step(data)

    def test_step(self, data):
        return self.module.test_step(data)


@MODEL_WRAPPERS.register_module()
class CPUDistributedDataParallel(MMDistributedDataParallel):
    """mmengine's default DDP wrapper for CPU (gloo) runs: SyncBatchNorm, which DDP
    accepts on CUDA only, becomes BatchNorm first. ``tools/train.py`` and
    ``tools/test.py`` use it in place of ``MMDistributedDataParallel`` without CUDA."""

    def __init__(self, module: nn.Module, **kwargs):
        super().__init__(module=revert_sync_bn_on_cpu(module), **kwargs)


def _into_wrapper(state_dict, prefix, *args) -> None:
    """Checkpoints keep the student's keys bare (``student.backbone...``).

    torch's ``load_state_dict`` walks into the DDP wrapper and needs them under its
    ``module.``; mmengine's loader (``--resume``, ``load_from``) skips wrappers, never
    calls this hook, and finds the bare keys where it looks for them.
    """
    inner = f'{prefix}module.'
    for key in [k for k in state_dict if k.startswith(prefix) and not k.startswith(inner)]:
        state_dict[inner + key[len(prefix):]] = state_dict.pop(key)
