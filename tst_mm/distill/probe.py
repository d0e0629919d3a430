"""What a detector or segmentor emits, measured by one forward pass on a blank image.

Automatic distillation (:mod:`tst_mm.distill.auto`) pairs a student's outputs with a
teacher's. Names and configs do not say enough for that: which module emits a head's
class scores, at which strides, with how many priors per position. One forward pass of
each model on the same blank image does: :func:`probe_model` records the shape of the
neck's and the backbone's outputs, and finds, for each head, the module whose output
*is* (the same tensor object) the head's class scores at each level, so what is
distilled is a raw logit, never a score the head has already transformed.

The pass runs in eval mode (train mode where that fails) without gradient, on its own
random stream, and puts every module's mode and statistics back: building a model with
automatic distillation leaves its weights, statistics and the global random state as
they were.
"""
import inspect
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional, Sequence, Tuple

import torch
import torch.nn as nn
from torch import Tensor

from .recorders import _as_record

Shape = Tuple[int, ...]
# The side of the blank probe image; twice that if a model cannot run on it (DINO's
# queries, SSD300's extra layers), then a segmentor's own crop size (BEiT's position
# bias is tied to it).
PROBE_SIZES = (256, 512)
DENSE_HEADS = ('rpn_head', 'bbox_head')


class ProbeError(RuntimeError):
    """A model that does not run on the blank probe image."""


@dataclass
class DenseScores:
    """A dense detection head's class scores: one map per level."""
    modules: List[str]  # per level, the module that emits it
    shapes: List[Shape]  # per level, (channels, h, w)
    sigmoid: bool
    class_channels: int  # channels per prior: the classes (softmax: + background)


@dataclass
class SegLogits:
    """A segmentation head's class logits (its ``conv_seg``)."""
    head: str  # 'decode_head', 'auxiliary_head.1', ...
    module: str
    shape: Shape
    sigmoid: bool


@dataclass
class RoIScores:
    """A two-stage detector's RoI class logits and mask logits (first stage)."""
    extractor: str
    fc_cls: str
    classes: int
    mask_extractor: Optional[str] = None
    mask_logits: Optional[str] = None
    mask_channels: Optional[int] = None


@dataclass
class Probe:
    """What one model emits on the probe image."""
    neck: Optional[List[Shape]] = None
    backbone: Optional[List[Shape]] = None
    dense: Dict[str, DenseScores] = field(default_factory=dict)
    dense_skipped: Dict[str, str] = field(default_factory=dict)  # head -> why
    roi: Optional[RoIScores] = None
    roi_skipped: Optional[str] = None
    seg: List[SegLogits] = field(default_factory=list)
    seg_skipped: Dict[str, str] = field(default_factory=dict)
    query_based: bool = False
    # What the modules asked for output, as ModuleOutputRecorder.get gives it.
    records: Dict[str, Any] = field(default_factory=dict)


def class_names(model: nn.Module) -> List[str]:
    return [cls.__name__ for cls in type(model).__mro__]


def is_segmentor(model: nn.Module) -> bool:
    return 'BaseSegmentor' in class_names(model)


def _maps(output: Any) -> Optional[List[Shape]]:
    """Per-level shapes (C, H, W) of a feature output (a map or a sequence of maps)."""
    items = [output] if isinstance(output, Tensor) else output
    if not isinstance(items, (list, tuple)) or not items or \
            not all(isinstance(x, Tensor) and x.dim() == 4 for x in items):
        return None
    return [tuple(x.shape[1:]) for x in items]


def _samples(model: nn.Module, size: Tuple[int, int], num: int) -> list:
    meta = dict(img_shape=size, pad_shape=size, ori_shape=size, batch_input_shape=size,
                scale_factor=(1.0, 1.0))
    if is_segmentor(model):
        from mmseg.structures import SegDataSample
        return [SegDataSample(metainfo=meta) for _ in range(num)]
    import numpy as np
    from mmdet.structures import DetDataSample
    from mmdet.structures.mask import BitmapMasks
    from mmengine.structures import InstanceData

    # One object: some detectors' forward runs their head's loss (CondInst's mask
    # head takes the positives it finds).
    h, w = size
    lo, hi = min(h, w) // 8, min(h, w) // 2
    mask = np.zeros((1, h, w), dtype=np.uint8)
    mask[:, lo:hi, lo:hi] = 1
    samples = []
    for _ in range(num):
        sample = DetDataSample(metainfo=meta)
        sample.gt_instances = InstanceData(
            bboxes=torch.tensor([[lo, lo, hi, hi]], dtype=torch.float32),
            labels=torch.tensor([0]), masks=BitmapMasks(mask, h, w))
        samples.append(sample)
    return samples


class _Capture:
    """Forward hooks on the modules under ``prefixes``, and a wrapper around the
    ``forward`` of each of ``heads`` (detectors and segmentors call
    ``bbox_head.forward(x)`` / ``decode_head.forward(x)`` directly, which module hooks
    do not see)."""

    def __init__(self, model: nn.Module, prefixes: Sequence[str],
                 heads: Dict[str, nn.Module]) -> None:
        self.outputs: Dict[str, Any] = {}
        self.head_outputs: Dict[str, Any] = {}
        self._handles = []
        for name, module in model.named_modules():
            if any(name == p or name.startswith(p + '.') for p in prefixes):
                self._handles.append(module.register_forward_hook(self._hook(name)))
        self._patched = list(heads.values())
        for name, head in heads.items():
            def wrapped(*args, _forward=head.forward, _name=name, **kwargs):
                out = _forward(*args, **kwargs)
                self.head_outputs.setdefault(_name, out)
                return out

            head.forward = wrapped  # an instance attribute shadows the method

    def _hook(self, name: str):
        def hook(module, args, output):
            self.outputs.setdefault(name, []).append(output)  # one per call
        return hook

    def remove(self) -> None:
        for handle in self._handles:
            handle.remove()
        for head in self._patched:
            del head.forward


def _producers(capture: _Capture, tensor: Tensor, prefix: str) -> List[str]:
    """The modules under ``prefix`` whose output (in some call) is ``tensor`` itself."""
    return [name for name, calls in capture.outputs.items()
            if name.startswith(prefix + '.') and any(out is tensor for out in calls)]


def _deepest(names: List[str]) -> Optional[str]:
    # A container (Sequential) returns its last child's output: name the leaf.
    return max(names, key=lambda n: n.count('.')) if names else None


def _sigmoid_scores(head: nn.Module) -> Optional[bool]:
    if hasattr(head, 'use_sigmoid_cls'):
        return bool(head.use_sigmoid_cls)
    loss = getattr(head, 'loss_cls', None)
    if loss is not None and hasattr(loss, 'use_sigmoid'):
        return bool(loss.use_sigmoid)
    return None


def _dense_scores(model: nn.Module, name: str, capture: _Capture
                  ) -> Tuple[Optional[DenseScores], Optional[str]]:
    head = getattr(model, name, None)
    if not isinstance(head, nn.Module):
        return None, None
    kind = type(head).__name__
    params = list(inspect.signature(head.loss_by_feat).parameters) \
        if hasattr(head, 'loss_by_feat') else []
    out = capture.head_outputs.get(name)
    if not params or params[0] != 'cls_scores' or not isinstance(out, (tuple, list)) \
            or not out or not isinstance(out[0], (list, tuple)) or \
            not all(isinstance(x, Tensor) and x.dim() == 4 for x in out[0]):
        return None, (f'{kind} does not emit one class-score map per level '
                      '(not a dense head)')
    modules = []
    for level, scores in enumerate(out[0]):
        module = _deepest(_producers(capture, scores, name))
        if module is None:
            return None, (f'{kind} transforms its class scores after the last module '
                          f'(level {level} is no module\'s output), so they are not '
                          'logits to distil')
        modules.append(module)
    sigmoid = _sigmoid_scores(head)
    channels = getattr(head, 'cls_out_channels', None)
    if sigmoid is None or not channels:
        return None, f'{kind} does not say whether its scores are sigmoid or softmax'
    shapes = [tuple(x.shape[1:]) for x in out[0]]
    if any(s[0] % channels for s in shapes):
        return None, (f'{kind}\'s score channels {[s[0] for s in shapes]} are not a '
                      f'multiple of its {channels} classes per prior')
    return DenseScores(modules, shapes, sigmoid, channels), None


def _roi_scores(model: nn.Module) -> Tuple[Optional[RoIScores], Optional[str]]:
    roi_head = getattr(model, 'roi_head', None)
    if roi_head is None:
        return None, None
    kind = type(roi_head).__name__
    names = class_names(roi_head)
    # The student's RoIs replace the teacher's proposals: the RoI heads that take
    # plain boxes as proposals (not Sparse R-CNN's learned query features).
    if kind not in ('StandardRoIHead', 'CascadeRoIHead'):
        return None, (f'{kind} is not a StandardRoIHead / CascadeRoIHead, whose RoIs '
                      'the teacher can be given')
    if 'TwoStagePanopticSegmentor' in class_names(model):
        # Its forward makes proposals with predict_by_feat, not predict.
        return None, (f'{type(model).__name__} makes its proposals without its RPN '
                      "head's predict(), so the student's RoIs cannot replace them")
    cascade = 'CascadeRoIHead' in names
    prefix = 'roi_head.bbox_head.0' if cascade else 'roi_head.bbox_head'
    extractor = 'roi_head.bbox_roi_extractor.0' if cascade else 'roi_head.bbox_roi_extractor'
    modules = dict(model.named_modules())
    fc_cls = modules.get(prefix + '.fc_cls')
    if not isinstance(fc_cls, nn.Linear) or extractor not in modules:
        return None, f'{kind} has no {prefix}.fc_cls class layer'
    bbox_head = modules[prefix]
    if getattr(getattr(bbox_head, 'loss_cls', None), 'use_sigmoid', False) or \
            getattr(bbox_head, 'custom_cls_channels', False):
        return None, f'{type(bbox_head).__name__} does not score RoIs with a softmax'
    roi = RoIScores(extractor, prefix + '.fc_cls', fc_cls.out_features)
    logits = modules.get('roi_head.mask_head.conv_logits')
    if not cascade and getattr(roi_head, 'with_mask', False) and \
            'roi_head.mask_roi_extractor' in modules and \
            not getattr(roi_head, 'share_roi_extractor', False) and \
            isinstance(logits, nn.Conv2d):
        roi.mask_extractor = 'roi_head.mask_roi_extractor'
        roi.mask_logits = 'roi_head.mask_head.conv_logits'
        roi.mask_channels = logits.out_channels
    return roi, None


def _seg_heads(model: nn.Module) -> List[Tuple[str, nn.Module]]:
    heads = []
    for attr in ('decode_head', 'auxiliary_head'):
        head = getattr(model, attr, None)
        if isinstance(head, nn.ModuleList):
            # A cascade of decode heads: the last one makes the prediction.
            items = [(f'{attr}.{len(head) - 1}', head[-1])] if attr == 'decode_head' \
                else [(f'{attr}.{i}', h) for i, h in enumerate(head)]
            heads += items
        elif isinstance(head, nn.Module):
            heads.append((attr, head))
    return heads


def _seg_logits(name: str, head: nn.Module, output: Any, capture: _Capture,
                failure: Optional[str]) -> Tuple[Optional[SegLogits], Optional[str]]:
    kind = type(head).__name__
    conv = getattr(head, 'conv_seg', None)
    if not isinstance(conv, nn.Conv2d):
        return None, (f'{kind} has no conv_seg classifier of per-pixel logits (a '
                      'query-based head scores queries, which need a matching; a point '
                      'head scores sampled points)')
    if failure is not None or not isinstance(output, Tensor):
        return None, f'{kind} does not run on a blank image ({failure})'
    module = _deepest(_producers(capture, output, name))
    if module != f'{name}.conv_seg':
        return None, (f'{kind} transforms its conv_seg logits in forward, so its '
                      'output is not logits to distil')
    sigmoid = bool(getattr(head, 'use_sigmoid', False)) or conv.out_channels == 1
    return SegLogits(name, module, tuple(output.shape[1:]), sigmoid), None


def _forward(model: nn.Module, inputs: Tensor) -> Dict[str, str]:
    """The model's forward on ``inputs``; for a segmentor, each head apart, so that one
    that needs annotations (mmseg's MaskFormer heads) fails alone. Returns the heads
    that failed, with the reason."""
    samples = _samples(model, tuple(inputs.shape[-2:]), inputs.size(0))
    if not is_segmentor(model):
        model(inputs, samples, 'tensor')
        return {}
    failed = {}
    feats = model.extract_feat(inputs)
    heads = _seg_heads(model)
    # The forward reuses these features: one backbone pass, so a backbone or neck
    # records one output, as in training.
    model.extract_feat = lambda _: feats
    try:
        model(inputs, samples, 'tensor')  # the decode heads (a cascade chains them)
    except Exception as error:  # noqa: BLE001  (the reason a head is left out)
        failed.update({name: repr(error) for name, _ in heads
                       if name.startswith('decode_head')})
    finally:
        del model.extract_feat
    # Auxiliary heads run in the training loss only: run them on the features.
    for name, head in heads:
        if name.startswith('auxiliary_head'):
            try:
                head(feats)
            except Exception as error:  # noqa: BLE001
                failed[name] = repr(error)
    return failed


def _probe_sizes(model: nn.Module) -> List[Tuple[int, int]]:
    sizes = [(side, side) for side in PROBE_SIZES]
    crop = getattr(getattr(model, 'data_preprocessor', None), 'size', None)
    if crop and tuple(crop) not in sizes:
        sizes.append(tuple(crop))
    return sizes


def probe_model(model: nn.Module, size: Optional[Tuple[int, int]] = None,
                paths: Sequence[str] = ()) -> Probe:
    """Runs ``model`` once on a blank image and reports what it emits (see
    :class:`Probe`).

    Args:
        model (nn.Module): A built mmdet detector or mmseg segmentor.
        size (tuple[int, int], optional): The probe image's (h, w). Defaults to the
            first the model runs at of :data:`PROBE_SIZES` squared and a segmentor's
            crop size.
        paths (Sequence[str]): Modules whose outputs to return as well, in
            ``Probe.records`` (each module must exist).

    Raises:
        ProbeError: When the model's forward fails at every probe size.
    """
    sizes = [tuple(size)] if size else _probe_sizes(model)
    heads = dict(_seg_heads(model))
    for name in DENSE_HEADS:
        head = getattr(model, name, None)
        if isinstance(head, nn.Module) and hasattr(head, 'loss_by_feat'):
            heads[name] = head
    prefixes = ['backbone', 'neck', 'roi_head', *heads, *paths]
    modes = [(m, m.training) for m in model.modules()]
    param = next(model.parameters(), None)
    device = param.device if param is not None else torch.device('cpu')
    error = None
    # RoI heads are read from their structure: running them on a thousand proposals
    # (a cascade's mask heads, three times) would cost minutes on a CPU.
    roi_head = getattr(model, 'roi_head', None)
    skip_roi = isinstance(roi_head, nn.Module) and not any(
        p == 'roi_head' or p.startswith('roi_head.') for p in paths)
    # Eval mode first; then train mode (two images, for BatchNorm), where an eval-only
    # path has no kernel here (Guided Anchoring's masked convs on a CPU). Statistics
    # that train mode updates are put back.
    buffers = {name: b.clone() for name, b in model.named_buffers()}
    for training, (h, w) in [(t, size) for t in (False, True) for size in sizes]:
        capture = _Capture(model, prefixes, heads)
        if skip_roi:
            roi_head.forward = lambda *args, **kwargs: ()
        try:
            with torch.no_grad(), torch.random.fork_rng(devices=[]):
                model.train(training)
                torch.manual_seed(0)
                inputs = torch.zeros(1 + training, 3, h, w, device=device)
                failed = _forward(model, inputs)
            break
        except Exception as err:  # noqa: BLE001  (reported with the model's name)
            error = err
        finally:
            capture.remove()
            if skip_roi:
                del roi_head.forward
            for module, mode in modes:
                module.training = mode
            if training:
                for name, value in model.named_buffers():
                    value.copy_(buffers[name])
    else:
        raise ProbeError(f'{type(model).__name__} did not run on a blank image of '
                         f'{" or ".join(f"{h} x {w}" for h, w in sizes)} pixels '
                         f'({error!r})')
    return _summarise(model, capture, paths, failed)


def _summarise(model: nn.Module, capture: _Capture, paths: Sequence[str],
               failed: Dict[str, str]) -> Probe:
    probe = Probe()
    for path in paths:
        calls = capture.outputs.get(path)
        if calls:
            probe.records[path] = _as_record(calls[0]) if len(calls) == 1 else \
                [_as_record(out) for out in calls]
    probe.query_based = any(n in class_names(model) for n in (
        'DetectionTransformer', 'MaskFormer', 'SparseRCNN'))
    if getattr(model, 'neck', None) is not None:
        probe.neck = _maps((capture.outputs.get('neck') or [None])[0])
    if getattr(model, 'backbone', None) is not None:
        probe.backbone = _maps((capture.outputs.get('backbone') or [None])[0])
    for name in DENSE_HEADS:
        scores, why = _dense_scores(model, name, capture)
        if scores is not None:
            probe.dense[name] = scores
        elif why is not None and not probe.query_based:  # said once, for the decoder
            probe.dense_skipped[name] = why
    probe.roi, probe.roi_skipped = _roi_scores(model)
    for name, head in _seg_heads(model):
        logits, why = _seg_logits(name, head, capture.head_outputs.get(name), capture,
                                  failed.get(name))
        if logits is not None:
            probe.seg.append(logits)
        else:
            probe.seg_skipped[name] = why
    return probe
