"""Evaluate a checkpoint of an mmdet or mmseg model (or a TST student) on the test set.

    python tools/test.py CONFIG CHECKPOINT [--work-dir DIR] [--out OUT] [--show-dir DIR]
                         [--tta] [--cfg-options k=v ...] [--launcher pytorch]

``--out``, ``--show-dir`` and ``--tta`` mean what they mean in mmdet's or mmseg's own
tools/test.py, chosen by the config's ``default_scope``.
"""
import argparse
import os
import os.path as osp
import re

from mmengine.config import Config, ConfigDict, DictAction
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
    parser.add_argument(
        '--out', help='mmdet: dump the predictions to this .pkl file; mmseg: write each '
        'prediction to this directory as a PNG of label ids')
    parser.add_argument(
        '--show-dir', help='draw the predictions with the config\'s visualization hook '
        'into this directory (mmdet: under WORK_DIR/TIMESTAMP/; mmseg: its '
        'vis_data/vis_image/, every `interval`-th batch)')
    parser.add_argument(
        '--tta', action='store_true',
        help="test-time augmentation with the config's tta_model and tta_pipeline")
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


def codebase_of(cfg: Config, config_path: str) -> str:
    """'mmdet' or 'mmseg': whose --out / --show-dir / --tta to follow."""
    scope = cfg.get('default_scope')
    if scope not in ('mmdet', 'mmseg'):
        raise SystemExit(
            f"--out, --show-dir and --tta follow mmdet's or mmseg's tools/test.py, chosen "
            f"by the config's default_scope, but {config_path} has default_scope="
            f"{scope!r}: set default_scope = 'mmdet' or 'mmseg' in it")
    return scope


def show_in(cfg: Config, show_dir: str, codebase: str) -> None:
    """--show-dir, as mmdet's (``trigger_visualization_hook``) and mmseg's test.py."""
    hook = cfg.get('default_hooks', {}).get('visualization')
    if hook is None:
        kind = 'DetVisualizationHook' if codebase == 'mmdet' else 'SegVisualizationHook'
        raise SystemExit(
            "--show-dir draws with the config's visualization hook, and it has none: add "
            f"default_hooks = dict(visualization=dict(type='{kind}'))")
    hook['draw'] = True
    if codebase == 'mmdet':
        hook['test_out_dir'] = show_dir
    else:
        cfg.visualizer['save_dir'] = show_dir


def use_tta(cfg: Config, config_path: str, codebase: str) -> None:
    """--tta: wrap the model in the config's ``tta_model``, test on its ``tta_pipeline``."""
    missing = [key for key in ('tta_model', 'tta_pipeline') if cfg.get(key) is None]
    if missing:
        where = ("mmdet's configs get both from a file per model family, e.g. add "
                 "'mmdet::retinanet/retinanet_tta.py' to _base_" if codebase == 'mmdet' else
                 "mmseg's configs get tta_model from _base_/default_runtime.py and "
                 'tta_pipeline from their dataset config (_base_/datasets/*.py)')
        raise SystemExit(f'--tta needs {" and ".join(missing)} in {config_path}: {where}')
    cfg.model = ConfigDict(**cfg.tta_model, module=cfg.model)
    cfg.test_dataloader.dataset.pipeline = cfg.tta_pipeline


def dump_to(cfg: Config, out: str, codebase: str) -> None:
    """--out: mmdet's pickle of predictions, or mmseg's directory of label-id PNGs."""
    evaluators = cfg.test_evaluator
    if not isinstance(evaluators, (list, tuple)):
        evaluators = [evaluators]
    if codebase == 'mmdet':
        if not out.endswith(('.pkl', '.pickle')):
            raise SystemExit(f'--out must be a .pkl or .pickle file for an mmdet model, '
                             f'got {out!r}')
        cfg.test_evaluator = [*evaluators, dict(type='DumpDetResults', out_file_path=out)]
    else:
        for evaluator in evaluators:  # mmseg's metrics write what they predict there
            evaluator.update(output_dir=out, keep_results=True)


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
    if args.out or args.show_dir or args.tta:
        codebase = codebase_of(cfg, args.config)
        if args.show_dir:
            show_in(cfg, args.show_dir, codebase)
        if args.tta:
            use_tta(cfg, args.config, codebase)
        if args.out:
            dump_to(cfg, args.out, codebase)
    init_cpu_distributed(cfg, args.launcher)
    runner = (RUNNERS.build(cfg) if 'runner_type' in cfg else Runner.from_cfg(cfg))
    check_checkpoint_fits(runner.model, args.checkpoint, args.config)
    runner.test()
    shutdown_distributed()


if __name__ == '__main__':
    main()
