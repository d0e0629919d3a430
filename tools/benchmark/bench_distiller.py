"""Benchmark the TSTDistiller's phases against student-alone and plain-KD training.

    python tools/benchmark/bench_distiller.py [--device cpu] [--height 512] [--width 512]
        [--batch 2] [--warmup 1] [--iters 5] [--amp] [--no-memory] [--no-breakdown]
        [--profile] [--json FILE]

Models: mmdet's RetinaNet-R50 student (``retinanet_r50_fpn_2x_coco``) and RetinaNet-R101
teacher (``retinanet_r101_fpn_2x_coco``), 80 classes, random weights (``init_cfg=None`` on
the backbones: nothing is downloaded), wrapped in a ``TSTDistiller`` with the COCO distill
losses (``BinaryKLDivergence`` on ``bbox_head.retina_cls``, ``FeatureMimic`` on ``neck``)
and the ``TSTOptimWrapperConstructor`` optim wrappers (student: mmdet's SGD; augmenter: SGD
lr 0.01, momentum 0.9, clip 20); ``--amp`` makes both ``AmpOptimWrapper`` (as
``tools/train.py --amp`` does; CUDA only: mmengine's AMP wrapper refuses the CPU).
Input: ``--batch`` (N) synthetic images of ``--height`` x ``--width`` with 5 random boxes
each, the same images for every mode.

Modes, each one full optimisation step (forward, backward, optimizer step):

- ``student``  the student alone (``student.train_step``) on 2N images: the N images
               twice, as many as the TST student sees;
- ``kd``       plain KD: ``distiller.train_step`` with the augmenter skipped, the student
               views being the clean batch twice, ``[x ; x]`` (teacher forward, recorders,
               distill losses, student update: exactly TST's student step minus the
               augmenter);
- ``tst``      the TST student phase, ``distiller.train_step``: ``[x_aug ; x]``, the
               augmenter sampled without gradient;
- ``augment``  the TST augmenter phase, ``distiller.augment_step`` on the N images.

Timing: ``--warmup`` rounds, then ``--iters`` rounds; each round runs every mode once,
in an order rotated from round to round, so that load from other processes hits all
modes alike; each mode's seconds/iteration is the median over rounds. Every mode of a
round uses the same random seed, so ``tst`` and ``augment`` draw the same policy.

Peak memory: on CPU each mode runs ``--mem-iters`` steps in its own fresh subprocess
(started before the main process builds anything); the number is the peak RSS of those
steps minus the RSS once the models, optimizers and batch are built: what training in
that mode adds to the process (activations and autograd graph, gradients, the student's
SGD momentum buffers, plus whatever the allocator keeps). The peak is ``VmHWM`` after
resetting the high-water mark at the end of the build (``/proc/self/clear_refs``), which
equals ``getrusage(RUSAGE_SELF).ru_maxrss`` whenever the steps, not the build, set the
process's peak (both are printed; without the reset the number is ``ru_maxrss``). On
CUDA: ``torch.cuda.max_memory_allocated`` minus the memory allocated before the step
(after warm-up, so the optimizer state is already there), per mode, after
``reset_peak_memory_stats``.

Learning rate: the student steps at lr 0 by default (``--student-lr``). A step costs
the same whatever the rate (SGD still computes its momentum and weight decay), and every
round then times the same weights: repeated full-rate steps on one random batch, from
random weights, without the config's warm-up, are a divergence test rather than a
benchmark. ``--trace N`` prints what the steps do at a given rate.

On a shared CPU, ``--threads 1`` gives far steadier numbers than two OpenMP threads
competing with other processes for two cores.

Breakdown (unless ``--no-breakdown``): the TST and KD student steps timed in parts with
forward hooks on the augmenter, the teacher and the student (the rest of the step is the
distill losses, backward and the optimizer step), and the teacher's forward in
``'loss'`` mode (what ``train_step`` runs) against ``'tensor'`` mode (the same recorded
outputs without the teacher's own, discarded, task loss). ``--profile`` prints
``torch.profiler``'s top operators of one ``tst`` and one ``kd`` step.
"""
import argparse
import contextlib
import copy
import gc
import json
import os
import resource
import statistics
import subprocess
import sys
import time

import torch

MODES = ('student', 'kd', 'tst', 'augment')
LABELS = dict(student='student alone (2N images)', kd='plain KD, [x ; x]',
              tst='TST student phase, [x_aug ; x]', augment='TST augmenter phase (N)')
STUDENT_CFG = 'mmdet::retinanet/retinanet_r50_fpn_2x_coco.py'
TEACHER_CFG = 'mmdet::retinanet/retinanet_r101_fpn_2x_coco.py'


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--device', default='cpu')
    parser.add_argument('--height', type=int, default=512)
    parser.add_argument('--width', type=int, default=512)
    parser.add_argument('--batch', type=int, default=2,
                        help='N images per batch; the student sees 2N (default 2)')
    parser.add_argument('--warmup', type=int, default=1, help='untimed rounds')
    parser.add_argument('--iters', type=int, default=5,
                        help='timed rounds (one step of every mode per round)')
    parser.add_argument('--mem-iters', type=int, default=2,
                        help='steps per mode for the CPU peak-RSS subprocesses')
    parser.add_argument('--threads', type=int, default=None,
                        help='torch.set_num_threads (default: torch\'s own choice)')
    parser.add_argument('--seed', type=int, default=0)
    parser.add_argument('--no-memory', action='store_true')
    parser.add_argument('--no-breakdown', action='store_true')
    parser.add_argument('--profile', action='store_true')
    parser.add_argument('--amp', action='store_true',
                        help='AmpOptimWrapper for both phases (fp16 autocast, dynamic '
                        'loss scale), as tools/train.py --amp')
    parser.add_argument('--json', help='also write the medians and ratios to this file')
    parser.add_argument('--student-lr', type=float, default=0.0,
                        help="the student's learning rate (default 0: every round times "
                        'the same weights; see "Learning rate" above)')
    parser.add_argument('--trace', type=int, metavar='ROUNDS',
                        help='instead of timing: ROUNDS rounds of the modes at '
                        '--student-lr, printing each step\'s loss terms, gradient norm, '
                        "logit range and largest |weight| (why a benchmark's steps "
                        'diverge)')
    parser.add_argument('--no-tf32', action='store_true',
                        help='CUDA: turn off TF32 matmuls and convolutions (on by default '
                        'for cuDNN convolutions)')
    parser.add_argument('--mem-mode', choices=MODES, help=argparse.SUPPRESS)
    return parser.parse_args(argv)


# --------------------------------------------------------------------- building ---
def _model(path):
    from mmengine.hub import get_config
    model = copy.deepcopy(get_config(path).model)
    model.backbone.init_cfg = None  # no ImageNet download; random weights
    model.bbox_head.num_classes = 80
    return model


def build(args):
    """The distiller (on ``args.device``, train mode) and its OptimWrapperDict."""
    from mmengine.hub import get_config
    from mmengine.logging import MMLogger
    from mmengine.registry import DefaultScope, MODELS

    import tst_mm  # noqa: F401
    from tst_mm.engine.optim_constructor import TSTOptimWrapperConstructor

    MMLogger.get_current_instance().setLevel('ERROR')  # teacher_ckpt=None warning
    cfg = dict(
        type='TSTDistiller', student=_model(STUDENT_CFG), teacher=_model(TEACHER_CFG),
        teacher_ckpt=None,
        augmenter=dict(type='TSTAugmenter', num_ops=4, temperature=0.05),
        distill_losses=dict(
            loss_kd_cls=dict(type='BinaryKLDivergence', student='bbox_head.retina_cls',
                             teacher='bbox_head.retina_cls', tau=1.0, loss_weight=1.0),
            loss_mimic_fpn=dict(type='FeatureMimic', student='neck', teacher='neck',
                                loss_weight=1.0)))
    with DefaultScope.overwrite_default_scope('mmdet'):
        distiller = MODELS.build(cfg)
        distiller.init_weights()  # heads' own init (normal, prior bias); no network
        distiller.to(args.device).train()
        student_wrapper = copy.deepcopy(get_config(STUDENT_CFG).optim_wrapper)
        student_wrapper.optimizer.lr = args.student_lr
        wrappers = dict(
            student=student_wrapper,
            augmenter=dict(type='OptimWrapper',
                           optimizer=dict(type='SGD', lr=0.01, momentum=0.9),
                           clip_grad=dict(max_norm=20)))
        if args.amp:
            from mmengine.config import Config

            from tst_mm.utils.amp import enable_amp
            cfg = Config(dict(optim_wrapper=wrappers))
            enable_amp(cfg)
            wrappers = cfg.optim_wrapper.to_dict()
        optim = TSTOptimWrapperConstructor(wrappers)(distiller)
    return distiller, optim


def make_images(args):
    """N uint8 images (CHW, as a dataloader gives them) and their DetDataSamples."""
    from mmdet.structures import DetDataSample
    from mmengine.structures import InstanceData

    gen = torch.Generator().manual_seed(args.seed)
    h, w = args.height, args.width
    images, samples = [], []
    for _ in range(args.batch):
        images.append(torch.randint(0, 256, (3, h, w), dtype=torch.uint8, generator=gen))
        xy = torch.rand(5, 2, generator=gen) * torch.tensor([w * 0.7, h * 0.7])
        wh = (0.05 + 0.25 * torch.rand(5, 2, generator=gen)) * torch.tensor([w, h])
        sample = DetDataSample(metainfo=dict(
            img_shape=(h, w), ori_shape=(h, w), scale_factor=(1.0, 1.0), flip=False))
        sample.gt_instances = InstanceData(
            bboxes=torch.cat([xy, xy + wh], 1),
            labels=torch.randint(0, 80, (5,), generator=gen))
        samples.append(sample)
    return images, samples


def batch(images, samples, repeat=1):
    """A fresh data dict (the preprocessor writes into the samples' metainfo)."""
    return dict(inputs=list(images) * repeat,
                data_samples=[copy.deepcopy(s) for _ in range(repeat) for s in samples])


@contextlib.contextmanager
def clean_views(distiller):
    """Plain KD: the student views are the clean batch twice, no augmenter."""
    def views(inputs, samples):
        return torch.cat([inputs, inputs]), list(samples) + list(samples)

    distiller._student_views = views  # instance attribute shadows the method
    try:
        yield
    finally:
        del distiller._student_views


def step(mode, distiller, optim, images, samples):
    """One optimisation step of ``mode``; returns its log_vars."""
    if mode == 'student':
        return distiller.student.train_step(batch(images, samples, 2), optim['student'])
    data = batch(images, samples)
    if mode == 'kd':
        with clean_views(distiller):
            return distiller.train_step(data, optim)
    if mode == 'tst':
        return distiller.train_step(data, optim)
    return distiller.augment_step(data, optim)


def sync(device):
    if torch.device(device).type == 'cuda':
        torch.cuda.synchronize()


def check_finite(mode, log_vars, bad):
    loss = log_vars.get('loss', log_vars.get('augment.loss'))
    if loss is not None and not torch.isfinite(torch.as_tensor(loss)).all():
        bad[mode] = bad.get(mode, 0) + 1


# ------------------------------------------------------------------------ trace ---
def trace(args, distiller, optim, images, samples):
    """``args.trace`` rounds of the timed modes, as :func:`time_modes` runs them, at
    ``--student-lr``: each step's loss terms, the student's gradient norm before its
    update (or 'skipped'), the range of its classification logits, and its largest
    |weight| after the step."""
    student = optim['student']
    params = [p for group in student.param_groups for p in group['params']]
    seen = {}
    plain_step = student.step

    def step_and_measure(**kwargs):
        grads = [p.grad for p in params if p.grad is not None]
        seen['grad_norm'] = float(torch.nn.utils.get_total_norm(grads))
        plain_step(**kwargs)

    def logit_range(module, inputs, output):
        lo, hi = seen.get('logits', (float('inf'), float('-inf')))
        seen['logits'] = (min(lo, float(output.min())), max(hi, float(output.max())))

    student.step = step_and_measure
    hook = distiller.student.bbox_head.retina_cls.register_forward_hook(logit_range)
    try:
        for r in range(args.trace):
            order = MODES[r % len(MODES):] + MODES[:r % len(MODES)]
            for mode in order:
                seen.clear()
                torch.manual_seed(args.seed + 1000 + r)
                log_vars = step(mode, distiller, optim, images, samples)
                largest = max(float(p.detach().abs().max()) for p in params)
                terms = ', '.join(f'{k} {float(torch.as_tensor(v).detach()):.4g}'
                                  for k, v in log_vars.items()
                                  if 'grad_norm' not in k)
                lo, hi = seen.get('logits', (float('nan'), float('nan')))
                update = (f'grad norm {seen["grad_norm"]:.4g}' if 'grad_norm' in seen
                          else 'no student update')
                print(f'trace round {r} {mode}: {terms}; student {update}, logits '
                      f'{lo:.3g}..{hi:.3g}, largest |weight| {largest:.4g}', flush=True)
    finally:
        student.step = plain_step
        hook.remove()


# ----------------------------------------------------------------------- timing ---
def time_modes(args, distiller, optim, images, samples):
    """Wall seconds and process CPU seconds of each mode, per timed round."""
    times = {m: [] for m in MODES}
    cpu_times = {m: [] for m in MODES}
    bad = {}
    for r in range(args.warmup + args.iters):
        order = MODES[r % len(MODES):] + MODES[:r % len(MODES)]
        for mode in order:
            torch.manual_seed(args.seed + 1000 + r)  # same policy draw for tst, augment
            sync(args.device)
            start, cpu_start = time.perf_counter(), time.process_time()
            log_vars = step(mode, distiller, optim, images, samples)
            sync(args.device)
            elapsed = time.perf_counter() - start
            cpu_elapsed = time.process_time() - cpu_start
            check_finite(mode, log_vars, bad)
            if r >= args.warmup:
                times[mode].append(elapsed)
                cpu_times[mode].append(cpu_elapsed)
        print(f'round {r}{" (warm-up)" if r < args.warmup else ""}: ' + ', '.join(
            f'{m} {times[m][-1]:.2f}s (cpu {cpu_times[m][-1]:.2f}s)' for m in order
            if r >= args.warmup), flush=True)
    return times, cpu_times, bad


def cuda_memory(args, distiller, optim, images, samples):
    peaks = {}
    for mode in MODES:
        torch.manual_seed(args.seed)
        gc.collect()
        torch.cuda.synchronize()
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
        step(mode, distiller, optim, images, samples)
        torch.cuda.synchronize()
        peaks[mode] = (torch.cuda.max_memory_allocated() - base) / 2**20
    return peaks


def _status_kb(field):
    with open('/proc/self/status') as f:
        for line in f:
            if line.startswith(field + ':'):
                return int(line.split()[1])
    raise RuntimeError(f'no {field} in /proc/self/status')


def _reset_peak_rss():
    """Resets the kernel's RSS high-water mark (VmHWM) to the current RSS."""
    try:
        with open('/proc/self/clear_refs', 'w') as f:
            f.write('5')
        return True
    except OSError:
        return False


def mem_child(args):
    """Subprocess body: build, then run one mode; print peak RSS figures as JSON.

    ``ru_maxrss`` is the process's lifetime peak: it includes any transient peak of
    building the models, and (through exec) the peak of the process that spawned this
    one. So the high-water mark is also reset after the build (``/proc/self/clear_refs``)
    and ``VmHWM`` read after the steps: the peak RSS of the steps alone.
    """
    distiller, optim = build(args)
    images, samples = make_images(args)
    gc.collect()
    base = _status_kb('VmRSS')
    build_peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    reset = _reset_peak_rss()
    for i in range(args.mem_iters):
        torch.manual_seed(args.seed + 1000 + i)
        step(args.mem_mode, distiller, optim, images, samples)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    hwm = _status_kb('VmHWM') if reset else None
    print('MEM ' + json.dumps(dict(mode=args.mem_mode, rss_after_build_kb=base,
                                   build_peak_kb=build_peak, ru_maxrss_kb=peak,
                                   step_hwm_kb=hwm)), flush=True)


def cpu_memory(args):
    """Peak RSS of each mode's steps minus the RSS after building, in MiB. Runs before
    the parent builds anything, so the children do not inherit a large peak."""
    results = {}
    for mode in MODES:
        cmd = [sys.executable, os.path.abspath(__file__), '--mem-mode', mode,
               '--device', args.device, '--height', str(args.height),
               '--width', str(args.width), '--batch', str(args.batch),
               '--mem-iters', str(args.mem_iters), '--seed', str(args.seed)]
        if args.threads:
            cmd += ['--threads', str(args.threads)]
        out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
        r = json.loads([ln for ln in out.splitlines() if ln.startswith('MEM ')][-1][4:])
        peak = r['step_hwm_kb'] if r['step_hwm_kb'] is not None else r['ru_maxrss_kb']
        results[mode] = (peak - r['rss_after_build_kb']) / 1024
        print(f'memory {mode}: RSS after build {r["rss_after_build_kb"] / 1024:.0f} MiB '
              f'(build peak {r["build_peak_kb"] / 1024:.0f}); peak of the steps '
              f'{peak / 1024:.0f} MiB (VmHWM reset after build: '
              f'{r["step_hwm_kb"] is not None}); ru_maxrss {r["ru_maxrss_kb"] / 1024:.0f} '
              f'MiB -> ru_maxrss - RSS after build '
              f'{(r["ru_maxrss_kb"] - r["rss_after_build_kb"]) / 1024:.0f} MiB', flush=True)
    return results


# -------------------------------------------------------------------- breakdown ---
def clock(device):
    """Process CPU time on CPU (robust to other processes on a shared machine), wall
    time on CUDA."""
    return time.perf_counter if torch.device(device).type == 'cuda' else time.process_time


class PartTimer:
    """Time spent inside the forward of some modules, via forward (pre-)hooks."""

    def __init__(self, device, modules):
        self.device, self.times, self._start, self.handles = device, {}, {}, []
        self.clock = clock(device)
        for name, module in modules.items():
            self.handles.append(module.register_forward_pre_hook(
                lambda mod, inp, name=name: self._begin(name)))
            self.handles.append(module.register_forward_hook(
                lambda mod, inp, out, name=name: self._end(name)))

    def _begin(self, name):
        sync(self.device)
        self._start[name] = self.clock()

    def _end(self, name):
        sync(self.device)
        self.times[name] = self.times.get(name, 0.0) + \
            self.clock() - self._start.pop(name)

    def remove(self):
        for handle in self.handles:
            handle.remove()


def breakdown(args, distiller, optim, images, samples, rounds=3):
    """Median seconds (CPU time on CPU, wall on CUDA) of the parts of the kd and tst
    steps, and of the teacher's forward in 'loss' vs 'tensor' mode on the 2N views."""
    now = clock(args.device)
    parts = {m: [] for m in ('kd', 'tst')}
    teacher_modes = {'loss': [], 'tensor': []}
    timer = PartTimer(args.device, dict(augmenter=distiller.augmenter,
                                        teacher=distiller.teacher,
                                        student=distiller.student))
    try:
        for r in range(rounds):
            for mode in ('kd', 'tst') if r % 2 == 0 else ('tst', 'kd'):
                torch.manual_seed(args.seed + 1000 + r)
                timer.times = {}
                sync(args.device)
                start = now()
                step(mode, distiller, optim, images, samples)
                sync(args.device)
                total = now() - start
                t = dict(timer.times)
                t['total'] = total
                t['losses+backward+step'] = total - sum(
                    t.get(k, 0.0) for k in ('augmenter', 'teacher', 'student'))
                parts[mode].append(t)
    finally:
        timer.remove()
    # The teacher on the 2N clean views, as train_step runs it, and in 'tensor' mode.
    data = distiller.data_preprocessor(batch(images, samples), True)
    inputs = torch.cat([data['inputs']] * 2)
    views = list(data['data_samples']) * 2
    x = distiller.teacher_normalizer(inputs, views)
    for r in range(rounds):
        for mode in ('loss', 'tensor') if r % 2 == 0 else ('tensor', 'loss'):
            with torch.no_grad(), distiller.teacher_recorder:
                sync(args.device)
                start = now()
                distiller.teacher(x, views, mode)
                sync(args.device)
                teacher_modes[mode].append(now() - start)
    med = {m: {k: statistics.median(t.get(k, 0.0) for t in ts) for k in ts[0]}
           for m, ts in parts.items()}
    return med, {m: statistics.median(v) for m, v in teacher_modes.items()}


def profile(args, distiller, optim, images, samples):
    from torch.profiler import ProfilerActivity, profile as torch_profile
    activities = [ProfilerActivity.CPU]
    if torch.device(args.device).type == 'cuda':
        activities.append(ProfilerActivity.CUDA)
    for mode in ('tst', 'kd'):
        torch.manual_seed(args.seed + 1000)
        with torch_profile(activities=activities) as prof:
            step(mode, distiller, optim, images, samples)
        print(f'\n### torch.profiler, one {mode} step (top 15 by self time)')
        key = 'self_cuda_time_total' if len(activities) > 1 else 'self_cpu_time_total'
        print(prof.key_averages().table(sort_by=key, row_limit=15))


# ------------------------------------------------------------------------- main ---
def main():
    args = parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.mem_mode:
        mem_child(args)
        return
    cuda = torch.device(args.device).type == 'cuda'
    if cuda and args.no_tf32:
        torch.backends.cuda.matmul.allow_tf32 = False
        torch.backends.cudnn.allow_tf32 = False
    if args.trace:
        distiller, optim = build(args)
        images, samples = make_images(args)
        trace(args, distiller, optim, images, samples)
        return
    print(f'torch {torch.__version__}, device {args.device}'
          + (f' ({torch.cuda.get_device_name()})' if cuda else
             f', {torch.get_num_threads()} threads, {os.cpu_count()} CPUs')
          + f'; N={args.batch} images of {args.height}x{args.width} '
          f'(the student sees {2 * args.batch}); warm-up {args.warmup}, '
          f'{args.iters} timed rounds', flush=True)
    print(f'load average before: {os.getloadavg()}', flush=True)
    mem = None
    if not args.no_memory and not cuda:
        mem = cpu_memory(args)
        print(f'load average after the memory runs: {os.getloadavg()}', flush=True)
    distiller, optim = build(args)
    images, samples = make_images(args)
    times, cpu_times, bad = time_modes(args, distiller, optim, images, samples)
    load_after_timing = os.getloadavg()
    print(f'load average after timing: {load_after_timing}', flush=True)
    if bad:
        print(f'WARNING: non-finite losses (mode: steps): {bad}')
    med = {m: statistics.median(t) for m, t in times.items()}
    cpu_med = {m: statistics.median(t) for m, t in cpu_times.items()}

    parts = teacher_modes = None
    if not args.no_breakdown:
        parts, teacher_modes = breakdown(args, distiller, optim, images, samples)
    if args.profile:
        profile(args, distiller, optim, images, samples)

    if not args.no_memory and cuda:
        mem = cuda_memory(args, distiller, optim, images, samples)

    unit = 'peak CUDA memory above the step start' if cuda else \
        'peak RSS of the steps - RSS after build'
    print(f'\n| mode | images through the student | s/iter (median of {args.iters}) '
          f'| min-max s | process CPU s/iter (median) | vs student alone (s/iter) '
          f'| {unit} (MiB) |')
    print('|---|---|---|---|---|---|---|')
    for mode in MODES:
        n = args.batch if mode == 'augment' else 2 * args.batch
        m = f'{mem[mode]:.0f}' if mem else '-'
        print(f'| {LABELS[mode]} | {n} | {med[mode]:.2f} | {min(times[mode]):.2f}-'
              f'{max(times[mode]):.2f} | {cpu_med[mode]:.2f} '
              f'| {med[mode] / med["student"]:.2f}x | {m} |')

    def ratios(a, b):
        """Ratio of the medians, and the median of the per-round ratios (a round's
        modes ran back to back, under about the same load), wall and CPU time."""
        per_round = [x / y for x, y in zip(times[a], times[b])]
        per_round_cpu = [x / y for x, y in zip(cpu_times[a], cpu_times[b])]
        return (med[a] / med[b], statistics.median(per_round),
                cpu_med[a] / cpu_med[b], statistics.median(per_round_cpu), per_round)

    print('\nratio: of the wall medians / median per-round wall / of the CPU medians / '
          'median per-round CPU')
    for a, b, target in (('tst', 'kd', 1.1), ('tst', 'student', None),
                         ('kd', 'student', None), ('augment', 'student', None)):
        r = ratios(a, b)
        line = f'{a} / {b}: {r[0]:.3f}x / {r[1]:.3f}x / {r[2]:.3f}x / {r[3]:.3f}x'
        if target:
            line += (f'  (target <= {target}x: wall '
                     f'{"met" if r[0] <= target else "MISSED"}, CPU '
                     f'{"met" if r[2] <= target else "MISSED"}; per-round wall: '
                     + ', '.join(f'{x:.3f}' for x in r[4]) + ')')
        print(line)
    if parts:
        what = 'wall' if cuda else 'process CPU'
        print(f'\nBreakdown (median {what} seconds over 3 rounds, forward hooks):')
        keys = ['augmenter', 'teacher', 'student', 'losses+backward+step', 'total']
        print('| step | ' + ' | '.join(keys) + ' |')
        print('|---|' + '---|' * len(keys))
        for mode, t in parts.items():
            print(f'| {mode} | ' + ' | '.join(f'{t.get(k, 0.0):.3f}' for k in keys) + ' |')
        print(f'teacher forward on the 2N views, no grad: loss mode '
              f'{teacher_modes["loss"]:.3f}s, tensor mode {teacher_modes["tensor"]:.3f}s '
              f'(the task loss train_step discards: '
              f'{teacher_modes["loss"] - teacher_modes["tensor"]:.3f}s)')
    print(f'load average at the end: {os.getloadavg()}')
    if args.json:
        with open(args.json, 'w') as f:
            json.dump(dict(
                device=args.device, amp=args.amp, batch=args.batch, height=args.height,
                width=args.width, torch=torch.__version__, seconds=times,
                median=med, memory_mib=mem, nonfinite_steps=bad,
                ratios={f'{a}/{b}': ratios(a, b)[:4] for a, b in
                        (('tst', 'kd'), ('tst', 'student'), ('kd', 'student'),
                         ('augment', 'student'))},
                breakdown=parts, teacher_modes=teacher_modes), f, indent=1)


if __name__ == '__main__':
    main()
