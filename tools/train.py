"""Train an mmdet or mmseg model (plain, or a TST distiller) from a config.

    python tools/train.py CONFIG [--work-dir DIR] [--amp] [--resume [CKPT]]
                          [--cfg-options k=v ...] [--launcher pytorch]

The codebase (mmdet / mmseg) is chosen by the config's ``default_scope``; tst_mm is
imported so its components and checkpoint fixes are available to any config.
"""
import argparse
import os
import os.path as osp

from mmengine.config import Config, DictAction
from mmengine.registry import RUNNERS
from mmengine.runner import Runner

import tst_mm  # noqa: F401  (registers components, allow-lists checkpoint classes)
from tst_mm.distill.teacher import resolve_teacher_path
from tst_mm.utils import enable_amp, init_cpu_distributed, shutdown_distributed


def parse_args():
    parser = argparse.ArgumentParser(description='Train a detector / segmentor')
    parser.add_argument('config', help='train config file path')
    parser.add_argument('--work-dir', help='the dir to save logs and models')
    parser.add_argument('--amp', action='store_true',
                        help='enable automatic mixed precision training')
    parser.add_argument('--auto-scale-lr', action='store_true',
                        help='scale the learning rate with the total batch size')
    parser.add_argument(
        '--resume', nargs='?', type=str, const='auto',
        help='resume from CKPT, or from the latest checkpoint in the work dir if '
        'no path is given')
    parser.add_argument(
        '--cfg-options', nargs='+', action=DictAction,
        help='override config settings, e.g. train_cfg.max_iters=100')
    parser.add_argument('--launcher', choices=['none', 'pytorch', 'slurm', 'mpi'],
                        default='none', help='job launcher')
    # torch.distributed.launch passes --local-rank (torch >= 2.0) or --local_rank.
    parser.add_argument('--local_rank', '--local-rank', type=int, default=0)
    args = parser.parse_args()
    if 'LOCAL_RANK' not in os.environ:
        os.environ['LOCAL_RANK'] = str(args.local_rank)
    return args


def build_config(args) -> Config:
    """Load the config and apply the command-line overrides, as mmdet's train.py does."""
    cfg = Config.fromfile(args.config)
    cfg.launcher = args.launcher
    if args.cfg_options is not None:
        cfg.merge_from_dict(args.cfg_options)
    resolve_teacher_path(cfg)  # relative to the config, as _base_ paths
    if args.work_dir is not None:
        cfg.work_dir = args.work_dir
    elif cfg.get('work_dir') is None:
        cfg.work_dir = osp.join('./work_dirs', osp.splitext(osp.basename(args.config))[0])
    if args.amp:
        enable_amp(cfg)
    if args.auto_scale_lr:
        if 'auto_scale_lr' not in cfg or 'base_batch_size' not in cfg.auto_scale_lr:
            raise RuntimeError('--auto-scale-lr needs `auto_scale_lr = dict('
                               'enable=..., base_batch_size=...)` in the config')
        cfg.auto_scale_lr.enable = True
    if args.resume == 'auto':
        cfg.resume, cfg.load_from = True, None
    elif args.resume is not None:
        cfg.resume, cfg.load_from = True, args.resume
    return cfg


def main():
    args = parse_args()
    cfg = build_config(args)
    init_cpu_distributed(cfg, args.launcher)
    runner = (RUNNERS.build(cfg) if 'runner_type' in cfg else Runner.from_cfg(cfg))
    runner.train()
    shutdown_distributed()


if __name__ == '__main__':
    main()
