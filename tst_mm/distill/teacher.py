"""The teacher: its config (a dict or a config file) and its weights, loaded strictly.

A checkpoint that does not fit the teacher must never load partially: the student would
then be distilled from a half-random teacher, and nothing in the training log says so.
"""
import copy
import difflib
import os
import os.path as osp
import re
from typing import Dict, List, Union

import torch.nn as nn
from mmengine.config import Config, ConfigDict
from mmengine.runner.checkpoint import CheckpointLoader
from torch import Tensor

SHOWN = 5  # keys quoted per kind of mismatch


def model_cfg(model: Union[dict, str]) -> ConfigDict:
    """A model config, or the ``model`` of a config file (``mmdet::...`` works too), as
    a ConfigDict: mmdet's detectors read nested settings as attributes
    (``train_cfg.rpn``), which plain dicts given through the Python API lack."""
    if isinstance(model, str):
        if '::' in model:
            from mmengine.hub import get_config
            _check_package_config(model)
            return copy.deepcopy(get_config(model).model)
        if not osp.isfile(model):
            raise FileNotFoundError(
                f'teacher config {model!r} does not exist (a relative path is read from '
                f'the current directory, {os.getcwd()}, unless tools/train.py resolves '
                "it from the config's directory, as _base_ paths are): give a path "
                "from here, an absolute one, or '{{fileDirname}}/<file>' in the config")
        return copy.deepcopy(Config.fromfile(model).model)
    return ConfigDict(copy.deepcopy(dict(model)))


def _check_package_config(path: str) -> None:
    """One line naming a ``package::`` teacher config that is not installed (mmengine
    would dump the keys of every config it knows instead)."""
    from mmengine.config.utils import _get_package_and_cfg_path
    from mmengine.utils import get_installed_path
    package, relative = _get_package_and_cfg_path(path)
    root = osp.join(get_installed_path(package), '.mim', 'configs')
    if osp.isfile(osp.join(root, relative)):
        return
    folder = osp.join(root, osp.dirname(relative))
    names = sorted(os.listdir(folder)) if osp.isdir(folder) else \
        sorted(os.listdir(root)) if osp.isdir(root) else []
    close = difflib.get_close_matches(osp.basename(relative) if osp.isdir(folder)
                                      else relative.split('/')[0], names, n=3, cutoff=0.5)
    hint = f'; did you mean {" or ".join(repr(c) for c in close)}?' if close else ''
    raise FileNotFoundError(f'teacher config {path!r}: the installed {package} has no '
                            f'{osp.join(root, relative)}{hint}')


def resolve_teacher_path(cfg: Config) -> None:
    """A relative teacher config path in ``cfg`` (a config loaded from a file) made
    absolute from the config's directory, as mmengine resolves ``_base_`` paths; one
    that only exists from the current directory is kept."""
    model = cfg.get('model') or {}
    teacher = model.get('teacher') if isinstance(model, dict) else None
    if not isinstance(teacher, str) or '::' in teacher or osp.isabs(teacher) or \
            not cfg.filename:
        return
    beside = osp.join(osp.dirname(osp.abspath(cfg.filename)), teacher)
    if osp.isfile(beside):
        model['teacher'] = osp.normpath(beside)


def _harmless(key: str) -> bool:
    # BatchNorm step counters (absent from old checkpoints) and preprocessor buffers
    # (the teacher's preprocessing comes from its config) do not change what it computes.
    return key.endswith('num_batches_tracked') or key.startswith('data_preprocessor.')


def _quote(keys: List[str]) -> str:
    more = f', ... ({len(keys) - SHOWN} more)' if len(keys) > SHOWN else ''
    return ', '.join(keys[:SHOWN]) + more


def check_fits(teacher: nn.Module, state: Dict[str, Tensor], checkpoint: str) -> None:
    """Raises if ``state`` is not a complete set of weights of ``teacher``.

    Args:
        teacher (nn.Module): The built teacher.
        state (dict): The checkpoint's state dict, ``module.`` prefixes removed.
        checkpoint (str): The checkpoint's name, for the message.
    """
    own = teacher.state_dict()
    missing = [k for k in own if k not in state and not _harmless(k)]
    unexpected = [k for k in state if k not in own and not _harmless(k)]
    shapes = [f'{k} {tuple(state[k].shape)} vs {tuple(v.shape)}' for k, v in own.items()
              if k in state and hasattr(state[k], 'shape') and state[k].shape != v.shape]
    if not (missing or unexpected or shapes):
        return
    problems = [f'{len(keys)} {what}: {_quote(keys)}' for what, keys in (
        ('teacher keys missing from the checkpoint', missing),
        ('checkpoint keys the teacher does not have', unexpected),
        ('shape mismatches (checkpoint vs teacher)', shapes)) if keys]
    hint = ''
    if any(k.startswith('student.') for k in unexpected):
        hint = (' It looks like a TSTDistiller checkpoint: extract its student with '
                '`python tools/extract_student.py CKPT OUT` and use OUT.')
    raise ValueError(
        f'teacher_ckpt {checkpoint!r} does not fit the teacher '
        f'({type(teacher).__name__}): ' + '; '.join(problems) + '. Give `teacher` the '
        'config this checkpoint was trained with (depth, widths, num_classes), or the '
        f'checkpoint of this teacher.{hint}')


def load_teacher(teacher: nn.Module, checkpoint: str) -> None:
    """Loads ``checkpoint`` (a local path or URL) into ``teacher``, strictly.

    Only BatchNorm step counters and data-preprocessor buffers may be missing or extra;
    any other missing or unexpected key, or a shape mismatch, is an error that names the
    first few keys.

    Args:
        teacher (nn.Module): The built teacher.
        checkpoint (str): Local path or URL (anything mmengine's ``CheckpointLoader``
            reads).
    """
    if '://' not in checkpoint and not osp.isfile(checkpoint):
        raise FileNotFoundError(
            f'teacher_ckpt {checkpoint!r} does not exist; give the path (or URL) '
            "of the trained teacher's checkpoint")
    try:
        loaded = CheckpointLoader.load_checkpoint(checkpoint, map_location='cpu',
                                                  logger='current')
    except OSError as err:  # URLError, HTTPError and file errors
        raise RuntimeError(f'could not load teacher_ckpt {checkpoint!r}: {err}. '
                           'Download it and give a local path.') from err
    state = loaded.get('state_dict', loaded) if isinstance(loaded, dict) else loaded
    state = {re.sub(r'^module\.', '', k): v for k, v in state.items()}
    check_fits(teacher, state, checkpoint)
    teacher.load_state_dict({k: v for k, v in state.items() if not _harmless(k)},
                            strict=False)
