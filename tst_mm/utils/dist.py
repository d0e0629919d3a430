"""Distributed runs on machines without CUDA (CI, laptops): gloo instead of nccl.

mmengine's ``launcher='pytorch'`` calls ``torch.cuda.set_device`` unconditionally and its
Runner wraps the model with ``device_ids=[LOCAL_RANK]``, which DDP rejects for CPU
modules. Initialising the gloo group before the Runner is built makes the Runner skip its
own ``init_dist``, and ``device_ids=None`` is what DDP expects on CPU. SyncBatchNorm (in
every mmseg Cityscapes config) only works on CUDA, and mmengine reverts it to BatchNorm
only in non-distributed runs: the CPU DDP wrappers revert it themselves. On CUDA machines
nothing here applies and mmengine does its usual job.
"""
import logging
import os

import torch
import torch.distributed as dist
import torch.nn as nn
from mmengine.config import Config
from mmengine.logging import print_log
from mmengine.model import revert_sync_batchnorm


def init_cpu_distributed(cfg: Config, launcher: str) -> bool:
    """Set up a gloo process group and a CPU-friendly DDP wrapper config.

    Args:
        cfg (Config): The full config; ``model_wrapper_cfg`` gets ``device_ids=None``.
        launcher (str): The ``--launcher`` value ('none', 'pytorch', 'slurm', 'mpi').

    Returns:
        bool: True if this function initialised the process group.
    """
    if launcher == 'none' or torch.cuda.is_available() or dist.is_initialized():
        return False
    if launcher != 'pytorch':
        raise RuntimeError(
            f"launcher='{launcher}' needs CUDA on this machine; without a GPU use "
            "tools/dist_train.sh (torchrun, launcher='pytorch'), which runs on gloo.")
    for key in ('RANK', 'WORLD_SIZE', 'MASTER_ADDR', 'MASTER_PORT'):
        if key not in os.environ:
            raise RuntimeError(f'{key} is not set: start distributed runs with torchrun '
                               '(tools/dist_train.sh), which sets it.')
    dist.init_process_group(backend='gloo')
    # The Runner's own default wrapper, spelled out so that device_ids can be set, as its
    # CPU variant (which turns SyncBatchNorm into BatchNorm first).
    wrapper_cfg = cfg.get('model_wrapper_cfg') or dict(
        broadcast_buffers=False,
        find_unused_parameters=cfg.get('find_unused_parameters', False))
    if wrapper_cfg.get('type', 'MMDistributedDataParallel') == 'MMDistributedDataParallel':
        wrapper_cfg['type'] = 'CPUDistributedDataParallel'
    wrapper_cfg['device_ids'] = None
    cfg.model_wrapper_cfg = wrapper_cfg
    cfg.setdefault('env_cfg', {}).setdefault('dist_cfg', {})['backend'] = 'gloo'
    return True


def revert_sync_bn_on_cpu(module: nn.Module) -> nn.Module:
    """Turn SyncBatchNorm into BatchNorm in a model on the CPU (DDP refuses it there).

    Logs one line when it does: each process then normalises with its own batch's
    statistics. A model on CUDA is returned as it is.
    """
    tensors = [*module.parameters(), *module.buffers()]
    num_sync = sum(isinstance(m, nn.SyncBatchNorm) or type(m).__name__ == 'SyncBatchNorm'
                   for m in module.modules())  # torch's or mmcv's
    if num_sync == 0 or any(t.is_cuda for t in tensors):
        return module
    print_log(f'SyncBatchNorm needs CUDA: this CPU distributed run uses BatchNorm for its '
              f'{num_sync} SyncBatchNorm layers, so BN statistics are per process (each '
              "rank normalises with its own batch's)", logger='current',
              level=logging.WARNING)
    return revert_sync_batchnorm(module)


def shutdown_distributed() -> None:
    """Wait for every rank, then destroy the process group (if there is one).

    Without it each rank tears its group down at interpreter exit on its own: a rank
    that exits first can abort its peer's gloo threads mid-teardown ("terminate called
    without an active exception", SIGABRT after a finished run; seen once on a loaded
    2-core machine), and torch warns about groups left undestroyed.
    """
    if dist.is_available() and dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()
