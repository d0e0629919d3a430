"""Evaluate a checkpoint of an mmdet or mmseg model (or a TST student) on the test set.

    python tools/test.py CONFIG CHECKPOINT [--work-dir DIR] [--out results.pkl]
                         [--cfg-options k=v ...] [--launcher pytorch]
"""
import argparse
import os
import os.path as osp
import re

from mmengine.config import Config, DictAction
from mmengine.model import BaseTTAModel, is_model_wrapper
from mmengine.registry import RUNNERS
from mmengine.runner import CheckpointLoader, Runner

import tst_mm  # noqa: F401  (registers components, allow-lists checkpoint classes)
from tst_mm.distill import TSTDistiller
from tst_mm.utils import init_cpu_distributed, shutdown_distributed

TST_PREFIX = 'student.'


def parse_args():
    parser = argparse.ArgumentParser(description='Test (and evaluate) a model')
    parser.add_argument('config', help='test config file path')
    parser.add_argument('checkpoint', help='checkpoint file')
    parser.add_argument('--work-dir', help='the dir to save the evaluation logs')
    parser.add_argument('--out', help='dump the raw predictions to this pickle file')
    parser.add_argument(
        '--cfg-options', nargs='+', action=DictAction,
        help='override config settings, e.g. test_dataloader.batch_size=1')
    parser.add_argument('--launcher', choices=['none', 'pytorch', 'slurm', 'mpi'],
                        default='none', help='job launcher')
    parser.add_argument('--local_rank', '--local-rank', type=int, default=0)
    args = parser.parse_args()
    if 'LOCAL_RANK' not in os.environ:
        os.environ['LOCAL_RANK'] = str(args.local_rank)
    return args


def check_checkpoint_fits(model, checkpoint_path: str, config_path: str) -> None:
    """Refuse a checkpoint that would leave the model (mostly) random.

    mmengine loads what matches, logs "do not match exactly" and tests whatever is left:
    a TST checkpoint with the student's plain config (or the reverse) scores a random
    model and exits 0.

    Raises:
        SystemExit: naming the mismatch and the command that fixes it.
    """
    while is_model_wrapper(model) or isinstance(model, BaseTTAModel):
        model = model.module
    checkpoint = CheckpointLoader.load_checkpoint(checkpoint_path, map_location='cpu')
    state = checkpoint.get('state_dict', checkpoint)
    # mmengine's loader strips a leading `module.` (DDP) before matching; so do we.
    found = {re.sub(r'^module\.', '', key): value for key, value in state.items()}
    expected = model.state_dict()
    is_tst_model = isinstance(model, TSTDistiller)
    has_student = any(key.startswith(TST_PREFIX) for key in found)
    if not is_tst_model and has_student and \
            not any(key.startswith(TST_PREFIX) for key in expected):
        raise SystemExit(
            f'{checkpoint_path} is a TST checkpoint (the student\'s weights under '
            f"'{TST_PREFIX}', plus the augmenter), but {config_path} builds a plain "
            f'{type(model).__name__}: it would be tested with random weights. Either '
            'extract the student and test it with this config:\n'
            f'    python tools/extract_student.py {checkpoint_path} student.pth\n'
            f'    python tools/test.py {config_path} student.pth\n'
            f'or test {checkpoint_path} with the TST config that trained it.')
    if is_tst_model and not has_student:
        raise SystemExit(
            f"{checkpoint_path} is a plain model checkpoint (no '{TST_PREFIX}' weights), "
            f'but {config_path} is a TST config (TSTDistiller): its student would be '
            "tested with random weights. Test the checkpoint with the student's own "
            'config (the model the TST config wraps as `student`):\n'
            f'    python tools/test.py STUDENT_CONFIG {checkpoint_path}\n'
            'or test this config with the TST checkpoint it trained.')
    # mmengine also skips (and logs) weights of another shape.
    missing = [key for key, value in expected.items()
               if getattr(found.get(key), 'shape', None) != value.shape]
    if expected and len(missing) > len(expected) / 2:
        raise SystemExit(
            f'{checkpoint_path} does not fit {config_path}: {len(missing)} of the '
            f"model's {len(expected)} weight tensors are missing from the checkpoint or "
            f'of another shape (e.g. {", ".join(missing[:5])}), so it would be tested '
            'with mostly random weights. Test the checkpoint with the config that '
            'trained it (or one with the same model).')


def main():
    args = parse_args()
    cfg = Config.fromfile(args.config)
    cfg.launcher = args.launcher
    if args.cfg_options is not None:
        cfg.merge_from_dict(args.cfg_options)
    if args.work_dir is not None:
        cfg.work_dir = args.work_dir
    elif cfg.get('work_dir') is None:
        cfg.work_dir = osp.join('./work_dirs', osp.splitext(osp.basename(args.config))[0])
    cfg.load_from = args.checkpoint
    if args.out is not None:
        if not args.out.endswith(('.pkl', '.pickle')):
            raise ValueError(f'--out must be a .pkl or .pickle file, got {args.out!r}')
        evaluators = cfg.test_evaluator
        if not isinstance(evaluators, (list, tuple)):
            evaluators = [evaluators]
        cfg.test_evaluator = [*evaluators, dict(type='DumpResults', out_file_path=args.out)]
    init_cpu_distributed(cfg, args.launcher)
    runner = (RUNNERS.build(cfg) if 'runner_type' in cfg else Runner.from_cfg(cfg))
    check_checkpoint_fits(runner.model, args.checkpoint, args.config)
    runner.test()
    shutdown_distributed()


if __name__ == '__main__':
    main()
