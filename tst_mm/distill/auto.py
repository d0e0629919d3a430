"""Automatic distillation: the losses chosen from the two built models.

A config that does not set ``distill_losses`` distils what the student and the teacher
emit in the same layout, found by :func:`tst_mm.distill.probe.probe_model` (one forward
of each on a blank image), not by a table of model names:

- **dense detection heads** (RetinaNet, ATSS, GFL, FCOS, YOLOX, RTMDet, ... and RPNs):
  the class logits of every level, when both heads give the same shape at every level
  (priors per position x classes, at the same strides), by the per-element Bernoulli
  KL for sigmoid heads and a softmax KL over each prior's classes for softmax heads,
  summed per image (``batchmean``, the reference's strength) and over the levels;
- **two-stage and cascade detectors**: the first stage's RoI class logits on the
  *student's* RoIs (``teacher_inputs`` give the teacher the student's sampled RoIs as
  its proposals, so the rows compare the same boxes), and the mask logits on the
  student's positive RoIs where both have a mask head;
- **necks**: every pair of output levels at the same stride, as PKD (Cao et al.,
  NeurIPS 2022): the MSE of features standardised per channel, which compares two
  architectures whatever their activation scales, through a 1x1 adapter where the
  channel counts differ;
- **semantic segmentation**: the decode head's class logits (weight 1.5) and each
  auxiliary head's (0.5, against the teacher's auxiliary head, or its decode head if
  it has none), a pixel-wise KL averaged over pixels, the teacher's resized to the
  student's output stride; class counts that differ are an error;
- where none of these applies (a query-based detector without a neck, a segmentor
  whose heads emit no per-pixel logits), the backbones' outputs at shared strides.

What is left out (DETR-style decoders, whose per-query predictions need a bipartite
matching between the two models' queries; heads whose layouts differ) is listed with
the reason. Each automatic loss gets a scale at the first student step
(:class:`AutoScales`): never stronger than its natural value, and together at most
``auto_distill_ratio`` (10) times the student's task loss, so a loss summed over a
head's every anchor cannot overwhelm the task.
"""
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Sequence, Tuple, Union

import torch
import torch.nn as nn
from mmengine.dist import all_reduce, is_distributed
from mmengine.logging import print_log
from torch import Tensor

from .probe import DenseScores, Probe, Shape, probe_model

Paths = Union[str, List[str]]


@dataclass
class AutoDistillation:
    """What :func:`choose_distillation` chose: loss configs (``distill_losses``
    entries), the ``teacher_inputs`` they need, and a report of both."""
    losses: Dict[str, dict] = field(default_factory=dict)
    teacher_inputs: List[dict] = field(default_factory=list)
    shapes: Dict[str, str] = field(default_factory=dict)  # loss name -> shapes, in words
    left_out: List[Tuple[str, str]] = field(default_factory=list)  # (what, why)

    def add(self, name: str, cfg: dict, shapes: str) -> None:
        self.losses[name] = cfg
        self.shapes[name] = shapes

    def table(self) -> str:
        """The choice as a text table, and what was left out and why."""
        rows = [('loss', 'type', 'student', 'teacher', 'shapes (student | teacher)')]
        for name, cfg in self.losses.items():
            kind = cfg['type'] + ('(PKD)' if cfg.get('normalize') else '')
            rows.append((name, kind, _paths_text(cfg['student'], cfg.get('student_levels')),
                         _paths_text(cfg['teacher'], cfg.get('teacher_levels')),
                         self.shapes[name]))
        widths = [max(len(r[i]) for r in rows) for i in range(4)]
        lines = ['  '.join(c.ljust(w) for c, w in zip(r[:4], widths)) + '  ' + r[4]
                 for r in rows]
        if self.teacher_inputs:
            lines.append('teacher_inputs (the teacher runs on the student\'s RoIs): ' +
                         '; '.join(f"{t['student']} -> {t['teacher']}"
                                   for t in self.teacher_inputs))
        for what, why in self.left_out:
            lines.append(f'left out: {what}: {why}')
        return '\n'.join(lines)


def _paths_text(paths: Paths, levels: Optional[Sequence[int]]) -> str:
    text = paths if isinstance(paths, str) else (
        f'{paths[0]} .. {paths[-1]}' if len(paths) > 1 else paths[0])
    return text + (f' levels {list(levels)}' if levels is not None else '')


def _shapes_text(shapes: Sequence[Shape]) -> str:
    def one(s):
        return 'x'.join(str(d) for d in s)
    if len(shapes) == 1:
        return one(shapes[0])
    return f'{len(shapes)} levels {one(shapes[0])} .. {one(shapes[-1])}'


def _pair_text(student: Sequence[Shape], teacher: Sequence[Shape]) -> str:
    same = list(student) == list(teacher)
    return f'{_shapes_text(student)} | ' + ('same' if same else _shapes_text(teacher))


def _paths(modules: List[str]) -> Paths:
    """One module called at every level, or one module per level."""
    return modules[0] if len(set(modules)) == 1 else list(modules)


# ----------------------------------------------------------------- dense heads ---
def _dense(choice: AutoDistillation, head: str, name: str, s: DenseScores,
           t: DenseScores) -> None:
    def layout(d: DenseScores) -> str:
        priors = d.shapes[0][0] // d.class_channels
        kind = 'sigmoid' if d.sigmoid else 'softmax'
        return (f'{priors} prior(s) x {d.class_channels} {kind} scores per position '
                f'at {len(d.shapes)} levels of {[x[1:] for x in d.shapes]}')

    if s.sigmoid != t.sigmoid or s.class_channels != t.class_channels or \
            s.shapes != t.shapes:
        choice.left_out.append((
            f'{head} class scores',
            f'the student\'s head emits {layout(s)}, the teacher\'s {layout(t)}: no '
            'common layout'))
        return
    cfg = dict(type='BinaryKLDivergence', reduction='batchmean', level_reduction='sum') \
        if s.sigmoid else dict(type='KLDivergence', reduction='batchmean',
                               level_reduction='sum', class_channels=s.class_channels)
    choice.add(name, dict(cfg, student=_paths(s.modules), teacher=_paths(t.modules)),
               _pair_text(s.shapes, t.shapes))


# ----------------------------------------------------------------------- RoIs ---
def _roi(choice: AutoDistillation, sp: Probe, tp: Probe, teacher: nn.Module,
         teacher_inputs: Optional[Sequence[dict]]) -> None:
    if sp.roi is None or tp.roi is None:
        why = sp.roi_skipped or tp.roi_skipped
        if why is None and (sp.roi or tp.roi):
            why = 'only one of the two models has an RoI head'
        if why is not None:
            choice.left_out.append(('RoI class logits', why))
        return
    s, t = sp.roi, tp.roi
    if not hasattr(getattr(teacher, 'rpn_head', None), 'predict'):
        choice.left_out.append(('RoI class logits', 'the teacher has no RPN head whose '
                                'proposals the student\'s RoIs can replace'))
        return
    given = list(teacher_inputs or [])
    feeds = [dict(student=s.extractor, student_arg='rois', teacher='rpn_head.predict')]
    if given:
        # The config's own teacher_inputs: distil what they feed.
        fed = {spec.get('student') for spec in given}
        if s.extractor not in fed:
            choice.left_out.append(('RoI class logits', 'the configured teacher_inputs '
                                    f'do not give the teacher {s.extractor}\'s RoIs'))
            return
    choice.add('loss_kd_roi_cls', dict(type='KLDivergence', student=s.fc_cls,
                                       teacher=t.fc_cls, reduction='batchmean'),
               f'RoIs x {s.classes} | RoIs x {t.classes}')
    if s.mask_logits and t.mask_logits:
        if s.mask_channels != t.mask_channels:
            choice.left_out.append(('mask logits', f'{s.mask_channels} mask channels in '
                                    f'the student, {t.mask_channels} in the teacher '
                                    '(class-agnostic against per-class masks)'))
        elif given and s.mask_extractor not in {spec.get('student') for spec in given}:
            choice.left_out.append(('mask logits', 'the configured teacher_inputs do '
                                    f'not give the teacher {s.mask_extractor}\'s RoIs'))
        else:
            feeds.append(dict(student=s.mask_extractor, teacher=t.mask_extractor,
                              arg='rois'))
            choice.add('loss_kd_mask', dict(type='BinaryKLDivergence', student=s.mask_logits,
                                            teacher=t.mask_logits, reduction='mean'),
                       f'positive RoIs x {s.mask_channels} x 28 x 28 | same RoIs')
    elif s.mask_logits or t.mask_logits:
        choice.left_out.append(('mask logits', 'only one of the two models has a '
                                'StandardRoIHead mask head'))
    if not given:
        choice.teacher_inputs = feeds


# ------------------------------------------------------------------- features ---
def _level_pairs(s: List[Shape], t: List[Shape]) -> List[Tuple[int, int]]:
    """Student and teacher levels at the same stride (the same h x w), in order."""
    pairs, used = [], set()
    for i, (_, h, w) in enumerate(s):
        for j, (_, th, tw) in enumerate(t):
            if j not in used and (h, w) == (th, tw):
                pairs.append((i, j))
                used.add(j)
                break
    return pairs


def _features(choice: AutoDistillation, where: str, s: List[Shape],
              t: List[Shape]) -> bool:
    pairs = _level_pairs(s, t)
    if not pairs:
        choice.left_out.append((f'{where} features', 'the two models\' '
                                f'{where} outputs share no stride ({[x[1:] for x in s]} '
                                f'against {[x[1:] for x in t]})'))
        return False
    # One loss (one adapter) per pair of channel counts: FPN levels share theirs.
    groups: Dict[Tuple[int, int], List[Tuple[int, int]]] = {}
    for i, j in pairs:
        groups.setdefault((s[i][0], t[j][0]), []).append((i, j))
    for n, ((cs, ct), group) in enumerate(groups.items()):
        name = f'loss_pkd_{where}' + (f'_{n}' if len(groups) > 1 else '')
        cfg = dict(type='FeatureMimic', student=where, teacher=where, normalize=True,
                   reduction='mean', level_reduction='sum')
        if cs != ct:
            cfg.update(student_channels=cs, teacher_channels=ct)
        student_levels = [i for i, _ in group]
        teacher_levels = [j for _, j in group]
        if student_levels != list(range(len(s))) or teacher_levels != list(range(len(t))):
            cfg.update(student_levels=student_levels, teacher_levels=teacher_levels)
        choice.add(name, cfg, _pair_text([s[i] for i in student_levels],
                                         [t[j] for j in teacher_levels]))
    return True


# ------------------------------------------------------------- segmentation ---
def _segmentation(choice: AutoDistillation, sp: Probe, tp: Probe) -> None:
    def decode(probe):
        return [x for x in probe.seg if x.head.startswith('decode')]

    def aux(probe):
        return [x for x in probe.seg if not x.head.startswith('decode')]

    teacher_decode = (decode(tp) or [None])[0]
    pairs = [(s, teacher_decode, 'loss_kd_decode', 1.5) for s in decode(sp)]
    student_aux, teacher_aux = aux(sp), aux(tp)
    for i, s in enumerate(student_aux):
        # The teacher's i-th auxiliary head, else its best prediction, the decode head.
        t = teacher_aux[i] if i < len(teacher_aux) else teacher_decode
        name = 'loss_kd_aux' + (f'_{i}' if len(student_aux) > 1 else '')
        pairs.append((s, t, name, 0.5))
    for s, t, name, weight in pairs:
        if t is None:
            choice.left_out.append((f'{s.head} logits', 'the teacher has no head with '
                                    'per-pixel class logits'))
            continue
        if s.shape[0] != t.shape[0]:
            raise ValueError(
                f'the student\'s {s.head} predicts {s.shape[0]} classes but the '
                f'teacher\'s {t.head} predicts {t.shape[0]}: distillation compares '
                'class by class; use a teacher trained on the same classes (set '
                'num_classes alike), or write distill_losses yourself')
        if s.sigmoid != t.sigmoid:
            choice.left_out.append((f'{s.head} logits', 'one head scores pixels with a '
                                    'sigmoid, the other with a softmax'))
            continue
        cfg = dict(type='BinaryKLDivergence' if s.sigmoid else 'KLDivergence',
                   student=s.module, teacher=t.module, reduction='pixelmean',
                   loss_weight=weight)
        choice.add(name, cfg, _pair_text([s.shape], [t.shape]) +
                   (' (teacher resized)' if s.shape[1:] != t.shape[1:] else ''))
    for head, why in sp.seg_skipped.items():
        choice.left_out.append((f'student {head} logits', why))


# ------------------------------------------------------------------- choose ---
def choose_distillation(student: nn.Module, teacher: nn.Module,
                        teacher_inputs: Optional[Sequence[dict]] = None
                        ) -> AutoDistillation:
    """The distillation losses for ``student`` and ``teacher``, chosen from what both
    emit on one blank image (see the module doc).

    Args:
        student (nn.Module): The built student.
        teacher (nn.Module): The built teacher.
        teacher_inputs (Sequence[dict], optional): The config's own ``teacher_inputs``;
            when given, RoI losses are chosen only for what they feed and none are
            added. Defaults to None.

    Returns:
        AutoDistillation: The loss configs, the ``teacher_inputs`` they need and the
        report.
    """
    sp, tp = probe_model(student), probe_model(teacher)
    choice = AutoDistillation()
    for head, name in (('bbox_head', 'loss_kd_cls'), ('rpn_head', 'loss_kd_rpn')):
        s, t = sp.dense.get(head), tp.dense.get(head)
        if s is not None and t is not None:
            _dense(choice, head, name, s, t)
            continue
        why = sp.dense_skipped.get(head) or tp.dense_skipped.get(head)
        if why is None and (s is not None or t is not None):
            why = f'only the {"student" if s is not None else "teacher"} has a dense {head}'
        if why is not None:
            choice.left_out.append((f'{head} class scores', why))
    _roi(choice, sp, tp, teacher, teacher_inputs)
    if sp.query_based or tp.query_based:
        choice.left_out.append((
            'per-query class scores', 'each model matches its own queries to the '
            'objects, so query i of one and of the other describe different objects '
            '(aligning them needs a bipartite matching)'))
    _segmentation(choice, sp, tp)
    features = False
    if sp.neck and tp.neck:
        features = _features(choice, 'neck', sp.neck, tp.neck)
    if not features and not choice.losses and sp.backbone and tp.backbone:
        _features(choice, 'backbone', sp.backbone, tp.backbone)
    if not choice.losses:
        choice.left_out.append(('everything', 'the two models share no output layout '
                                'this recognises; write distill_losses by hand'))
    return choice


# ---------------------------------------------------------------- the scale ---
class AutoScales(nn.Module):
    """The scale of each automatic loss, set at the first student step that computes
    it (and checkpointed with the model, so a resumed run keeps it).

    A loss ``L_i`` (with its loss weight) gets ``s_i = min(1, r * T / (k * L_i))``,
    where ``T`` is the student's task loss, ``k`` the number of automatic losses and
    ``r`` the ``ratio``, all on that first batch (averaged over ranks, so every rank
    gets the same scales): a loss already within its share of ``r`` times the task loss
    keeps its natural strength; a larger one (a KL summed over 100k anchors x 80
    classes next to a focal loss divided by the positives) is brought down to its
    share, so the distillation total starts at most at ``r`` times the task loss.

    Args:
        names (Sequence[str]): The automatic losses.
        ratio (float): The most the distillation total may be at the first student
            step, as a multiple of the task loss. Defaults to 10.
    """

    def __init__(self, names: Sequence[str], ratio: float = 10.0) -> None:
        super().__init__()
        if isinstance(ratio, bool) or not isinstance(ratio, (int, float)) or \
                not 0 < ratio < float('inf'):
            raise ValueError(f'auto_distill_ratio must be a finite number > 0, got '
                             f'{ratio!r}')
        self.names = list(names)
        self.ratio = float(ratio)
        self.register_buffer('scale', torch.ones(len(self.names)))
        self.register_buffer('calibrated', torch.zeros(len(self.names), dtype=torch.bool))

    @property
    def pending(self) -> bool:
        """Whether some scale is still to be set."""
        return not bool(self.calibrated.all())

    def forward(self, losses: Dict[str, Tensor],
                task: Optional[Tensor] = None) -> Dict[str, Tensor]:
        """``losses`` with the automatic ones scaled. Given the student's ``task``
        loss on the same batch, the scales not yet set are set first (and logged)."""
        index = {n: i for i, n in enumerate(self.names) if n in losses}
        if not index:
            return losses
        if task is not None and not bool(self.calibrated[list(index.values())].all()):
            line = self._calibrate(losses, task, index)
            if line:
                print_log(line, logger='current')
        scaled = dict(losses)
        for name, i in index.items():
            scaled[name] = losses[name] * self.scale[i]
        return scaled

    @torch.no_grad()
    def _calibrate(self, losses: Dict[str, Tensor], task: Tensor,
                   index: Dict[str, int]) -> Optional[str]:
        values = torch.stack([task.detach().float().reshape(())] +
                             [losses[n].detach().float().reshape(()) for n in index])
        if is_distributed():
            all_reduce(values, op='mean')
        if not bool(torch.isfinite(values).all()) or values[0] <= 0:
            return None  # the non-finite guard skips this step; try the next one
        task_value, raw = values[0], values[1:]
        share = self.ratio * task_value / len(self.names)
        parts = []
        for (name, i), value in zip(index.items(), raw):
            if self.calibrated[i] or value <= 0:  # e.g. a warm-up weight of 0
                continue
            self.scale[i] = torch.clamp(share / value, max=1.0).to(self.scale)
            self.calibrated[i] = True
            parts.append(f'{name} {float(value):.4g} x {float(self.scale[i]):.3g}')
        if not parts:
            return None
        return (f'TSTDistiller: automatic distillation scales at the first student step '
                f'(task loss {float(task_value):.4g}; each loss at most its 1/'
                f'{len(self.names)} share of {self.ratio:g}x that): ' + ', '.join(parts))
