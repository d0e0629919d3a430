from .amp import enable_amp
from .checkpoint import allow_mmengine_checkpoints
from .dist import init_cpu_distributed, revert_sync_bn_on_cpu, shutdown_distributed

__all__ = ['allow_mmengine_checkpoints', 'enable_amp', 'init_cpu_distributed',
           'revert_sync_bn_on_cpu', 'shutdown_distributed']
