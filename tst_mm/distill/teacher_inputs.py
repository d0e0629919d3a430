"""Run the teacher on inputs the student's modules received, e.g. the student's RoIs.

A two-stage detector's per-RoI outputs (``roi_head.bbox_head.fc_cls``) describe the
RoIs its own RPN proposed and its sampler drew; the teacher's describe other boxes, so
row i of the two logit matrices cannot be compared. The reference solves it by feeding
the student's RoIs to the teacher: the teacher then scores exactly the student's boxes.

Each entry of ``teacher_inputs`` takes the argument ``student_arg`` (default: ``arg``)
of the student's module ``student`` in its forward, and gives it to the teacher:

- ``teacher=<module>, arg=<name>``: as that argument of the teacher module's forward,
  e.g. the mask head's positive RoIs, ``dict(student='roi_head.mask_roi_extractor',
  teacher='roi_head.mask_roi_extractor', arg='rois')``;
- ``teacher='rpn_head.predict'``: as the teacher's proposals, one set per image, in
  place of what its RPN would predict, e.g. ``dict(student=
  'roi_head.bbox_roi_extractor', student_arg='rois', teacher='rpn_head.predict')``.
  The teacher's RPN head still runs (its outputs can be distilled), but its
  proposals are not used: the teacher's RoI head runs on the student's sampled RoIs
  (K x 5, image index first) in their order: its (first-stage) class logits line up
  row by row with the student's, and every stage of a Cascade teacher runs, as mmdet's
  own forward does.

The n-th call on the teacher's side gets the value of the n-th call of the student's.
Values are detached: the teacher is frozen and nothing flows back into the student.
"""
import inspect
from contextlib import contextmanager
from functools import partial
from typing import Any, Dict, Iterator, List, Sequence

import torch
import torch.nn as nn
from torch import Tensor

from .recorders import _unknown_path_message

PROPOSALS = 'predict'  # teacher='<rpn head>.predict': the value becomes its proposals
EXAMPLE = ("dict(student='roi_head.bbox_roi_extractor', student_arg='rois', "
           "teacher='rpn_head.predict')")


def rois_to_proposals(rois: Tensor, num_images: int) -> list:
    """K x 5 RoIs (image index, x1, y1, x2, y2) as one proposal set per image, what an
    mmdet RPN head's ``predict`` returns (``InstanceData`` with ``bboxes``)."""
    from mmengine.structures import InstanceData
    counts = torch.bincount(rois[:, 0].long(), minlength=num_images).tolist()
    return [InstanceData(bboxes=boxes) for boxes in rois[:, 1:].split(counts)]


def _argument_position(module: nn.Module, arg: str, where: str) -> int:
    params = list(inspect.signature(module.forward).parameters)
    if arg not in params:
        raise ValueError(f'{where} ({type(module).__name__}) takes no argument {arg!r}; '
                         f'its forward takes {params}')
    return params.index(arg)


class StudentInputs:
    """Records arguments of student modules and gives them to the teacher.

    Args:
        student (nn.Module): The student.
        teacher (nn.Module): The teacher.
        specs (Sequence[dict]): ``dict(student=<module path>, student_arg=<name,
            defaults to arg>, teacher=<module path>, arg=<name>)``, or ``dict(student=
            ..., student_arg='rois', teacher='<rpn head path>.predict')`` each.
    """

    def __init__(self, student: nn.Module, teacher: nn.Module,
                 specs: Sequence[dict]) -> None:
        self.specs = [dict(spec) for spec in specs]
        self._teacher = teacher
        student_modules = dict(student.named_modules())
        teacher_modules = dict(teacher.named_modules())
        self._values: Dict[int, List[Any]] = {}
        self._recording = self._replacing = False
        self._handles, self._proposal_heads = [], []
        for i, spec in enumerate(self.specs):
            proposals = spec.get('teacher', '').endswith('.' + PROPOSALS)
            keys = {'student', 'teacher', 'student_arg'} if proposals else \
                {'student', 'teacher', 'arg'}
            if not keys - {'student_arg'} <= set(spec) <= keys | {'student_arg'}:
                raise ValueError(f'teacher_inputs[{i}] must have the keys {sorted(keys)}, '
                                 f'got {spec}; e.g. {EXAMPLE}')
            spec.setdefault('student_arg', spec.get('arg'))
            if spec['student'] not in student_modules:
                raise ValueError(_unknown_path_message(spec['student'], 'student',
                                                       student_modules))
            module = student_modules[spec['student']]
            pos = _argument_position(module, spec['student_arg'],
                                     f"teacher_inputs[{i}]: the student's {spec['student']}")
            self._handles.append(module.register_forward_pre_hook(
                partial(self._record, i, spec['student_arg'], pos), with_kwargs=True))
            path = spec['teacher'][:-len('.' + PROPOSALS)] if proposals else spec['teacher']
            if path not in teacher_modules:
                raise ValueError(_unknown_path_message(path, 'teacher', teacher_modules))
            module = teacher_modules[path]
            if proposals:
                if not hasattr(module, PROPOSALS):
                    raise ValueError(f'teacher_inputs[{i}]: the teacher\'s {path} '
                                     f'({type(module).__name__}) has no {PROPOSALS}(): '
                                     'name its RPN head')
                self._proposal_heads.append((i, module))
                continue
            pos = _argument_position(module, spec['arg'],
                                     f"teacher_inputs[{i}]: the teacher's {path}")
            self._handles.append(module.register_forward_pre_hook(
                partial(self._replace, i, spec['arg'], pos), with_kwargs=True))

    def _record(self, i: int, arg: str, pos: int, module: nn.Module, args: tuple,
                kwargs: dict) -> None:
        if self._recording:
            value = kwargs[arg] if arg in kwargs else args[pos]
            self._values[i].append(value.detach())

    def _next(self, i: int) -> Any:
        calls = self._values.get(i, [])
        if not calls:
            spec = self.specs[i]
            raise RuntimeError(
                f"the teacher's {spec['teacher']} was called more often than the "
                f"student's {spec['student']} was during the student's forward; there "
                f"is no student {spec['student_arg']!r} left to give it")
        return calls.pop(0)

    def _replace(self, i: int, arg: str, pos: int, module: nn.Module, args: tuple,
                 kwargs: dict):
        if not self._replacing:
            return None
        if arg in kwargs:
            return args, {**kwargs, arg: self._next(i)}
        return args[:pos] + (self._next(i), ) + args[pos + 1:], kwargs

    @contextmanager
    def recording(self) -> Iterator[None]:
        """Keep the student modules' arguments (for the next :meth:`replacing`)."""
        self._values = {i: [] for i in range(len(self.specs))}
        self._recording = True
        try:
            yield
        finally:
            self._recording = False
        for i, calls in self._values.items():
            if not calls:
                raise RuntimeError(
                    f"the student's {self.specs[i]['student']} was not called in its "
                    'forward, so the teacher has no student input to run on')

    @contextmanager
    def replacing(self) -> Iterator[None]:
        """Give the teacher the recorded student arguments (its RPN heads' ``predict``
        answers with them, for the duration only)."""
        def predict(i, head, x, batch_data_samples, *args, **kwargs):
            # The RPN still runs (a few convs), so its outputs can be distilled.
            head(x)
            return rois_to_proposals(self._next(i), len(batch_data_samples))

        for i, head in self._proposal_heads:
            head.predict = partial(predict, i, head)  # an instance attribute shadows it
        self._replacing = True
        try:
            yield
        finally:
            self._replacing = False
            self._values = {}
            for _, head in self._proposal_heads:
                del head.predict

    def remove(self) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles = []
