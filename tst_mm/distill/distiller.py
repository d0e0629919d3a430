"""TSTDistiller: a student, a frozen teacher and a learned augmenter in one model."""
import copy
import os.path as osp
from contextlib import nullcontext
from typing import Dict, List, Optional, Sequence, Tuple, Union

import torch
import torch.distributed as dist
import torch.nn as nn
from mmengine.config import Config
from mmengine.logging import print_log
from mmengine.model import BaseModel, is_model_wrapper
from mmengine.optim import OptimWrapper, OptimWrapperDict
from mmengine.registry import MODELS
from mmengine.runner import load_checkpoint
from torch import Tensor

from .freeze import frozen
from .inverse_losses import find_task_losses, inversion_of, inverted_task_losses
from .normalize import InputNormalizer
from .recorders import ModuleOutputRecorder

VIEWS = ('aug', 'clean')


def _unwrap(module: nn.Module) -> nn.Module:
    return module.module if is_model_wrapper(module) else module


def _add_prefix(losses: dict, prefix: str) -> dict:
    return {f'{prefix}.{key}': value for key, value in losses.items()}


def _model_cfg(model: Union[dict, str]) -> dict:
    """A model dict, or the ``model`` of a config file (``mmdet::...`` works too)."""
    if isinstance(model, str):
        if '::' in model:
            from mmengine.hub import get_config
            return copy.deepcopy(get_config(model).model)
        if not osp.isfile(model):
            raise FileNotFoundError(f'teacher config {model!r} does not exist')
        return copy.deepcopy(Config.fromfile(model).model)
    return copy.deepcopy(dict(model))


def _average_gradients(modules: Sequence[nn.Module]) -> None:
    """All-reduce (mean) the gradients of small modules that DDP does not wrap.

    Every parameter takes part, with a zero gradient where it got none on this rank
    (an op not drawn here), so all ranks reduce the same buffer and end up identical.
    """
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return
    params = [p for m in modules for p in m.parameters() if p.requires_grad]
    if not params:
        return
    grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in params]
    flat = torch.cat([g.flatten() for g in grads])
    dist.all_reduce(flat)
    flat /= dist.get_world_size()
    for p, g in zip(params, flat.split([p.numel() for p in params])):
        p.grad = g.view_as(p).clone()


@MODELS.register_module()
class TSTDistiller(BaseModel):
    """TST: distillation with a learned, differentiable data augmenter.

    A batch is padded and stacked in pixel space, augmented, then normalised separately
    for the teacher and the student. Two steps alternate (the train loop decides when):
    :meth:`train_step` updates the student, :meth:`augment_step` the augmenter.
    Validation and testing evaluate the student.

    Args:
        student (dict): An mmdet / mmseg model config.
        teacher (dict | str): A model config, or a config file whose ``model`` is used
            (``'mmdet::retinanet/retinanet_r101_fpn_2x_coco.py'`` works).
        teacher_ckpt (str, optional): Local path or URL of the teacher's weights, loaded
            at construction. None keeps the teacher's own initialisation (tests only;
            a warning says so). Defaults to None.
        augmenter (dict): The augmenter config. Defaults to ``TSTAugmenter()``.
        distill_losses (dict): ``name -> dict(type=<loss>, student=<module path>,
            teacher=<module path>, **loss_args)``; names must contain ``'loss'``.
            Defaults to none.
        student_views (Sequence[str]): What the student learns from in its step:
            ``('aug', 'clean')`` (the reference's ``[x_aug ; x]``) or ``('aug',)``.
            Defaults to ``('aug', 'clean')``.
        augment_loss_weights (dict): Weights of the augmenter objective,
            ``teacher`` (teacher task loss), ``student_inverse`` (student inverse task
            loss) and ``divergence`` (minus the distillation losses, maximising the
            teacher-student gap). Defaults to ``dict(teacher=1, student_inverse=1,
            divergence=0)``.
        data_preprocessor (dict, optional): Pads and stacks (e.g. mmseg's
            ``SegDataPreProcessor``: pad to the crop size, labels with 255); its
            normalisation and channel order are replaced by pixel-space RGB. mmengine's
            Runner passes a config's top-level ``data_preprocessor`` here. Defaults to
            the student's own preprocessor.
        init_cfg (dict, optional): Defaults to None.
    """

    def __init__(self,
                 student: dict,
                 teacher: Union[dict, str],
                 teacher_ckpt: Optional[str] = None,
                 augmenter: dict = dict(type='TSTAugmenter'),
                 distill_losses: Optional[Dict[str, dict]] = None,
                 student_views: Sequence[str] = VIEWS,
                 augment_loss_weights: Optional[Dict[str, float]] = None,
                 data_preprocessor: Optional[dict] = None,
                 init_cfg: Optional[dict] = None) -> None:
        student_cfg, teacher_cfg = _model_cfg(student), _model_cfg(teacher)
        data_preprocessor = dict(data_preprocessor or student_cfg.get('data_preprocessor')
                                 or {})
        # Always pixel space, RGB: the Runner also fills this argument in from a
        # config's top-level `data_preprocessor` (every mmseg config has one), which
        # normalises for the student.
        data_preprocessor.update(mean=None, std=None, bgr_to_rgb=True, rgb_to_bgr=False)
        super().__init__(data_preprocessor=data_preprocessor, init_cfg=init_cfg)
        self.student = MODELS.build(student_cfg)
        self.teacher = MODELS.build(teacher_cfg)
        self.augmenter = MODELS.build(augmenter)
        self.student_normalizer = InputNormalizer(student_cfg.get('data_preprocessor'))
        self.teacher_normalizer = InputNormalizer(teacher_cfg.get('data_preprocessor'))
        _check_num_classes(self.student, self.teacher)

        bad_views = [v for v in student_views if v not in VIEWS]
        if not student_views or bad_views or 'aug' not in student_views:
            raise ValueError(f"student_views must be ('aug', 'clean') or ('aug',), got "
                             f'{tuple(student_views)}')
        self.student_views = tuple(student_views)
        weights = dict(teacher=1.0, student_inverse=1.0, divergence=0.0)
        unknown = set(augment_loss_weights or {}) - set(weights)
        if unknown:
            raise ValueError(f'unknown augment_loss_weights keys {sorted(unknown)}; '
                             f'valid: {sorted(weights)}')
        weights.update(augment_loss_weights or {})
        self.augment_loss_weights = weights
        if weights['student_inverse']:
            # Fail at build time, not at the first augment phase hours later.
            for _, _, task_loss in find_task_losses(self.student):
                inversion_of(task_loss)

        self.distill_losses = nn.ModuleDict()
        self.loss_paths: Dict[str, Tuple[str, str]] = {}
        for name, cfg in (distill_losses or {}).items():
            self._add_distill_loss(name, dict(cfg))
        self.student_recorder = ModuleOutputRecorder(
            self.student, [s for s, _ in self.loss_paths.values()], 'student') \
            if self.loss_paths else None
        self.teacher_recorder = ModuleOutputRecorder(
            self.teacher, [t for _, t in self.loss_paths.values()], 'teacher') \
            if self.loss_paths else None

        self._freeze_teacher(teacher_ckpt)
        # Checkpoints hold one layout whatever the launcher: no teacher (its weights
        # come from teacher_ckpt) and the student without a DDP wrapper's `module.`.
        self._register_state_dict_hook(_canonical_state_dict)
        self._register_load_state_dict_pre_hook(self._fit_state_dict)

    # ----------------------------------------------------------------- building ---
    def _add_distill_loss(self, name: str, cfg: dict) -> None:
        if 'loss' not in name:
            raise ValueError(f"distill loss name {name!r} must contain 'loss', or "
                             'mmengine would log it without adding it to the total')
        missing = [key for key in ('type', 'student', 'teacher') if key not in cfg]
        if missing:
            raise ValueError(f'distill_losses.{name} needs {missing}, e.g. dict(type='
                             "'KLDivergence', student='decode_head.conv_seg', "
                             "teacher='decode_head.conv_seg')")
        self.loss_paths[name] = (cfg.pop('student'), cfg.pop('teacher'))
        self.distill_losses[name] = MODELS.build(cfg)

    def _freeze_teacher(self, checkpoint: Optional[str]) -> None:
        if checkpoint is None:
            print_log('TSTDistiller: teacher_ckpt is None, the teacher keeps its initial '
                      '(untrained) weights', logger='current', level=30)
        else:
            if '://' not in checkpoint and not osp.isfile(checkpoint):
                raise FileNotFoundError(
                    f'teacher_ckpt {checkpoint!r} does not exist; give the path (or URL) '
                    "of the trained teacher's checkpoint")
            try:
                load_checkpoint(self.teacher, checkpoint, map_location='cpu',
                                strict=False, logger='current')
            except OSError as err:  # URLError, HTTPError and file errors
                raise RuntimeError(f'could not load teacher_ckpt {checkpoint!r}: {err}. '
                                   'Download it and give a local path.') from err
            # The Runner calls init_weights() on the whole model: the teacher's own
            # init_cfg (e.g. an ImageNet URL) must not overwrite the loaded weights.
            self.teacher._is_init = True
        self.teacher.requires_grad_(False)
        self.teacher.eval()

    def train(self, mode: bool = True) -> 'TSTDistiller':
        super().train(mode)
        self.teacher.eval()  # dropout and BatchNorm always in inference mode
        return self

    def _fit_state_dict(self, state_dict, prefix, *args) -> None:
        """Adapt a canonical (or an older, wrapped) state dict to this model."""
        wrapped, bare = f'{prefix}student.module.', f'{prefix}student.'
        if is_model_wrapper(self.student):
            _rename_prefix(state_dict, bare, wrapped, unless=wrapped)
        else:
            _rename_prefix(state_dict, wrapped, bare)
        for key, value in self.teacher.state_dict().items():
            state_dict.setdefault(f'{prefix}teacher.{key}', value)

    # ---------------------------------------------------------------- the steps ---
    def train_step(self, data: Union[dict, tuple, list],
                   optim_wrapper: OptimWrapperDict) -> Dict[str, Tensor]:
        """One student update.

        1. Pad and stack the batch in pixel space; augment it with the current policy,
           without gradient.
        2. Build the student's views: ``[x_aug ; x]`` (or ``x_aug`` alone).
        3. Run the frozen teacher on the views, recording its outputs.
        4. Student task loss + distillation losses on the views.
        5. Update the student and the distillation adapters.
        """
        optim = optim_wrapper['student']
        with optim.optim_context(self.student):
            data = self.data_preprocessor(data, True)
            inputs, samples = self._student_views(data['inputs'], data['data_samples'])
            with torch.no_grad(), self._recording(self.teacher_recorder):
                self.teacher(self.teacher_normalizer(inputs, samples), samples, 'loss')
            with self._recording(self.student_recorder):
                task = self.student(self.student_normalizer(inputs, samples), samples,
                                    'loss')
            losses = {**_add_prefix(task, 'student'),
                      **_add_prefix(self._distill_losses(), 'distill')}
        loss, log_vars = self.parse_losses(losses)
        _update(optim, loss, [self.distill_losses])
        return log_vars

    def augment_step(self, data: Union[dict, tuple, list],
                     optim_wrapper: OptimWrapperDict) -> Dict[str, Tensor]:
        """One augmenter update; student and teacher frozen.

        1. Pad and stack the batch in pixel space; augment it with gradient.
        2. ``L_aug = a * teacher task loss(x_aug) + b * student inverse task loss(x_aug)
           - c * distillation losses(x_aug)``.
        3. Update the augmenter only, and clear any student gradient.
        """
        optim = optim_wrapper['augmenter']
        with optim.optim_context(self.augmenter), frozen(self.student):
            data = self.data_preprocessor(data, True)
            inputs, samples = self.augmenter(data['inputs'], data['data_samples'])
            loss, log_vars = self._augmenter_objective(inputs, samples)
        _update(optim, loss, [self.augmenter])
        optim_wrapper['student'].zero_grad()
        return _add_prefix(log_vars, 'augment')

    def _student_views(self, inputs: Tensor, samples: list) -> Tuple[Tensor, list]:
        with torch.no_grad():
            inputs_aug, samples_aug = self.augmenter(inputs, samples)
        if self.student_views == ('aug',):
            return inputs_aug, samples_aug
        return torch.cat([inputs_aug, inputs]), samples_aug + list(samples)

    def _augmenter_objective(self, inputs: Tensor, samples: list) -> Tuple[Tensor, dict]:
        w = self.augment_loss_weights
        divergence = w['divergence'] > 0
        # The student runs unwrapped: its weights are frozen, so DDP has nothing to do.
        student = _unwrap(self.student)
        with self._recording(self.teacher_recorder if divergence else None):
            teacher = self.teacher(self.teacher_normalizer(inputs, samples), samples,
                                   'loss')
        # With student_inverse=0 the student's losses need not be invertible (the
        # divergence term alone then makes the student's task hard).
        inverse = inverted_task_losses(student) if w['student_inverse'] else nullcontext()
        with inverse, self._recording(self.student_recorder if divergence else None):
            student_losses = student(self.student_normalizer(inputs, samples), samples,
                                     'loss')
        teacher_loss, teacher_log = self.parse_losses(teacher)
        loss = w['teacher'] * teacher_loss
        log_vars = _add_prefix(teacher_log, 'teacher')
        if w['student_inverse']:
            inverse_loss, inverse_log = self.parse_losses(student_losses)
            loss = loss + w['student_inverse'] * inverse_loss
            log_vars.update(_add_prefix(inverse_log, 'student_inverse'))
        if divergence:
            gap = sum(self._distill_losses().values())
            loss = loss - w['divergence'] * gap
            log_vars['divergence'] = gap.detach()
        log_vars['loss'] = loss.detach()
        return loss, log_vars

    def _distill_losses(self) -> Dict[str, Tensor]:
        return {name: loss(self.student_recorder.get(self.loss_paths[name][0]),
                           self.teacher_recorder.get(self.loss_paths[name][1]))
                for name, loss in self.distill_losses.items()}

    @staticmethod
    def _recording(recorder: Optional[ModuleOutputRecorder]):
        return recorder if recorder is not None else nullcontext()

    # --------------------------------------------------------- evaluation / API ---
    def val_step(self, data: Union[dict, tuple, list]) -> list:
        """Validation evaluates the student, with its own data preprocessor."""
        return _unwrap(self.student).val_step(data)

    def test_step(self, data: Union[dict, tuple, list]) -> list:
        return _unwrap(self.student).test_step(data)

    def forward(self, inputs: Tensor, data_samples: Optional[list] = None,
                mode: str = 'tensor'):
        """The student's forward, for tools that call the model directly."""
        return _unwrap(self.student)(inputs, data_samples, mode)


def _update(optim: OptimWrapper, loss: Tensor, unwrapped: List[nn.Module]) -> None:
    """``OptimWrapper.update_params`` with a gradient all-reduce for ``unwrapped``."""
    loss = optim.scale_loss(loss)
    optim.backward(loss)
    if optim.should_update():
        _average_gradients(unwrapped)
        optim.step()
        optim.zero_grad()


def _rename_prefix(state_dict: dict, old: str, new: str, unless: str = None) -> None:
    for key in [k for k in state_dict if k.startswith(old)]:
        if unless is None or not key.startswith(unless):
            state_dict[new + key[len(old):]] = state_dict.pop(key)


def _canonical_state_dict(module, state_dict, prefix, local_metadata) -> None:
    for key in [k for k in state_dict if k.startswith(f'{prefix}teacher.')]:
        del state_dict[key]
    _rename_prefix(state_dict, f'{prefix}student.module.', f'{prefix}student.')


def _check_num_classes(student: nn.Module, teacher: nn.Module) -> None:
    """Teacher and student must predict the same classes for distillation to mean
    anything: compare the heads' ``num_classes`` where both models have them."""
    for head in ('bbox_head', 'roi_head.bbox_head', 'decode_head', 'mask_head'):
        counts = []
        for model in (student, teacher):
            module = model
            for attr in head.split('.'):
                module = getattr(module, attr, None)
            counts.append(getattr(module, 'num_classes', None))
        if None not in counts and counts[0] != counts[1]:
            raise ValueError(f'student {head}.num_classes={counts[0]} but teacher '
                             f'{head}.num_classes={counts[1]}: set both to the number of '
                             "classes of the dataset (and use a teacher trained on it)")
