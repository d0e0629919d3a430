"""TSTDistiller: a student, a frozen teacher and a learned augmenter in one model."""
import copy
from contextlib import contextmanager, nullcontext
from typing import Dict, Iterator, List, Optional, Sequence, Tuple, Union

import torch
import torch.nn as nn
from mmengine.logging import print_log
from mmengine.model import BaseModel, is_model_wrapper
from mmengine.optim import OptimWrapperDict
from mmengine.registry import MODELS
from torch import Tensor

from .auto import AutoDistillation, AutoScales, choose_distillation
from .freeze import frozen, loss_mode
from .inverse_check import InversionCheck
from .inverse_losses import INVERSE_REDUCTIONS, check_invertible, inverted_task_losses
from .nonfinite import NonFiniteGuard, bounded
from .normalize import InputNormalizer
from .probe import ProbeError, probe_model
from .recorders import ModuleOutputRecorder
from .student_check import check_single_model
from .teacher import load_teacher, model_cfg
from .teacher_inputs import StudentInputs
from .updates import update, update_by_terms

Paths = Union[str, List[str]]  # one module, or one per level
VIEWS = ('aug', 'clean')
STUDENT_VIEWS = (VIEWS, ('aug',), ('clean',))


def _unwrap(module: nn.Module) -> nn.Module:
    return module.module if is_model_wrapper(module) else module


def _add_prefix(losses: dict, prefix: str) -> dict:
    return {f'{prefix}.{key}': value for key, value in losses.items()}


@MODELS.register_module()
class TSTDistiller(BaseModel):
    """TST: distillation with a learned, differentiable data augmenter.

    A batch is padded and stacked in pixel space, augmented, then normalised separately
    for the teacher and the student. Two steps alternate (the train loop decides when):
    :meth:`train_step` updates the student, :meth:`augment_step` the augmenter.
    Validation and testing evaluate the student.

    Args:
        student (dict): An mmdet / mmseg model config.
        teacher (dict | str | None): A model config, or a config file whose ``model``
            is used (``'mmdet::retinanet/retinanet_r101_fpn_2x_coco.py'`` works). None:
            no teacher and no distillation, the student trains on the augmenter's views
            as plain augmentation (a control for studies; no augment phases).
        teacher_ckpt (str, optional): Local path or URL of the teacher's weights, loaded
            at construction. None keeps the teacher's own initialisation (tests only;
            a warning says so). Defaults to None.
        augmenter (dict): The augmenter config. Defaults to ``TSTAugmenter()``.
        distill_losses (dict, optional): ``name -> dict(type=<loss>, student=<module
            path>, teacher=<module path>, **loss_args)``; names must contain
            ``'loss'``. A path may be a list of modules (one per level), and
            ``student_levels`` / ``teacher_levels`` pick levels of a multi-level
            output (e.g. the necks' levels at shared strides). None (the default):
            chosen from the two built models (:mod:`tst_mm.distill.auto`), printed at
            build, and scaled at the first student step; ``dict()``: no
            distillation.
        student_views (Sequence[str]): What the student learns from in its step:
            ``('aug', 'clean')`` (the reference's ``[x_aug ; x]``), ``('aug',)``, or
            ``('clean',)``: plain distillation, the augmenter unused (the control
            TST is measured against; give the loop no augment phases).
            Defaults to ``('aug', 'clean')``.
        augment_loss_weights (dict): Weights of the augmenter objective,
            ``teacher`` (teacher task loss), ``student_inverse`` (student inverse task
            loss), ``divergence`` (minus the distillation losses, maximising the
            teacher-student gap) and ``transfer`` (minus the look-ahead transfer:
            how much one student step on the views lowers the student's loss on
            *other* clean images, to first order; see :meth:`_transfer`). A weight of
            0 skips its term's computation. Defaults to ``dict(teacher=1,
            student_inverse=1, divergence=0, transfer=0)``.
        inverse_reduction (str): How the student's inverse task losses are reduced:
            ``'mean'`` averages a dense focal inverse over all anchors x classes of each
            level (as the reference) and keeps the others' task reduction, which keeps
            the two terms' gradients within a few times of each other; ``'reference'``
            also divides a softmax segmentation inverse by C, as the reference does;
            ``'task'`` keeps every task loss's weights and ``avg_factor`` (a focal
            inverse then outweighs the teacher term 10^4 times in value, ~300 times in
            gradient). See :mod:`tst_mm.distill.inverse_losses`. Defaults to
            ``'mean'``.
        teacher_inputs (Sequence[dict], optional): Arguments of teacher modules that
            are replaced, in the student step, by what the student's modules received
            (:mod:`tst_mm.distill.teacher_inputs`). For two-stage detectors,
            ``dict(student='roi_head.bbox_roi_extractor', student_arg='rois',
            teacher='rpn_head.predict')`` makes the student's sampled RoIs the
            teacher's proposals, so a KL on ``roi_head.bbox_head.fc_cls``
            (a Cascade teacher: ``roi_head.bbox_head.0.fc_cls``) compares the same
            boxes; add the ``mask_roi_extractor`` pair (``arg='rois'``) for the mask
            head. The teacher then runs after the student, in ``mode='tensor'``: record
            only modules its test-time forward runs. Defaults to None.
        max_nonfinite_skips (int): Updates of one phase (student or augmenter)
            skipped in a row for a non-finite loss or gradient before training stops
            with an error naming the phase, the terms and the last checkpoint. Each
            skip leaves the weights and the optimizer state untouched and is logged
            (:mod:`tst_mm.distill.nonfinite`). Defaults to 3.
        augmenter_param_bound (float): After every augmenter update its parameters
            (the policy's logits theta_m, theta_p) are clamped to [-bound, bound] and
            kept finite whatever the optimizer does, so magnitudes and probabilities
            stay in [sigmoid(-bound), sigmoid(bound)] (4.5e-5 to 0.99995 at 10) and can
            always move back. Defaults to 10.
        teacher_margin (float, optional): None: the teacher term is weighted, as the
            reference: ``a * T(x_aug)``. A number ``r >= 0`` makes it a constraint
            (as TeachAugment's, Suzuki, CVPR 2022: hard for the student only as long
            as the teacher still solves it): a penalty
            ``a * relu(T(x_aug) - (1 + r) * T(x))`` that is zero while the teacher's
            task loss on the views stays within ``1 + r`` times its loss on the clean
            batch (one more teacher forward, without gradient) and pushes back beyond
            it; ``a`` (``augment_loss_weights.teacher``) is then the penalty's
            weight. Defaults to None.
        augment_grad_balance (bool): Rescale each term's gradient on the augmenter
            to the terms' mean norm before its update, so that the teacher term and
            the student inverse have the same say in the direction whatever their
            scales (``augment_loss_weights`` then only switch terms on or off).
            Defaults to False (the weighted sum, as the reference).
        auto_distill_ratio (float): Automatic losses only: the most their total may
            be at the first student step, as a multiple of the student's task loss;
            each loss larger than its share is scaled down to it, for good
            (:class:`tst_mm.distill.auto.AutoScales`). Defaults to 10.
        data_preprocessor (dict, optional): Pads and stacks (e.g. mmseg's
            ``SegDataPreProcessor``: pad to the crop size, labels with 255); its
            normalisation and channel order are replaced by pixel-space RGB. Used only
            when the student has no ``data_preprocessor`` of its own: as in plain
            mmdet / mmseg, where the model's own wins over the config's top-level one
            (which mmengine's Runner passes here); a log line says so when the two
            differ. Defaults to None.
        init_cfg (dict, optional): Defaults to None.
    """

    def __init__(self,
                 student: dict,
                 teacher: Union[dict, str, None],
                 teacher_ckpt: Optional[str] = None,
                 augmenter: dict = dict(type='TSTAugmenter'),
                 distill_losses: Optional[Dict[str, dict]] = None,
                 student_views: Sequence[str] = VIEWS,
                 augment_loss_weights: Optional[Dict[str, float]] = None,
                 inverse_reduction: str = 'mean',
                 teacher_inputs: Optional[Sequence[dict]] = None,
                 max_nonfinite_skips: int = 3,
                 augmenter_param_bound: float = 10.0,
                 teacher_margin: Optional[float] = None,
                 augment_grad_balance: bool = False,
                 auto_distill_ratio: float = 10.0,
                 data_preprocessor: Optional[dict] = None,
                 init_cfg: Optional[dict] = None) -> None:
        student_cfg = model_cfg(student)
        teacher_cfg = model_cfg(teacher) if teacher is not None else None
        data_preprocessor = _padding_preprocessor(student_cfg.get('data_preprocessor'),
                                                  data_preprocessor)
        # Always pixel space, RGB: the Runner also fills this argument in from a
        # config's top-level `data_preprocessor` (every mmseg config has one), which
        # normalises for the student.
        data_preprocessor.update(mean=None, std=None, bgr_to_rgb=True, rgb_to_bgr=False)
        super().__init__(data_preprocessor=data_preprocessor, init_cfg=init_cfg)
        self.student = MODELS.build(student_cfg)
        check_single_model(self.student)
        # Everything else is built on a side random stream, so the student starts from
        # the weights the plain student config gets under the same seed: a TST run and
        # its controls (student alone, plain KD) start from the same student.
        with torch.random.fork_rng(devices=[]):
            self.teacher = MODELS.build(teacher_cfg) if teacher_cfg is not None else None
            self.augmenter = MODELS.build(augmenter)
            auto = distill_losses is None and self.teacher is not None
            # What automatic distillation chose, for tools and reports (None: written).
            self.auto_distillation = self._choose_distillation(teacher_inputs) \
                if auto else None
            if auto:
                distill_losses = self.auto_distillation.losses
                teacher_inputs = teacher_inputs or \
                    self.auto_distillation.teacher_inputs or None
            self._build_distill_losses(distill_losses or {})
        # Automatic losses are scaled at the first student step (see AutoScales).
        self.auto_scales = AutoScales(list(self.distill_losses) if auto else [],
                                      auto_distill_ratio)
        self.student_normalizer = InputNormalizer(student_cfg.get('data_preprocessor'))
        if self.teacher is not None:
            check_single_model(self.teacher)
            self.teacher_normalizer = InputNormalizer(teacher_cfg.get('data_preprocessor'))
            _check_num_classes(self.student, self.teacher)
        elif distill_losses or teacher_inputs:
            raise ValueError('teacher=None trains the student alone (on the augmenter\'s '
                             'views): give no distill_losses and no teacher_inputs')

        if tuple(student_views) not in STUDENT_VIEWS:
            raise ValueError(f'student_views must be one of {STUDENT_VIEWS}, got '
                             f'{tuple(student_views)}')
        self.student_views = tuple(student_views)
        if inverse_reduction not in INVERSE_REDUCTIONS:
            raise ValueError(f'inverse_reduction must be one of '
                             f'{tuple(INVERSE_REDUCTIONS)}, got {inverse_reduction!r}')
        self.inverse_reduction = inverse_reduction
        self.nonfinite_guard = NonFiniteGuard(max_nonfinite_skips)
        self.inversion_check = InversionCheck()  # at the first augmenter steps
        if isinstance(augmenter_param_bound, bool) or \
                not isinstance(augmenter_param_bound, (int, float)) or \
                not 0 < augmenter_param_bound < float('inf'):
            raise ValueError('augmenter_param_bound must be a finite number > 0, got '
                             f'{augmenter_param_bound!r}')
        self.augmenter_param_bound = float(augmenter_param_bound)
        if teacher_margin is not None and (isinstance(teacher_margin, bool) or not
                                           isinstance(teacher_margin, (int, float)) or
                                           not 0 <= teacher_margin < float('inf')):
            raise ValueError('teacher_margin must be None or a finite number >= 0, got '
                             f'{teacher_margin!r}')
        self.teacher_margin = teacher_margin
        if not isinstance(augment_grad_balance, bool):
            raise ValueError('augment_grad_balance must be True or False, got '
                             f'{augment_grad_balance!r}')
        self.augment_grad_balance = augment_grad_balance
        weights = dict(teacher=1.0, student_inverse=1.0, divergence=0.0, transfer=0.0)
        unknown = set(augment_loss_weights or {}) - set(weights)
        if unknown:
            raise ValueError(f'unknown augment_loss_weights keys {sorted(unknown)}; '
                             f'valid: {sorted(weights)}')
        weights.update(augment_loss_weights or {})
        self.augment_loss_weights = weights
        if weights['student_inverse'] and self.teacher is not None:
            # Fail at build time, not at the first augment phase hours later.
            check_invertible(self.student)

        self.student_recorder = ModuleOutputRecorder(
            self.student, [p for s, _ in self.loss_paths.values() for p in _as_list(s)],
            'student') if self.loss_paths else None
        self.teacher_recorder = ModuleOutputRecorder(
            self.teacher, [p for _, t in self.loss_paths.values() for p in _as_list(t)],
            'teacher') if self.loss_paths else None

        self.student_inputs = StudentInputs(self.student, self.teacher, teacher_inputs) \
            if teacher_inputs else None
        if self.student_inputs is not None and (weights['divergence'] > 0 or
                                                weights['transfer'] > 0):
            raise ValueError('teacher_inputs (the teacher on the student\'s RoIs) serve the '
                             'student step only; the divergence and transfer terms of the '
                             'augmenter objective run the teacher on its own proposals. '
                             'Set augment_loss_weights.divergence=0 and transfer=0, or '
                             'drop teacher_inputs')
        # Without substituted inputs the teacher's training forward is the one that
        # runs every head (mmseg's auxiliary heads run in 'loss' mode only).
        self._teacher_mode = 'tensor' if self.student_inputs is not None else 'loss'

        if self.teacher is not None:
            self._freeze_teacher(teacher_ckpt)
        if self.distill_losses and not auto:
            self._check_distill_losses()
        # Checkpoints hold one layout whatever the launcher: no teacher (its weights
        # come from teacher_ckpt) and the student without a DDP wrapper's `module.`.
        self._register_state_dict_hook(_canonical_state_dict)
        self._register_load_state_dict_pre_hook(self._fit_state_dict)

    # ----------------------------------------------------------------- building ---
    def _build_distill_losses(self, cfgs: Dict[str, dict]) -> None:
        self.distill_losses = nn.ModuleDict()
        self.loss_paths: Dict[str, Tuple[Paths, Paths]] = {}
        self.loss_levels: Dict[str, Tuple[Optional[list], Optional[list]]] = {}
        for name, cfg in cfgs.items():
            self._add_distill_loss(name, dict(cfg))

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
        self.loss_levels[name] = (cfg.pop('student_levels', None),
                                  cfg.pop('teacher_levels', None))
        self.distill_losses[name] = MODELS.build(cfg)

    def _choose_distillation(self, teacher_inputs: Optional[Sequence[dict]]
                             ) -> AutoDistillation:
        """The losses for the two models (:mod:`tst_mm.distill.auto`), logged."""
        try:
            choice = choose_distillation(self.student, self.teacher, teacher_inputs)
        except ProbeError as error:
            raise RuntimeError(
                'distill_losses is not set, and choosing them needs a forward of each '
                f'model on a blank image: {error}. Write distill_losses (docs/configs.md'
                '#distillation-losses), or set distill_losses=dict() for no '
                'distillation') from error
        print_log('TSTDistiller: distill_losses not set, so chosen from the two models '
                  '(write distill_losses to choose, distill_losses=dict() for none):\n' +
                  choice.table(), logger='current')
        return choice

    def _check_distill_losses(self) -> None:
        """Each written loss on what its modules emit on a blank image, so that a
        channel or level mismatch is an error at build, not at the first student step
        after hours of augment phase. RoI-level losses are left to training: each model
        scores its own proposals here."""
        checked = {name: paths for name, paths in self.loss_paths.items()
                   if not any(p.startswith('roi_head') for p in
                              _as_list(paths[0]) + _as_list(paths[1]))}
        if not checked:
            return
        try:
            records = [probe_model(model, paths=[p for paths in checked.values()
                                                 for p in _as_list(paths[side])]).records
                       for side, model in enumerate((self.student, self.teacher))]
        except ProbeError as error:  # the check is a courtesy: training will tell
            print_log(f'TSTDistiller: distill_losses not checked at build ({error})',
                      logger='current')
            return
        getters = [r.__getitem__ for r in records]
        for name, (student_paths, teacher_paths) in checked.items():
            # A copy runs: a loss with state (a call count, a running statistic) must
            # start training as built.
            loss = copy.deepcopy(self.distill_losses[name])
            try:
                with torch.no_grad():
                    loss(*self._loss_inputs(name, *getters))
            except (ValueError, RuntimeError, TypeError, IndexError) as error:
                raise ValueError(f'distill_losses.{name} does not fit the two models '
                                 f'(student {student_paths!r}, teacher {teacher_paths!r}) '
                                 f'on a blank image: {error}') from error

    def _freeze_teacher(self, checkpoint: Optional[str]) -> None:
        if checkpoint is None:
            print_log('TSTDistiller: teacher_ckpt is None, the teacher keeps its initial '
                      '(untrained) weights', logger='current', level=30)
        else:
            load_teacher(self.teacher, checkpoint)
            # The Runner calls init_weights() on the whole model: the teacher's own
            # init_cfg (e.g. an ImageNet URL) must not overwrite the loaded weights.
            self.teacher._is_init = True
        self.teacher.requires_grad_(False)
        self.teacher.eval()

    def init_weights(self) -> None:
        """The Runner's initialisation (the student's ImageNet weights, e.g.
        ``torchvision://resnet50``), with a download that fails named, with its fix."""
        try:
            super().init_weights()
        except OSError as error:  # URLError, HTTPError, a missing local file
            raise RuntimeError(_pretrained_help(self.student, error)) from error

    def train(self, mode: bool = True) -> 'TSTDistiller':
        super().train(mode)
        if self.teacher is not None:
            # dropout and BatchNorm always in inference mode (its loss: see loss_mode)
            self.teacher.eval()
        return self

    def _fit_state_dict(self, state_dict, prefix, *args) -> None:
        """Adapt an older, wrapped state dict to the canonical layout; add the teacher.

        The student's keys stay bare (``student.backbone...``) even under DDP: mmengine's
        loader (``--resume``, ``load_from``) skips model wrappers and looks for exactly
        these; torch's ``load_state_dict`` walks into the wrapper, whose own pre-hook
        adds ``module.`` (:class:`tst_mm.engine.TSTDistributedDataParallel`).
        """
        _rename_prefix(state_dict, f'{prefix}student.module.', f'{prefix}student.')
        for key, value in (self.teacher.state_dict() if self.teacher else {}).items():
            state_dict.setdefault(f'{prefix}teacher.{key}', value)

    # ---------------------------------------------------------------- the steps ---
    def train_step(self, data: Union[dict, tuple, list],
                   optim_wrapper: OptimWrapperDict) -> Dict[str, Tensor]:
        """One student update.

        1. Pad and stack the batch in pixel space; augment it with the current policy,
           without gradient.
        2. Build the student's views: ``[x_aug ; x]`` (or ``x_aug`` alone).
        3. Student task loss on the views, recording its outputs (and the inputs the
           teacher is to reuse, see ``teacher_inputs``).
        4. Run the frozen teacher on the views, recording its outputs (if anything is
           distilled).
        5. Distillation losses; update the student and the distillation adapters.
        """
        optim = optim_wrapper['student']
        with optim.optim_context(self.student):
            data = self.data_preprocessor(data, True)
            inputs, samples = self._student_views(data['inputs'], data['data_samples'])
            losses = self._student_losses(self.student, inputs, samples)
        loss, log_vars = self.parse_losses(losses)
        stepped = update(optim, loss, [self.distill_losses])  # skipped if not finite
        self.nonfinite_guard.record('student', stepped, log_vars)
        return log_vars

    def augment_step(self, data: Union[dict, tuple, list],
                     optim_wrapper: OptimWrapperDict) -> Dict[str, Tensor]:
        """One augmenter update; student and teacher frozen.

        1. Pad and stack the batch in pixel space; augment it with gradient.
        2. The objective's terms on ``x_aug``: ``a * teacher task loss``,
           ``b * student inverse task loss``, ``-c * distillation losses`` and
           ``-d * transfer`` (with ``d > 0`` the batch's first half is augmented and
           its second half, clean, is what the transfer aims at).
        3. Backpropagate the terms one at a time, measuring the gradient norm each
           gives the augmenter; update the augmenter only (skipped if a term or the
           gradient is not finite; its parameters kept within
           ``augmenter_param_bound``), clear any student gradient.
        """
        if self.student_views == ('clean',):
            raise RuntimeError("student_views=('clean',) is plain distillation: the "
                               'student never sees augmented images, so training the '
                               'augmenter is wasted work; remove the augment phases')
        if self.teacher is None:
            raise RuntimeError('teacher=None: the augmenter\'s objective needs a teacher; '
                               'remove the augment phases (the policy then stays at its '
                               'initial, random state) or give a teacher')
        optim = optim_wrapper['augmenter']
        # Measured before `frozen` turns them off: the weights a student step updates
        # (only the transfer term differentiates in them).
        trained = [p for p in _unwrap(self.student).parameters() if p.requires_grad] \
            if self.augment_loss_weights['transfer'] else []
        with optim.optim_context(self.augmenter), frozen(self.student):
            terms, log_vars = self.augment_terms(self.data_preprocessor(data, True),
                                                 trained)
        with bounded(self.augmenter, self.augmenter_param_bound), \
                _twice_differentiable('transfer' in terms):
            grad_norms, stepped = update_by_terms(optim, terms, self.augmenter,
                                                  self.augment_grad_balance)
        optim_wrapper['student'].zero_grad()
        self.nonfinite_guard.record('augmenter', stepped, log_vars)
        log_vars.update(_add_prefix(grad_norms, 'grad_norm'))
        # Detached: the log reads them as numbers after the graph is gone.
        return {f'augment.{k}': v.detach() for k, v in log_vars.items()}

    def augment_terms(self, data: dict, trained: Sequence[nn.Parameter]
                      ) -> Tuple[Dict[str, Tensor], dict]:
        """The augmenter objective's weighted terms on a preprocessed batch (their sum
        is minimised) and the log; call it with the student :func:`frozen`, whose
        ``trained`` weights the transfer term differentiates in."""
        transfer = self.augment_loss_weights['transfer']
        if transfer:
            data, target = _halves(data)
        inputs, samples = self.augmenter(data['inputs'], data['data_samples'])
        terms, log_vars = self._augmenter_objective(inputs, samples, data)
        if transfer:
            gain = self._transfer(inputs, samples, target, trained)
            terms['transfer'] = -transfer * gain
            log_vars['transfer'] = gain.detach()
            log_vars['loss'] = sum(terms.values()).detach()
        return terms, log_vars

    def _student_losses(self, student: nn.Module, inputs: Tensor,
                        samples: list) -> Dict[str, Tensor]:
        """What the student minimises on ``inputs``: its task losses and the
        distillation losses against the frozen teacher on the same images."""
        with self._recording(self.student_recorder), self._feed('recording'):
            task = student(self.student_normalizer(inputs, samples), samples, 'loss')
        if not self.distill_losses:
            return _add_prefix(task, 'student')
        with torch.no_grad(), self._recording(self.teacher_recorder), \
                self._feed('replacing'), self._teacher_in(self._teacher_mode):
            self.teacher(self.teacher_normalizer(inputs, samples), samples,
                         self._teacher_mode)
        # The task total sets the automatic losses' scales, once.
        task_total = self.parse_losses(task)[0].detach() if self.auto_scales.pending \
            else None
        distill = self._distill_losses(task_total)
        return {**_add_prefix(task, 'student'), **_add_prefix(distill, 'distill')}

    def _student_views(self, inputs: Tensor, samples: list) -> Tuple[Tensor, list]:
        if self.student_views == ('clean',):
            return inputs, samples
        with torch.no_grad():
            inputs_aug, samples_aug = self.augmenter(inputs, samples)
        if self.student_views == ('aug',):
            return inputs_aug, samples_aug
        return torch.cat([inputs_aug, inputs]), samples_aug + list(samples)

    def _augmenter_objective(self, inputs: Tensor, samples: list,
                             clean: Optional[dict] = None
                             ) -> Tuple[Dict[str, Tensor], dict]:
        """The weighted terms of ``L_aug`` (their sum is minimised) and the log;
        ``clean`` is the batch before augmentation (for ``teacher_margin``)."""
        w = self.augment_loss_weights
        divergence = w['divergence'] > 0
        terms, log_vars = {}, {}
        # The student runs unwrapped: its weights are frozen, so DDP has nothing to do.
        student = _unwrap(self.student)
        if w['teacher'] or divergence:
            with self._recording(self.teacher_recorder if divergence else None), \
                    self._teacher_in('loss'):
                teacher = self.teacher(self.teacher_normalizer(inputs, samples), samples,
                                       'loss')
        if w['teacher']:
            terms, log_vars = self._teacher_term(teacher, clean)
        if w['student_inverse'] or divergence:
            self._student_terms(student, inputs, samples, terms, log_vars)
        log_vars['loss'] = sum(terms.values()).detach() if terms else inputs.new_zeros(())
        return terms, log_vars

    def _student_terms(self, student: nn.Module, inputs: Tensor, samples: list,
                       terms: dict, log_vars: dict) -> None:
        """The student inverse and divergence terms, added to ``terms``."""
        w = self.augment_loss_weights
        divergence = w['divergence'] > 0
        # With student_inverse=0 the student's losses need not be invertible (the
        # divergence term alone then makes the student's task hard).
        inverse = inverted_task_losses(student, self.inverse_reduction) \
            if w['student_inverse'] else nullcontext()
        student_inputs = self.student_normalizer(inputs, samples)
        if w['student_inverse']:
            # Is every loss the student returns inverted? (Once, at the first steps.)
            self.inversion_check.before(student, student_inputs, samples)
        with inverse, self._recording(self.student_recorder if divergence else None):
            student_losses = student(student_inputs, samples, 'loss')
        if w['student_inverse']:
            self.inversion_check.after(student_losses)
            inverse_loss, inverse_log = self.parse_losses(student_losses)
            terms['student_inverse'] = w['student_inverse'] * inverse_loss
            log_vars.update(_add_prefix(inverse_log, 'student_inverse'))
        if divergence:
            gap = sum(self._distill_losses().values())
            terms['divergence'] = -w['divergence'] * gap
            log_vars['divergence'] = gap.detach()

    def _teacher_term(self, teacher: Dict[str, Tensor], clean: Optional[dict]
                      ) -> Tuple[Dict[str, Tensor], dict]:
        """``a * T(x_aug)``, or with ``teacher_margin`` the penalty above the bound."""
        a = self.augment_loss_weights['teacher']
        teacher_loss, log_vars = self.parse_losses(teacher)
        log_vars = _add_prefix(log_vars, 'teacher')
        if self.teacher_margin is None:
            return dict(teacher=a * teacher_loss), log_vars
        if clean is None:
            raise ValueError('teacher_margin compares with the clean batch: pass it')
        bound = (1 + self.teacher_margin) * self._clean_teacher_loss(clean)
        log_vars['teacher.bound'] = bound
        return dict(teacher=a * torch.relu(teacher_loss - bound)), log_vars

    def _transfer(self, inputs: Tensor, samples: list, target: dict,
                  params: Sequence[nn.Parameter]) -> Tensor:
        """The look-ahead transfer of the views ``inputs``: ``<g_aug, g_target>``.

        ``g_aug`` is the gradient, in the student's weights ``params``, of what the
        student minimises (task + distillation losses) on the views; ``g_target`` that
        of the same loss on ``target``, other images, clean and without gradient. One
        SGD step of size ``lr`` on the views changes the student's loss on the target
        images by ``-lr * <g_aug, g_target>`` to first order, so the augmenter that
        maximises this product makes views whose lesson carries over to other images,
        not views that are merely hard (the meta-gradient of a look-ahead step, as in
        learned augmentation by bilevel optimisation, at first order). The product's
        gradient reaches the augmenter through ``g_aug`` (a double backward through
        the student, about three student steps' work); the target batch is drawn
        independently of the views, so the product is an unbiased estimate of that of
        the expected gradients.
        """
        student = _unwrap(self.student)
        with _requiring_grad(params):
            target_loss, _ = self.parse_losses(self._student_losses(
                student, target['inputs'], target['data_samples']))
            g_target = torch.autograd.grad(target_loss, params, allow_unused=True)
            view_loss, _ = self.parse_losses(self._student_losses(student, inputs,
                                                                  samples))
            g_aug = torch.autograd.grad(view_loss, params, create_graph=True,
                                        allow_unused=True)
        products = [(a * t).sum() for a, t in zip(g_aug, g_target)
                    if a is not None and t is not None]
        return torch.stack(products).sum() if products else inputs.new_zeros(())

    @torch.no_grad()
    def _clean_teacher_loss(self, clean: dict) -> Tensor:
        """The teacher's task loss on the batch as it was before augmentation."""
        inputs, samples = clean['inputs'], clean['data_samples']
        with self._teacher_in('loss'):
            losses = self.teacher(self.teacher_normalizer(inputs, samples), samples, 'loss')
        return self.parse_losses(losses)[0]

    def _distill_losses(self, task: Optional[Tensor] = None) -> Dict[str, Tensor]:
        """The distillation losses on what the recorders hold, automatic ones scaled
        (and their scales set, given the student's ``task`` loss on the batch)."""
        records = [self.student_recorder.get, self.teacher_recorder.get]
        losses = {name: loss(*self._loss_inputs(name, *records))
                  for name, loss in self.distill_losses.items()}
        return self.auto_scales(losses, task)

    def _loss_inputs(self, name: str, student_record, teacher_record) -> tuple:
        """A loss's (student, teacher) arguments: its modules' records (``*_record``
        gives a module's record, as a recorder's ``get``), the levels it names."""
        inputs = []
        for paths, levels, get in zip(self.loss_paths[name], self.loss_levels[name],
                                      (student_record, teacher_record)):
            if isinstance(paths, str):
                record = get(paths)
            else:  # one module per level
                record = [x for p in paths for x in _listed(get(p))]
            if levels is not None:
                record = [_listed(record)[i] for i in levels]
            inputs.append(record)
        return tuple(inputs)

    def _teacher_in(self, mode: str):
        """The teacher's ``loss`` runs with its heads in train mode, its layers in
        inference mode (:func:`loss_mode`); ``tensor`` runs in eval mode."""
        return loss_mode(self.teacher) if mode == 'loss' else nullcontext()

    @staticmethod
    def _recording(recorder: Optional[ModuleOutputRecorder]):
        return recorder if recorder is not None else nullcontext()

    def _feed(self, stage: str):
        """``teacher_inputs``: record the student's (``'recording'``), then give them
        to the teacher (``'replacing'``)."""
        if self.student_inputs is None:
            return nullcontext()
        return getattr(self.student_inputs, stage)()

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


def _pretrained_help(student: nn.Module, error: Exception) -> str:
    """What a failed download of the student's initial weights needs: the file, where
    it comes from, and where to put it."""
    sources = []
    for name, module in student.named_modules():
        cfg = getattr(module, 'init_cfg', None)
        for item in cfg if isinstance(cfg, list) else [cfg]:
            if isinstance(item, dict) and item.get('type') == 'Pretrained':
                sources.append((f'model.student.{name + "." if name else ""}init_cfg'
                                '.checkpoint', item.get('checkpoint')))
    lines = []
    for key, checkpoint in sources:
        url = checkpoint
        if isinstance(checkpoint, str) and checkpoint.startswith('torchvision://'):
            from mmengine.runner.checkpoint import get_torchvision_models
            url = get_torchvision_models().get(checkpoint[len('torchvision://'):], url)
        lines.append(f'{key}={checkpoint!r}' + (f' ({url})' if url != checkpoint else ''))
    where = '; '.join(lines) or 'its init_cfg / pretrained weights'
    return (f"could not load the student's initial weights ({error}): {where}. Download "
            'them where there is network access and give the local path in the config '
            '(or put the file in torch hub\'s cache, $TORCH_HOME/hub/checkpoints, where '
            'it is found offline); init_cfg=None trains from scratch')


def _padding_preprocessor(own: Optional[dict], given: Optional[dict]) -> dict:
    """The preprocessor that pads and stacks: the student's own, else ``given`` (the
    config's top-level one, from the Runner), as mmengine's Runner only
    ``setdefault``s a model's ``data_preprocessor``."""
    def settings(cfg):  # without mmengine's bookkeeping keys (`_scope_`)
        return {k: v for k, v in dict(cfg).items() if not k.startswith('_')}

    if own and given and settings(own) != settings(given):
        mine, other = settings(own), settings(given)
        changed = ', '.join(f'{k}: {other.get(k)!r} -> {mine.get(k)!r}'
                            for k in sorted(set(mine) | set(other))
                            if mine.get(k) != other.get(k))
        print_log("TSTDistiller pads and stacks batches with the student's own "
                  "data_preprocessor; the config's top-level data_preprocessor differs "
                  f'({changed}) and is not used, as in plain mmdet / mmseg, where a '
                  "model's own wins", logger='current')
    return dict(own or given or {})


def _as_list(paths: Paths) -> List[str]:
    return [paths] if isinstance(paths, str) else list(paths)


def _listed(record) -> list:
    return list(record) if isinstance(record, (list, tuple)) else [record]


def _rename_prefix(state_dict: dict, old: str, new: str) -> None:
    for key in [k for k in state_dict if k.startswith(old)]:
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


def _halves(data: dict) -> Tuple[dict, dict]:
    """A preprocessed batch split into its first and second half (images, samples)."""
    inputs, samples = data['inputs'], data['data_samples']
    if len(inputs) < 2:
        raise ValueError('augment_loss_weights.transfer needs at least 2 images per '
                         'augmenter batch (half are augmented, half are the target); '
                         'raise the augment dataloader\'s batch_size')
    half = len(inputs) // 2
    return (dict(data, inputs=inputs[:half], data_samples=list(samples[:half])),
            dict(data, inputs=inputs[half:], data_samples=list(samples[half:])))


@contextmanager
def _twice_differentiable(needed: bool) -> Iterator[None]:
    """Name the cause when the transfer term's double backward meets an op that is
    differentiable once only (e.g. mmcv's CUDA ``sigmoid_focal_loss``)."""
    try:
        yield
    except RuntimeError as error:
        if not needed or 'differentiate twice' not in str(error):
            raise
        raise RuntimeError(
            'augment_loss_weights.transfer differentiates the student\'s gradient, and a '
            'student or distillation loss here is differentiable once only '
            f'({error}). On CUDA mmdet\'s FocalLoss calls mmcv\'s sigmoid_focal_loss '
            'op, which is; use an objective without the transfer term, or losses that '
            'are written in PyTorch operations') from error


@contextmanager
def _requiring_grad(params: Sequence[nn.Parameter]) -> Iterator[None]:
    """``requires_grad`` on for ``params`` inside ``with`` (the student, which
    :func:`frozen` froze, has its weight gradients taken by :meth:`_transfer`)."""
    for p in params:
        p.requires_grad_(True)
    try:
        yield
    finally:
        for p in params:
            p.requires_grad_(False)
