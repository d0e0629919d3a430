"""Which mmdet / mmseg model families TSTDistiller can train: one config per family, one
augmenter step and one student step each, on a tiny in-memory batch of digits.

A family is a top-level folder of mmdet's or mmseg's installed configs
(``<site-packages>/mmdet/.mim/configs/<family>``; ``_base_`` is skipped). Each family's
config is picked by name: for mmdet the first COCO config (detection / instance
segmentation before panoptic), for mmseg the first Cityscapes one, else ADE20K, else the
first; among those, configs with a 101/152-layer or large backbone come last (cheaper
on a CPU), then the shortest name (usually the family's baseline). For each family, in
a forked process of its own with a time limit and one torch thread (its output in
``<work-dir>/logs/<repo>_<family>.log``; ``--jobs`` families at a time):

1. load the config; turn off pretrained weights and every other download
   (``init_cfg`` / ``pretrained`` / checkpoint fields), SyncBN -> BN, the data
   preprocessor's and batch augments' fixed sizes -> the test size; samplers take
   at most 64 RoIs / anchors per image (512 RoIs are most of a two-stage model's CPU
   time here);
2. build the plain model (column *builds*: ``no`` if even this fails) and check it is
   one detector / segmentor (:func:`tst_mm.distill.student_check.check_single_model`);
3. build ``TSTDistiller(student=model, teacher=<a copy>, teacher_ckpt=None)`` with the
   default augmenter objective (teacher task loss + student inverse task loss) and no
   distillation losses (*builds*: ``model only`` if this fails), and initialise its
   weights as the Runner does (``init_weights()``, pretrained parts off), plus the
   weights a model leaves to its checkpoint (:func:`init_left_to_checkpoint`);
4. one ``augment_step`` and one ``train_step`` on two generated 128 x 128 digit scenes
   (boxes and labels; bitmap masks / a label map where the config's training pipeline
   loads them; a label map for segmentors), digit classes mapped into the model's
   ``num_classes``. If a step fails and the plain student cannot compute its loss on
   that batch either (DINO's 900 queries need more tokens than 128 x 128 gives; SSD300
   needs about 300 pixels), the steps are redone at twice the size, up to
   ``--max-size``, and at the size the config's training pipeline resizes every
   image to, if it has one within that (SSD300's 300 x 300). After a failed step the
   plain student's loss is also tried in eval mode, the mode the teacher computes its
   task loss in.

Each failure is classified: a missing optional package (named), not a single
detector/segmentor, a task loss without an inverse (the loss class), a loss the inverse
did not reach, a time-out, a crash, or another error (type and first line).

Results are cached per family in ``<work-dir>/results.json`` (a rerun skips finished
families unless ``--force``, or when the family's picked config changed) and written as
a table to ``docs/zoo_coverage.md``. A family killed for memory (SIGKILL) is run once
more at the end, alone and on one scene instead of two (the student step's
``[x_aug ; x]`` is twice the batch it is given); one out of time, alone with twice the
time (one scene would not do: a batch of one image fails BatchNorm on pooled features,
as UperNet's).

Example::

    python tools/zoo_coverage.py        # every family (about 170)
    python tools/zoo_coverage.py --families retinanet mmseg/fcn mask_rcnn --force
    python tools/zoo_coverage.py --families mmdet/detr --force --timeout 300
    python tools/zoo_coverage.py --list  # the picked configs only
"""
import argparse
import copy
import json
import math
import multiprocessing as mp
import os
import os.path as osp
import re
import sys
import threading
import time
import traceback
from concurrent.futures import ThreadPoolExecutor
from contextlib import nullcontext
from typing import Callable, Dict, List, Optional, Tuple

REPO_ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))
REPOS = ('mmdet', 'mmseg')
DEFAULT_WORK_DIR = osp.join('work_dirs', 'zoo_coverage')
DEFAULT_OUT = osp.join('docs', 'zoo_coverage.md')
RESULTS = 'results.json'
# The hand-written part of the table's file starts at this heading: a rewrite keeps it.
NOTES_HEADING = '## Notes'
# Bump when what a run does changes, so that cached results are redone.
VERSION = 8
# RoI / anchor samplers take at most this many per image (see offline_model_cfg).
MAX_SAMPLED_ROIS = 64

# Result categories, in the order the summary lists them.
OK = 'ok'
CATEGORIES = {
    OK: 'build and take both steps',
    'dependency': 'need an optional package',
    'download': 'need a download (pretrained text encoder / weights)',
    'not single': 'are not a single detector / segmentor',
    'no model': 'have no model (dataset / schedule configs)',
    'unsupported loss': 'have a task loss without an inverse',
    'uninverted loss': 'compute a loss the inverse does not reach',
    'plain fails': 'fail as plain models too (e.g. an op without a CPU kernel)',
    'timeout': 'ran out of time',
    'crash': 'crashed',
    'error': 'fail with another error',
}
# Import names whose pip package is called otherwise.
PACKAGES = {'sklearn': 'scikit-learn', 'skimage': 'scikit-image', 'cv2': 'opencv-python',
            'PIL': 'pillow', 'yaml': 'pyyaml', 'fvcore': 'fvcore', 'mmcls': 'mmcls',
            'mmpretrain': 'mmpretrain', 'transformers': 'transformers',
            'fairscale': 'fairscale', 'timm': 'timm', 'clip': 'openai-clip',
            'ldm': 'stable-diffusion (ldm)', 'lap': 'lap', 'motmetrics': 'motmetrics',
            'mmtrack': 'mmtrack', 'mmcv._ext': 'mmcv with compiled ops (mmcv._ext)'}
# Names in a config's file name that mark a heavy backbone (picked last).
_HEAVY = re.compile(r'101|152|x50|resnext|swin-[bl]|vit-[bl]|large|huge|-l[_-]|_l[_-]|'
                    r'-x[_-]|beit-[bl]|mae-[bl]|convnext-[bl]|hrnetv2p-w(32|40|48)|'
                    r'dcn|1024x1024')


# --------------------------------------------------------------------- families ---
def config_root(repo: str) -> str:
    """``<site-packages>/<repo>/.mim/configs`` of the installed mmdet / mmseg."""
    import importlib
    package = importlib.import_module(repo)
    return osp.join(osp.dirname(package.__file__), '.mim', 'configs')


def _config_files(folder: str) -> List[str]:
    files = []
    for dirpath, dirnames, filenames in os.walk(folder):
        dirnames[:] = sorted(d for d in dirnames if d != '_base_')
        files += [osp.relpath(osp.join(dirpath, f), folder) for f in filenames
                  if f.endswith('.py')]
    return sorted(files)


def pick_config(repo: str, files: List[str]) -> Optional[str]:
    """The family's representative config (module docstring), or None if it has none."""
    def rank(path: str) -> Tuple:
        name = osp.basename(path)
        if repo == 'mmdet':
            dataset = 0 if 'coco' in name else 1
            dataset += 2 * any(t in name for t in ('panoptic', 'semi', 'lvis'))
        else:
            dataset = 0 if 'cityscapes' in name else 1 if 'ade' in name else 2
        return dataset, bool(_HEAVY.search(name)), path.count(os.sep), len(name), path

    return min(files, key=rank) if files else None


def find_families(selected: Optional[List[str]] = None) -> List[Dict[str, str]]:
    """``[{id, repo, family, config}]`` for every family (or those in ``selected``:
    folder names, which match in both repos, or ``repo/folder``)."""
    families = []
    for repo in REPOS:
        root = config_root(repo)
        for family in sorted(os.listdir(root)):
            if family == '_base_' or not osp.isdir(osp.join(root, family)):
                continue
            config = pick_config(repo, _config_files(osp.join(root, family)))
            if config is None:
                continue
            families.append(dict(id=f'{repo}/{family}', repo=repo, family=family,
                                 config=osp.join(family, config),
                                 path=osp.join(root, family, config)))
    if selected:
        wanted = set(selected)
        unknown = wanted - {f['id'] for f in families} - {f['family'] for f in families}
        if unknown:
            raise SystemExit(f'unknown families {sorted(unknown)}; see --list')
        families = [f for f in families if f['id'] in wanted or f['family'] in wanted]
    return families


# ----------------------------------------------------------------- model config ---
_DOWNLOAD_KEYS = ('pretrained', 'checkpoint', 'teacher_ckpt', 'pretrain_ckpt',
                  'pretrained_model_path', 'clip_pretrain', 'init_ckpt')


def offline_model_cfg(model: dict, size: Tuple[int, int]) -> dict:
    """``model`` without downloads, SyncBN or fixed sizes larger than ``size``, and with
    at most ``MAX_SAMPLED_ROIS`` samples per image in its samplers."""
    def walk(node):
        if isinstance(node, dict):
            out = {}
            for key, value in node.items():
                if key == 'init_cfg' and _is_pretrained(value):
                    value = None
                elif key in _DOWNLOAD_KEYS and isinstance(value, str):
                    value = None
                elif key == 'sampler' and isinstance(value, dict) and 'num' in value:
                    # 512 RoIs per image are most of a two-stage model's CPU time at
                    # this size; 64 take the same code path.
                    value = dict(value, num=min(value['num'], MAX_SAMPLED_ROIS))
                else:
                    value = walk(value)
                out[key] = value
            if out.get('type') in ('SyncBN', 'MMSyncBN', 'NaiveSyncBN'):
                out['type'] = 'BN'
            return out
        if isinstance(node, (list, tuple)):
            return type(node)(walk(v) for v in node)
        return node

    model = walk(model)
    preprocessor = model.get('data_preprocessor')
    if isinstance(preprocessor, dict):
        if preprocessor.get('size') is not None:  # mmseg: pad to the crop size
            preprocessor['size'] = tuple(size)
        for augment in preprocessor.get('batch_augments') or []:
            if 'size' in augment:  # BatchFixedSizePad (LSJ 1024 x 1024)
                augment['size'] = tuple(size)
            if 'random_size_range' in augment:  # YOLOX's BatchSyncRandomResize
                augment['random_size_range'] = tuple(size)
                augment['size_divisor'] = min(augment.get('size_divisor', 32), size[0])
    return model


def init_left_to_checkpoint(model) -> None:
    """Initialises the weights a model leaves to its pretrained checkpoint, which the
    tool does not load.

    mmdet's ``TridentConv`` allocates its weight uninitialised (``torch.Tensor(...)``)
    and only the first block of each trident stage has an ``init_cfg`` for it; the
    others are filled by the ImageNet checkpoint. Without one they computed on whatever
    memory they got (ok in one run, NaN in the next); here they get the Kaiming-uniform
    (fan-in) initialisation that first block's ``init_cfg`` gives.
    """
    import torch
    for module in model.modules():
        if type(module).__name__ == 'TridentConv':
            torch.nn.init.kaiming_uniform_(module.weight, mode='fan_in', nonlinearity='relu')
            if module.bias is not None:
                torch.nn.init.zeros_(module.bias)


def _init_plain(model) -> None:
    """``model.init_weights()``, as the Runner calls it; a model that cannot initialise
    without the pretrained checkpoint the tool leaves out (mmseg 1.2's SAN calls a
    missing ``super().init_weights()`` then) fails as a plain model."""
    try:
        model.init_weights()
    except Exception as exc:  # noqa: B902 (whatever it is, the plain model has it)
        error = RuntimeError(f"the plain model's init_weights() fails without its "
                             f'pretrained checkpoint: {type(exc).__name__}: {exc}')
        error.tst_plain_fails = True
        raise error from exc


def _is_pretrained(init_cfg) -> bool:
    cfgs = init_cfg if isinstance(init_cfg, (list, tuple)) else [init_cfg]
    return any(isinstance(c, dict) and ('checkpoint' in c or c.get('type') in (
        'Pretrained', 'PretrainedInit')) for c in cfgs)


def _num_classes(model: dict) -> int:
    """The smallest ``num_classes`` in the config (digits are mapped into it)."""
    found = []

    def walk(node):
        if isinstance(node, dict):
            for key, value in node.items():
                if key == 'num_classes' and isinstance(value, int) and value > 0:
                    found.append(value)
                walk(value)
        elif isinstance(node, (list, tuple)):
            for value in node:
                walk(value)

    walk(model)
    return min(found) if found else 10


def annotations(cfg, model: dict, repo: str) -> Tuple[bool, bool]:
    """``(with_mask, with_seg)``: does the config's training data hold instance masks /
    a semantic label map? From its LoadAnnotations steps, else from the model."""
    if repo == 'mmseg':
        return False, True
    steps = _train_steps(cfg, lambda kind: kind.endswith('LoadAnnotations') or
                         kind.endswith('LoadPanopticAnnotations'))
    if not steps:
        text = json.dumps(model, default=str)
        return '"mask_head"' in text or '"panoptic_head"' in text, _needs_sem_seg(model)
    panoptic = [str(s.get('type')).endswith('LoadPanopticAnnotations') for s in steps]
    return (any(s.get('with_mask', p) for s, p in zip(steps, panoptic)),
            any(s.get('with_seg', p) for s, p in zip(steps, panoptic)))


def _train_steps(cfg, wanted: Callable[[str], bool]) -> List[dict]:
    """The steps of the config's training pipelines whose type ``wanted`` accepts."""
    steps = []

    def walk(node):
        if isinstance(node, dict):
            if wanted(str(node.get('type', ''))):
                steps.append(node)
            for value in node.values():
                walk(value)
        elif isinstance(node, (list, tuple)):
            for value in node:
                walk(value)

    walk([cfg.get('train_dataloader'), cfg.get('train_pipeline')])
    return steps


def with_fixed_train_size(cfg, sizes: List[Tuple[int, int]]) -> List[Tuple[int, int]]:
    """``sizes`` plus the size the config's training pipeline resizes every image to
    (``Resize`` with ``keep_ratio=False``, e.g. SSD300's 300 x 300, whose anchors and
    PISA's sampling assume it), in order, if it is within the largest of ``sizes``."""
    fixed = {(int(h), int(w)) for step in _train_steps(cfg, lambda kind: kind == 'Resize')
             if step.get('keep_ratio') is False and isinstance(step.get('scale'), (list, tuple))
             for w, h in [step['scale']]}
    if len(fixed) != 1:
        return sizes
    size = fixed.pop()
    if size in sizes or max(size) > max(max(s) for s in sizes):
        return sizes
    return sorted(sizes + [size], key=max)


def _needs_sem_seg(model: dict) -> bool:
    """Does an mmdet model learn from a semantic label map (a semantic or panoptic head
    with stuff classes)?"""
    found = []

    def walk(node):
        if isinstance(node, dict):
            found.append(node.get('semantic_head') is not None or
                         (node.get('num_stuff_classes') or 0) > 0)
            for value in node.values():
                walk(value)
        elif isinstance(node, (list, tuple)):
            for value in node:
                walk(value)

    walk(model)
    return any(found)


# ----------------------------------------------------------------------- batches ---
def digit_batch(repo: str, size: Tuple[int, int], num_classes: int, with_mask: bool,
                with_seg: bool, batch: int = 2) -> dict:
    """``batch`` rendered digit scenes as a packed batch (BGR uint8, as mmcv loads images):
    boxes and labels, instance masks (``BitmapMasks``) if ``with_mask``, a label map if
    ``with_seg`` (always for mmseg; its bottom sixteenth ignored, 255)."""
    import numpy as np
    import torch
    from mmengine.structures import InstanceData, PixelData
    from tst_mm.datasets.digits_render import render_scene

    inputs, samples = [], []
    for i in range(batch):
        scene = render_scene(np.random.default_rng(i), size,
                             (size[0] // 5, size[0] // 3), (2, 4))
        image = torch.from_numpy(np.ascontiguousarray(scene.image[..., ::-1]))
        inputs.append(image.permute(2, 0, 1).contiguous())
        labels = [inst.label % num_classes for inst in scene.instances]
        meta = dict(img_shape=size, ori_shape=size, img_path=f'digits_{i}.png')
        # The label map: digit d is class d (mod num_classes), the background the class
        # after the digits (10 is Cityscapes' 'sky'), or 0 for fewer classes.
        background = 10 if num_classes > 10 else 0
        label_map = np.full(size, background, dtype=np.int64)
        for inst, label in zip(scene.instances, labels):
            label_map[inst.mask] = label
        if repo == 'mmseg':
            # Cityscapes and ADE label maps have ignored pixels (255: void, or ADE's
            # class 0); a model must compute its plain loss with them (mmseg 1.2's
            # class-weighted CrossEntropyLoss cannot: CGNet)
            label_map[-max(1, size[0] // 16):] = 255
            from mmseg.structures import SegDataSample
            sample = SegDataSample(metainfo=dict(meta, pad_shape=size,
                                                 reduce_zero_label=False, flip=False))
        else:
            from mmdet.structures import DetDataSample
            from mmdet.structures.bbox import HorizontalBoxes
            from mmdet.structures.mask import BitmapMasks
            sample = DetDataSample(metainfo=dict(meta, scale_factor=(1.0, 1.0), img_id=i,
                                                 flip=False, flip_direction=None))
            boxes = [[x, y, x + w, y + h] for x, y, w, h in
                     (inst.bbox for inst in scene.instances)]
            sample.gt_instances = InstanceData(
                bboxes=HorizontalBoxes(torch.tensor(boxes, dtype=torch.float32)),
                labels=torch.tensor(labels, dtype=torch.long))
            if with_mask:
                masks = np.stack([inst.mask for inst in scene.instances]).astype(np.uint8)
                sample.gt_instances.masks = BitmapMasks(masks, *size)
            if not with_seg:
                samples.append(sample)
                continue
        label_map = torch.from_numpy(label_map)[None]
        # mmseg's field is `data`, mmdet's (PackDetInputs, panoptic heads) `sem_seg`
        sample.gt_sem_seg = PixelData(data=label_map) if repo == 'mmseg' else \
            PixelData(sem_seg=label_map)
        samples.append(sample)
    return dict(inputs=inputs, data_samples=samples)


# ---------------------------------------------------------------- classification ---
def _first_line(exc: BaseException, limit: int = 220) -> str:
    text = str(exc).strip().splitlines()
    line = text[0] if text else ''
    if isinstance(exc, KeyError) and line.startswith(("'", '"')):
        line = line[1:-1] if line[-1:] == line[:1] else line
    return line if len(line) <= limit else line[:limit - 3] + '...'


def _package(chain: List[BaseException]) -> str:
    """The missing package an ImportError (or the errors it was raised from) names."""
    for err in reversed(chain):  # the innermost error names the module
        text = str(err)
        quoted = re.search(r"No module named '([\w.]+)'", text)
        name = quoted.group(1) if quoted else getattr(err, 'name', None)
        if not name:
            named = re.search(r"pip install\s+(?:-U\s+)?[\"']?([\w\-]+)|(\w[\w\-]*) is not "
                              r"installed|imports': \['(\w+)", text)
            name = next((g for g in named.groups() if g), None) if named else None
        if name:
            top = name if name in PACKAGES else name.split('.')[0]
            return PACKAGES.get(top, top)
    return _first_line(chain[0])


def classify(exc: BaseException) -> Tuple[str, str]:
    """``(category, reason)`` for an exception of a family's run."""
    text = str(exc)
    chain, seen = [], exc
    while seen is not None and len(chain) < 8:  # registries wrap errors of __init__
        chain.append(seen)
        seen = seen.__cause__ or seen.__context__
    if isinstance(exc, ValueError) and getattr(exc, 'tst_no_model', False):
        return 'no model', text
    for i, err in enumerate(chain):
        message = str(err)
        if isinstance(err, ImportError) or re.search(
                r'is not installed|please install|pip install', message, re.I):
            return 'dependency', f'missing {_package(chain[i:])}'
        if isinstance(err, NotImplementedError) and 'no inverse is defined' in message:
            loss = re.search(r'task loss (\S+)', message)
            return 'unsupported loss', f'no inverse for {loss.group(1) if loss else "?"}'
        if isinstance(err, NotImplementedError) and 'with and without' in message:
            keys = re.search(r'task losses (\{.*?\})', message)
            return 'uninverted loss', (f'not inverted: {keys.group(1)}' if keys
                                       else _first_line(err))
        if isinstance(err, NotImplementedError) and 'has no task-loss submodules' in message:
            return 'uninverted loss', ('no loss_* submodule to invert (the head computes '
                                       'its losses inline)')
        if isinstance(err, NotImplementedError) and 'whose losses are computed inline' \
                in message:
            heads = re.match(r'(\w+) derives from (\w+)', message)
            return 'uninverted loss', (f'{heads.group(1)} derives from {heads.group(2)}, '
                                       'whose inline losses are inverted' if heads
                                       else _first_line(err))
        if isinstance(err, OSError) and re.search(
                r'huggingface|hf\.co|resolve|connect|download|urlopen|Network', message,
                re.I):
            return 'download', f'{type(err).__name__}: {_first_line(err)}'
    if isinstance(exc, TypeError) and getattr(exc, 'tst_single_model', False):
        return 'not single', text
    return 'error', f'{type(exc).__name__}: {_first_line(exc)}'


# ---------------------------------------------------------------------- the run ---
def run_family(family: Dict[str, str], sizes: List[Tuple[int, int]], send,
               log_file: Optional[str] = None, scenes: int = 2) -> None:
    """Runs one family (in its own process) and sends its result dict; its output goes
    to ``log_file``. The steps run at the first of ``sizes`` at which the plain student
    computes its loss."""
    if log_file:
        fd = os.open(log_file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        sys.stdout.flush()
        sys.stderr.flush()
        os.dup2(fd, 1)
        os.dup2(fd, 2)
        os.close(fd)
    result = dict(builds='no', augment='-', student='-', category='error', reason='')
    stage, size = 'config', sizes[0]

    def reached(name: str) -> str:  # the parent keeps it if the run times out
        result.setdefault('times', {})[name] = round(time.time() - start, 1)
        send.send(('stage', dict(result, stage=name)))
        return name
    start = time.time()
    try:
        import torch
        torch.set_num_threads(1)
        from mmengine.config import Config, ConfigDict
        from mmengine.logging import MessageHub
        from mmengine.model import revert_sync_batchnorm
        from mmengine.optim import build_optim_wrapper
        from mmengine.registry import DefaultScope, MODELS
        import tst_mm  # noqa: F401
        from tst_mm.distill.student_check import check_single_model

        repo = family['repo']
        cfg = Config.fromfile(family['path'])
        if not isinstance(cfg.get('model'), dict):
            exc = ValueError('the config has no model (a dataset / schedule config)')
            exc.tst_no_model = True
            raise exc
        scope = cfg.get('default_scope', repo) or repo
        raw_model = cfg.model.to_dict()
        with_mask, with_seg = annotations(cfg, raw_model, repo)
        sizes = with_fixed_train_size(cfg, sizes)
        with DefaultScope.overwrite_default_scope(scope):
            stage = reached('model')
            with MODELS.switch_scope_and_registry(scope) as registry:
                model_cls = registry.get(raw_model['type'])
            if model_cls is not None:  # a tracker or a wrapper is refused unbuilt
                _check_single(model_cls, check_single_model)
            # ConfigDict: heads read their train_cfg by attribute (train_cfg.rpn)
            model = MODELS.build(ConfigDict(offline_model_cfg(raw_model, size)))
            result['builds'] = 'model only'
            _check_single(model, check_single_model)
            _init_plain(model)
            del model
            for sz in sizes:
                size = sz
                model_cfg = ConfigDict(offline_model_cfg(raw_model, sz))
                stage = reached('distiller')
                # Random init decides some outcomes (PAA's GMM fit fails for some plain
                # inits too): the same seed for every family makes the table repeatable.
                torch.manual_seed(0)
                distiller = MODELS.build(dict(
                    type='TSTDistiller', student=model_cfg,
                    teacher=copy.deepcopy(model_cfg), teacher_ckpt=None))
                distiller.init_weights()  # as the Runner does
                init_left_to_checkpoint(distiller)
                distiller = revert_sync_batchnorm(distiller)
                result['builds'] = 'yes'
                optim_wrapper = build_optim_wrapper(distiller, dict(
                    constructor='TSTOptimWrapperConstructor',
                    student=dict(type='OptimWrapper',
                                 optimizer=dict(type='SGD', lr=1e-4, momentum=0.9)),
                    augmenter=dict(type='OptimWrapper',
                                   optimizer=dict(type='SGD', lr=1e-3, momentum=0.9))))
                distiller.train()
                # As in a Runner's first iteration (RuntimeInfoHook): YOLOX's batch
                # resize reads the iteration, TOOD's head the epoch
                hub = MessageHub.get_current_instance()
                hub.update_info('iter', 0)
                hub.update_info('epoch', 0)
                batch = digit_batch(repo, sz, _num_classes(model_cfg), with_mask, with_seg,
                                    scenes)
                try:
                    stage = reached('augment step')
                    log = distiller.augment_step(copy.deepcopy(batch), optim_wrapper)
                    result['augment'] = _step_note(log, 'augment.loss')
                    stage = reached('student step')
                    # The student's weights before its update, for the distillation
                    # summary's gradients (a random HTC's first update can overflow).
                    before = copy.deepcopy(distiller.student.state_dict())
                    log = distiller.train_step(copy.deepcopy(batch), optim_wrapper)
                    result['student'] = _step_note(log, 'loss')
                    for stage in ('augment step', 'student step'):
                        if result[stage.split()[0]] != 'ok':  # a skipped update
                            raise FloatingPointError(f'a non-finite loss in the {stage}')
                    stage = reached('distillation')
                    distiller.student.load_state_dict(before)
                    del before
                    result['distill'] = distillation_summary(distiller, batch, log)
                except Exception as exc:  # noqa: B902
                    note, plain_ok = plain_loss_note(distiller.student, batch)
                    if not plain_ok and sz != sizes[-1]:
                        # the model itself needs larger images: try the next size
                        result.update(augment='-', student='-')
                        continue
                    exc.tst_note, exc.tst_plain_fails = note, not plain_ok
                    raise
                break
        result['step_size'] = list(sz)
        result.update(category=OK, reason='' if sz == sizes[0] else
                      f'at {sz[0]} x {sz[1]} (the plain model fails at smaller sizes)')
    except BaseException as exc:  # noqa: B902 (everything is a result here)
        category, reason = classify(exc)
        if stage in ('augment step', 'student step'):
            result['augment' if stage == 'augment step' else 'student'] = 'fails'
            reason += getattr(exc, 'tst_note', '')
            if size != sizes[0]:
                reason += f' (at {size[0]} x {size[1]}: the plain model fails at smaller sizes)'
        elif stage == 'distiller':
            reason = f'TSTDistiller: {reason}' if category == 'error' else reason
            if 'did not run on a blank image' in str(exc):
                # Automatic distillation's probe: does the plain model run at all?
                with DefaultScope.overwrite_default_scope(scope):
                    note, plain_ok = plain_loss_note(
                        MODELS.build(ConfigDict(offline_model_cfg(raw_model, size))),
                        digit_batch(repo, size, _num_classes(model_cfg), with_mask,
                                    with_seg, scenes))
                reason += note
                exc.tst_plain_fails = not plain_ok
        if category == 'error' and getattr(exc, 'tst_plain_fails', False):
            category = 'plain fails'
        if category == 'not single':
            result['builds'] = 'n/a'
        result.update(category=category, reason=reason, stage=stage,
                      traceback=traceback.format_exc(limit=-6))
    result['seconds'] = round(time.time() - start, 1)
    if log_file:
        print(result.get('traceback', ''), flush=True)
    send.send(('done', result))
    send.close()


def distillation_summary(distiller, batch: dict, log: dict) -> dict:
    """What automatic distillation chose for a family and how it did in the student
    step: each loss (logits or features) with its value and its value before the
    automatic scale, the distillation total over the task loss (both), whether each
    loss's gradient reaches the student's backbone, and what was left out and why."""
    import torch

    def value(key):
        return float(log[key].detach() if hasattr(log[key], 'detach') else log[key])

    choice = distiller.auto_distillation
    scales = dict(zip(distiller.auto_scales.names, distiller.auto_scales.scale.tolist()))
    task = sum(value(k) for k in log if k.startswith('student.')
               and 'loss' in k.split('.', 1)[1])
    losses = {}
    for name, loss in distiller.distill_losses.items():
        scaled = value(f'distill.{name}')
        losses[name] = dict(
            kind='features' if type(loss).__name__ == 'FeatureMimic' else 'logits',
            student=distiller.loss_paths[name][0], value=scaled,
            raw=scaled / scales[name] if scales.get(name) else scaled)
    # Each loss's own gradient in the student's backbone weights, at the weights before
    # the step (whose own gradient its update used and cleared). All of them: at init
    # a zero-initialised residual branch (mmdet's ResNet) passes none to its convs.
    backbone = [p for p in distiller.student.backbone.parameters() if p.requires_grad] \
        if hasattr(distiller.student, 'backbone') else []
    if backbone and losses:
        data = distiller.data_preprocessor(copy.deepcopy(batch), True)
        outputs = distiller._student_losses(distiller.student, data['inputs'],
                                            data['data_samples'])
        for name in losses:
            grads = [g for g in torch.autograd.grad(
                outputs[f'distill.{name}'], backbone, retain_graph=True,
                allow_unused=True) if g is not None]
            losses[name]['reaches_backbone'] = bool(grads) and all(
                bool(torch.isfinite(g).all()) for g in grads) and \
                sum(float(g.abs().sum()) for g in grads) > 0
    total = sum(x['value'] for x in losses.values())
    raw = sum(x['raw'] for x in losses.values())
    return dict(losses=losses, task=task,
                ratio=total / task if task else None, raw_ratio=raw / task if task else None,
                left_out=[f'{what}: {why}' for what, why in
                          (choice.left_out if choice is not None else [])])


def plain_loss_note(student, batch: dict) -> Tuple[str, bool]:
    """Whether the student alone computes its loss on the clean batch, in train mode and
    in the teacher's loss mode (train mode, norms and dropout in eval mode), after a failed
    step: tells a TST problem from one of the model or of this batch. Returns the note
    and whether train mode worked."""
    import torch

    from tst_mm.distill.freeze import loss_mode

    def fails(as_teacher: bool) -> Optional[str]:
        student.train(True)
        try:
            with torch.no_grad(), loss_mode(student) if as_teacher else nullcontext():
                data = student.data_preprocessor(copy.deepcopy(batch), True)
                losses = student(data['inputs'], data['data_samples'], 'loss')
            values = [v for k, v in losses.items() if 'loss' in k]
            finite = all(bool(torch.isfinite(v).all()) for v in values
                         if isinstance(v, torch.Tensor))
            return None if finite else 'a non-finite loss'
        except Exception as exc:  # noqa: B902
            return type(exc).__name__

    in_train = fails(False)
    if in_train:
        return f' (the plain student fails on the clean batch too: {in_train})', False
    as_teacher = fails(True)
    if as_teacher:
        return (' (the plain student computes its loss in train mode but not with its '
                f'norms and dropout in eval mode, as the teacher runs: {as_teacher})'), True
    return ' (the plain student computes its loss on the clean batch)', True


def _check_single(model, check) -> None:
    try:
        check(model)
    except TypeError as exc:
        exc.tst_single_model = True  # not an error of the model: a category
        raise


def _step_note(log: dict, key: str) -> str:
    value = log.get(key)
    try:
        value = float(value.detach() if hasattr(value, 'detach') else value)
    except (TypeError, ValueError):
        return 'ok'
    return 'ok' if math.isfinite(value) else 'ok (non-finite loss, skipped)'


def step_sizes(size: Tuple[int, int], max_size: int) -> List[Tuple[int, int]]:
    """``size``, then doubled while the longer side stays within ``max_size``."""
    sizes = [tuple(size)]
    while max(sizes[-1]) * 2 <= max_size:
        sizes.append((sizes[-1][0] * 2, sizes[-1][1] * 2))
    return sizes


_FORK_LOCK = threading.Lock()


def run_in_subprocess(family: Dict[str, str], sizes: List[Tuple[int, int]],
                      timeout: float, log_file: Optional[str] = None,
                      scenes: int = 2) -> dict:
    """:func:`run_family` in a forked process; a time-out or a crash is a result too."""
    ctx = mp.get_context('fork')  # the imports are paid for once, in the parent
    receive, send = ctx.Pipe(duplex=False)
    proc = ctx.Process(target=run_family, args=(family, sizes, send, log_file, scenes),
                       daemon=True)
    start = time.time()
    with _FORK_LOCK:  # one fork at a time when families run in parallel (--jobs)
        proc.start()
    send.close()
    result, partial = None, dict(builds='no', augment='-', student='-', stage='start')
    while result is None:
        left = timeout - (time.time() - start)
        try:
            if left <= 0 or not receive.poll(left):
                break
            kind, message = receive.recv()
        except EOFError:  # died before sending its result
            break
        if kind == 'done':
            result = message
        else:
            partial = message
    timed_out = result is None and time.time() - start >= timeout
    # a process that died is waited for (the OOM killer takes seconds to reap it), so
    # that its exit code is known; one out of time is not
    proc.join(0.5 if timed_out else 30)
    if proc.is_alive():
        proc.kill()
        proc.join()
    if result is None:
        stage = partial.pop('stage')
        if timed_out:
            reason = f'no result within {timeout:g} s (in: {stage})'
        elif proc.exitcode == -9:  # SIGKILL: what Linux's out-of-memory killer sends
            reason = f'killed in: {stage} (SIGKILL: most likely out of memory)'
            partial['killed'] = True
        else:
            reason = f'the process died in: {stage} (exit code {proc.exitcode})'
        result = dict(partial, category='timeout' if timed_out else 'crash',
                      reason=reason, stage=stage)
        if stage in ('augment step', 'student step'):
            result['augment' if stage == 'augment step' else 'student'] = 'fails'
        result['seconds'] = round(time.time() - start, 1)
    return result


# ------------------------------------------------------------------- the report ---
def load_results(path: str) -> dict:
    if not osp.exists(path):
        return {}
    with open(path, encoding='utf-8') as f:
        return json.load(f)


def save_results(path: str, results: dict) -> None:
    os.makedirs(osp.dirname(path) or '.', exist_ok=True)
    tmp = path + '.tmp'
    with open(tmp, 'w', encoding='utf-8') as f:
        json.dump(results, f, indent=1, sort_keys=True)
    os.replace(tmp, path)


def _cell(text: str) -> str:
    return str(text).replace('|', '\\|').replace('\n', ' ')


def summary(results: List[dict], not_run: int = 0) -> List[str]:
    counts: Dict[str, int] = {}
    for r in results:
        counts[r['category']] = counts.get(r['category'], 0) + 1
    builds = sum(r['builds'] in ('yes', 'model only') for r in results)
    # The target: every family whose plain model builds and computes its loss here.
    target = builds - counts.get('plain fails', 0)
    deps: Dict[str, List[str]] = {}
    for r in results:
        if r['category'] == 'dependency':
            deps.setdefault(r['reason'].replace('missing ', ''), []).append(r['id'])
    lines = [f"**{counts.get(OK, 0)} of {target} families build and take both steps** "
             f'(of {len(results)} families, {builds} build in plain mmdet / mmseg here as a '
             f'single detector / segmentor, and {target} of those compute their plain loss '
             'here).']
    if deps:
        lines.append(f"{counts['dependency']} more need an optional package: " + '; '.join(
            f"{pkg} ({', '.join(ids)})" for pkg, ids in sorted(deps.items())) + '.')
    lines.append('By outcome: ' + ', '.join(
        f'{counts[c]} {text}' for c, text in CATEGORIES.items() if counts.get(c)) + '.')
    if not_run:
        lines.append(f'**Incomplete**: {not_run} more families have no result yet (the '
                     'walk was stopped); `make zoo-coverage` continues it.')
    return lines


def _modules(paths) -> str:
    if isinstance(paths, str):
        return paths
    return f'{paths[0]} .. {paths[-1]}'


def distillation_cells(distill: Optional[dict]) -> List[str]:
    """The table's distillation columns for one family (``-`` where it has none)."""
    if not distill:
        return ['-'] * 4

    def listed(kind):
        names = [_modules(x['student']) + ('' if x.get('reaches_backbone', True)
                                            else ' (no gradient to the backbone)')
                 for x in distill['losses'].values() if x['kind'] == kind]
        return ', '.join(names) or '-'
    ratio = '-' if distill['ratio'] is None else \
        f"{distill['ratio']:.2f} ({distill['raw_ratio']:.3g})"
    return [listed('logits'), listed('features'), ratio,
            '; '.join(distill['left_out']) or '-']


def distillation_summary_lines(results: List[dict]) -> List[str]:
    ok = [r for r in results if r['category'] == OK]
    reach = [r for r in ok if any(x.get('reaches_backbone') and x['value'] > 0
                                  for x in (r.get('distill') or {}).get('losses', {})
                                  .values())]
    logits = [r for r in ok if any(x['kind'] == 'logits' for x in
                                   (r.get('distill') or {}).get('losses', {}).values())]
    ratios = [r['distill']['ratio'] for r in ok if (r.get('distill') or {}).get('ratio')
              is not None]
    raws = [r['distill']['raw_ratio'] for r in ok if (r.get('distill') or {}).get(
        'raw_ratio') is not None]
    missing = [r['id'] for r in ok if r not in reach]
    lines = [f'**Distillation**: {len(reach)} of the {len(ok)} families that take both '
             'steps distil with automatic losses (no `distill_losses` written) whose '
             "gradient reaches the student's backbone; "
             f'{len(logits)} of them distil logits as well as features.']
    if ratios:
        lines.append(f'At the first student step the distillation total is '
                     f'{min(ratios):.2f}-{max(ratios):.2f} times the task loss (the '
                     'automatic scales keep it at most 10x, `auto_distill_ratio`); before '
                     f'those scales it was {min(raws):.3g}-{max(raws):.3g} times.')
    if missing:
        lines.append('Without a distillation loss reaching the backbone: ' +
                     ', '.join(missing) + '.')
    return lines


def kept_notes(path: str) -> List[str]:
    """The lines of ``path`` from :data:`NOTES_HEADING` on (none if it has none)."""
    if not osp.isfile(path):
        return []
    with open(path, encoding='utf-8') as f:
        lines = f.read().splitlines()
    return lines[lines.index(NOTES_HEADING):] if NOTES_HEADING in lines else []


def write_markdown(path: str, results: List[dict], size: Tuple[int, int],
                   not_run: int = 0) -> None:
    """Writes the table to ``path``, keeping the notes a person wrote after it."""
    notes = kept_notes(path)
    kept = ' (the [notes](#notes) after it are hand-written and kept)' if notes else ''
    lines = [
        '# Model-zoo coverage', '',
        'The table is written by `tools/zoo_coverage.py` (`make zoo-coverage`); do not edit '
        f'it by hand{kept}. One '
        'config per family of the installed mmdet / mmseg configs, built as '
        '`TSTDistiller(student=model, teacher=<copy>, teacher_ckpt=None)` with the '
        'default augmenter objective, then one augmenter step and one student step on '
        f'two generated {size[0]} x {size[1]} digit scenes (CPU, one thread, no '
        'downloads). *builds*: `yes` (the distiller), `model only` (the plain model '
        'builds, the distiller does not) or `no`.', '',
        *summary(results, not_run), '',
        *distillation_summary_lines(results), '',
        '| family | config | builds | augment step | student step | distilled: logits '
        '| features | distill / task (unscaled) | left out (why) | reason |',
        '| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |']
    for r in results:
        reason = r['reason'] if r['category'] == OK or r['category'] in r['reason'] \
            else f"{r['category']}: {r['reason']}"
        lines.append('| ' + ' | '.join(_cell(c) for c in (
            r['id'], r['config'], r['builds'], r['augment'], r['student'],
            *distillation_cells(r.get('distill')), reason)) + ' |')
    if notes:
        lines += ['', *notes]
    os.makedirs(osp.dirname(path) or '.', exist_ok=True)
    with open(path, 'w', encoding='utf-8') as f:
        f.write('\n'.join(lines) + '\n')


# -------------------------------------------------------------------------- main ---
def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--families', nargs='+', metavar='NAME',
                        help='only these families: folder names (both repos) or '
                             'repo/folder, e.g. retinanet mmseg/fcn')
    parser.add_argument('--work-dir', default=DEFAULT_WORK_DIR,
                        help='where results.json and each family\'s log (logs/) are kept '
                             f'(default {DEFAULT_WORK_DIR})')
    parser.add_argument('--out', default=DEFAULT_OUT,
                        help=f'the markdown table (default {DEFAULT_OUT})')
    parser.add_argument('--timeout', type=float, default=600,
                        help='seconds per family (default 600: the ViT-B of mmseg/mae '
                        'needs 512 x 512 and about 400 s on one core)')
    parser.add_argument('--size', type=int, nargs=2, default=(128, 128),
                        metavar=('H', 'W'), help='image size (default 128 128)')
    parser.add_argument('--max-size', type=int, default=512,
                        help='a model whose plain loss fails at --size is tried at twice '
                             'the size, up to this longer side (default 512)')
    parser.add_argument('--jobs', type=int, default=min(2, os.cpu_count() or 1),
                        help='families run at the same time, one process (one torch '
                        'thread) each (default: 2, or 1 on a one-core machine)')
    parser.add_argument('--force', action='store_true',
                        help='rerun families whose result is cached')
    parser.add_argument('--list', action='store_true',
                        help='print the families and their picked configs, run nothing')
    return parser.parse_args(argv)


def import_once() -> None:
    """Imports torch, mmdet, mmseg and tst_mm in this process: each family's process
    forks from it with them loaded."""
    import torch
    torch.set_num_threads(1)
    import mmdet.models  # noqa: F401
    import mmseg.models  # noqa: F401
    import tst_mm  # noqa: F401
    from mmdet.utils import register_all_modules as register_mmdet
    from mmseg.utils import register_all_modules as register_mmseg
    register_mmdet(init_default_scope=False)
    register_mmseg(init_default_scope=False)


def main(argv=None) -> int:
    args = parse_args(argv)
    os.environ.setdefault('OMP_NUM_THREADS', '1')
    families = find_families(args.families)
    if args.list:
        for family in families:
            print(f"{family['id']:32s} {family['config']}")
        return 0
    size = tuple(args.size)
    cache = osp.join(args.work_dir, RESULTS)
    results = load_results(cache)
    if args.jobs < 1:
        raise SystemExit(f'--jobs must be >= 1, got {args.jobs}')
    total, start = len(families), time.time()
    todo = []
    for i, family in enumerate(families, 1):
        cached = results.get(family['id'])
        fresh = cached is not None and cached.get('config') == family['config'] and \
            cached.get('version') == VERSION and cached.get('size') == list(size)
        if fresh and not args.force:
            print(f"[{i}/{total}] {family['id']}: {cached['category']} (cached) "
                  f"{cached.get('reason', '')}", flush=True)
        else:
            todo.append((i, family))
    if todo:
        import_once()
    saving = threading.Lock()

    def run(i: int, family: Dict[str, str], scenes: int = 2, retry: str = '') -> None:
        key = family['id']
        print(f"[{i}/{total}] {key} ({family['config']}) ..." +
              (f' (again, alone, {retry})' if retry else ''), flush=True)
        log_file = osp.join(args.work_dir, 'logs', key.replace('/', '_') + '.log')
        os.makedirs(osp.dirname(log_file), exist_ok=True)
        timeout = args.timeout * (2 if retry and scenes == 2 else 1)
        result = run_in_subprocess(family, step_sizes(size, args.max_size), timeout,
                                   log_file, scenes)
        if retry:
            result['reason'] = ' '.join(filter(None, [result['reason'], f'(alone, {retry})']))
        result.update(id=key, config=family['config'], version=VERSION, size=list(size))
        with saving:
            results[key] = result
            save_results(cache, results)
        print(f"[{i}/{total}] {key}: {result['category']} {result['reason']} "
              f"({result['seconds']:.1f} s)", flush=True)

    # Threads only wait on their family's process; each family runs in its own.
    with ThreadPoolExecutor(max_workers=args.jobs) as pool:
        for done in [pool.submit(run, i, family) for i, family in todo]:
            done.result()
    # A family out of memory (V3Det on this 24 GB machine) gets one more run by itself on
    # one scene: the same code paths on half the student batch. One out of time
    # (mmseg/mae's ViT-B at 512 x 512 beside another family) gets twice the time alone.
    for i, family in todo:
        result = results[family['id']]
        if result.get('killed'):
            run(i, family, scenes=1, retry="on one scene: out of memory on two, the "
                "student step's [x_aug ; x] is twice the batch")
        elif result['category'] == 'timeout':
            run(i, family, retry=f'with {2 * args.timeout:g} s: out of time')
    # The table: every family with a current result, also those of earlier runs.
    picked = {f['id']: f['config'] for f in find_families()}
    shown = sorted((r for r in results.values() if picked.get(r['id']) == r['config'] and
                    r.get('version') == VERSION and r.get('size') == list(size)),
                   key=lambda r: r['id'])
    not_run = len(picked) - len(shown)
    write_markdown(args.out, shown, size, not_run)
    print('\n'.join(summary(shown, not_run)))
    print(f'{len(families)} families in {time.time() - start:.0f} s; table: {args.out}, '
          f'cache: {cache}')
    return 0


if __name__ == '__main__':
    sys.exit(main())
