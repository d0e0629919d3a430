"""Benchmark TSTAugmenter's forward + backward against two unfused baselines.

    python tools/benchmark/bench_augmenter.py [--device cpu] [--seeds 4] [--repeats 2]
        [--retinanet] [--scaling] [--masks] [--imitation] [--threads N]
        [--clock wall|cpu]

For each batch shape and each seed, every method applies the SAME policy draw (the
augmenter's own ``sample`` under that seed), then backpropagates ``(out * w).sum()``
(``w`` fixed random) into the augmenter's parameters:

- ``fused``    TSTAugmenter itself: pixel ops residual on the clean image, one affine warp
               (+ ``boxes``: the same with 10 boxes per image to transform and filter);
- ``kornia``   (a) kornia's functional ops chained one after another, one kornia warp per
               geometric op;
- ``per-op``   (b) our pixel ops, then one ``affine_grid`` + ``grid_sample`` per geometric
               op.

Each op runs only on the samples that drew it, in all three methods, with the same row
handling. ``no-grad`` times the augmenter's forward alone (with boxes), as in the student
phase. Methods are interleaved per draw and each time is the best of ``--repeats`` runs,
which keeps the comparison fair on a shared machine. ``--retinanet`` adds mmdet's
RetinaNet-R50 (``init_cfg=None``, random weights) forward + backward at the same batch,
the student cost the augmenter should stay well below; ``--scaling`` adds other image
sizes and batch sizes. ``--masks`` times the augmenter with 10 and 50 instances per image
at COCO size: boxes only, and boxes with their ``BitmapMasks`` or ``PolygonMasks``.
``--imitation`` times ``TSTImitationAugmenter`` (pixel ops through the frozen imitator
networks) against ``TSTAugmenter`` on the same draws, forward + backward and no-grad
forward, with 10 boxes per image.
"""
import argparse
import statistics
import time

import kornia
import torch

from tst_mm.augment import OPS, TSTAugmenter, TSTImitationAugmenter
from tst_mm.augment.augmenter import _selector, _take_rows
from tst_mm.augment.geometry import sampling_theta, warp_images
from tst_mm.augment.ops import PIXEL_MAX, OpContext, cutout

KF, KG = kornia.enhance, kornia.geometry.transform


def _kornia_op(name, x01, v, ctx):
    """One op with kornia's functional API on 0-1 images (Cutout: a mask, as ours)."""
    if name == 'Brightness':
        return KF.adjust_contrast(x01, 1 + v)  # kornia's contrast is PIL's brightness
    if name == 'Color':
        return KF.adjust_saturation_with_gray_subtraction(x01, 1 + v)
    if name == 'Contrast':
        return KF.adjust_contrast_with_mean_subtraction(x01, 1 + v)
    if name == 'Sharpness':
        return KF.sharpness(x01, 1 + v)
    if name == 'Posterize':
        return KF.posterize(x01, (8 - v).round().long())
    if name == 'Solarize':
        return KF.solarize(x01, (PIXEL_MAX - v) / PIXEL_MAX)
    if name == 'Equalize':
        return KF.equalize(x01)
    if name == 'Invert':
        return KF.invert(x01)
    if name == 'Cutout':
        return x01 + cutout(x01 * PIXEL_MAX, v, ctx) / PIXEL_MAX
    h, w = ctx.hw[:, 0], ctx.hw[:, 1]
    centre = torch.stack([w / 2, h / 2], 1)
    zero = torch.zeros_like(v)
    if name == 'Rotate':
        return KG.rotate(x01, v, center=centre)
    if name == 'ShearX':
        return KG.shear(x01, torch.stack([v, zero], 1))
    if name == 'ShearY':
        return KG.shear(x01, torch.stack([zero, v], 1))
    if name == 'TranslateX':
        return KG.translate(x01, torch.stack([v * w, zero], 1))
    return KG.translate(x01, torch.stack([zero, v * h], 1))


def _sub(ctx, r):
    return ctx._replace(valid=ctx.valid[r], hw=ctx.hw[r], noise=ctx.noise[r])


def _on_rows(x, rows, fn):
    """fn on the rows of x that drew an op, put back as the augmenter does (split/cat)."""
    sel = _selector(rows, x.device)
    xr, put = _take_rows(x, sel)
    return put(fn(xr, sel))


def run_kornia(aug, img, ctx, seed):
    torch.manual_seed(seed)
    draw = aug.sample(len(img), img.device)
    ctx = ctx._replace(noise=draw.noise)
    x = img / PIXEL_MAX
    for j, name in enumerate(aug.op_names):  # table order: pixel ops, then geometric
        rows = draw.selected[:, j].nonzero().flatten()
        if not len(rows):
            continue
        wgt, val = draw.weights[:, j], draw.values[:, j]
        if OPS[name].geometric:
            x = _on_rows(x, rows, lambda xr, r: _kornia_op(name, xr, wgt[r] * val[r],
                                                           _sub(ctx, r)))
        else:
            def step(xr, r, name=name, wgt=wgt, val=val):
                out = _kornia_op(name, xr, val[r], _sub(ctx, r))
                return xr + wgt[r].view(-1, 1, 1, 1) * (out - xr)
            x = _on_rows(x, rows, step).clamp(0, 1)
    return x * PIXEL_MAX


def run_per_op(aug, img, ctx, seed):
    torch.manual_seed(seed)
    draw = aug.sample(len(img), img.device)
    ctx = ctx._replace(noise=draw.noise)
    x = aug._apply_pixel_ops(img, draw, ctx)
    for j in aug._geometric_ops:
        rows = draw.selected[:, j].nonzero().flatten()
        if not len(rows):
            continue
        m = OPS[aug.op_names[j]].fn(draw.weights[:, j] * draw.values[:, j], ctx.hw)
        x = _on_rows(x, rows, lambda xr, r: warp_images(
            xr, sampling_theta(m[r], tuple(img.shape[-2:]))))
    return x


def run_fused(aug, img, samples, seed):
    torch.manual_seed(seed)
    return aug(img, samples)[0]


CLOCKS = dict(wall=time.perf_counter, cpu=time.process_time)
clock = CLOCKS['wall']


def timed(fn, params, sync, backward=True, repeats=2, weight=None):
    """Best of ``repeats`` runs (the least disturbed by other processes). The loss is
    ``(out * weight).sum()``: a dense gradient, as a network's (``mean`` would feed back
    an expanded scalar, which some CPU kernels handle far more slowly)."""
    best = float('inf')
    for _ in range(repeats):
        for p in params:
            p.grad = None
        sync()
        start = clock()
        if backward:
            (fn() * weight).sum().backward()
        else:
            with torch.no_grad():
                fn()
        sync()
        best = min(best, clock() - start)
    return best


def det_samples(n, h, w, device='cpu'):
    """``n`` DetDataSamples with 10 random boxes each, on ``device`` (as mmdet's data
    preprocessor leaves them: on the images' device)."""
    from mmdet.structures import DetDataSample
    from mmdet.structures.bbox import HorizontalBoxes
    from mmengine.structures import InstanceData
    g = torch.Generator().manual_seed(0)
    out = []
    for _ in range(n):
        xy = torch.rand(10, 2, generator=g) * torch.tensor([w * .7, h * .7])
        wh = torch.rand(10, 2, generator=g) * torch.tensor([w * .3, h * .3]) + 4
        s = DetDataSample(metainfo=dict(img_shape=(h, w), pad_shape=(h, w),
                                        batch_input_shape=(h, w), scale_factor=(1., 1.)))
        s.gt_instances = InstanceData(bboxes=HorizontalBoxes(torch.cat([xy, xy + wh], 1)),
                                      labels=torch.randint(0, 80, (10,), generator=g))
        out.append(s.to(device))
    return out


def mask_samples(n, h, w, instances, kind, device='cpu'):
    """``det_samples`` with ``instances`` boxes per image and, unless ``kind`` is None,
    an octagon mask per instance inscribed in its box (bitmap or polygon). Boxes and
    labels on ``device``; masks are host data (numpy), as mmdet keeps them."""
    from mmdet.structures.mask import PolygonMasks
    from mmdet.structures.bbox import HorizontalBoxes
    from mmengine.structures import InstanceData
    g = torch.Generator().manual_seed(instances)
    angles = torch.arange(8) * (2 * torch.pi / 8)
    out = []
    for sample in det_samples(n, h, w):
        xy = torch.rand(instances, 2, generator=g) * torch.tensor([w * .7, h * .7])
        wh = torch.rand(instances, 2, generator=g) * torch.tensor([w * .3, h * .3]) + 8
        boxes = torch.cat([xy, xy + wh], 1)
        sample.gt_instances = InstanceData(
            bboxes=HorizontalBoxes(boxes),
            labels=torch.randint(0, 80, (instances,), generator=g))
        if kind is not None:
            centre, radius = xy + wh / 2, wh / 2
            points = centre[:, None] + radius[:, None] * torch.stack(
                [angles.cos(), angles.sin()], 1)  # instances x 8 x 2
            polygons = PolygonMasks([[p.flatten().double().numpy()] for p in points], h, w)
            sample.gt_instances.masks = polygons if kind == 'polygon' \
                else polygons.to_bitmap()
        sample.gt_instances.bboxes = sample.gt_instances.bboxes.to(device)
        sample.gt_instances.labels = sample.gt_instances.labels.to(device)
        out.append(sample)
    return out


def bench_masks(aug, device, seeds, repeats, sync, shape=(2, 3, 800, 1333)):
    """Seconds per augmenter forward + backward with boxes only and with masks."""
    n, _, h, w = shape
    img = (torch.rand(shape, device=device) * 255).round()
    params, weight = list(aug.parameters()), torch.randn(shape, device=device)
    rows = {}
    for instances in (10, 50):
        methods = {kind: mask_samples(n, h, w, instances, kind, device)
                   for kind in (None, 'bitmap', 'polygon')}
        times = {k: [] for k in methods}
        for s in range(0, seeds + 1):  # seed 0 warms up
            for kind, samples in methods.items():
                t = timed(lambda: run_fused(aug, img, samples, s), params, sync, True,
                          repeats, weight)
                if s:
                    times[kind].append(t)
        rows[instances] = {k: statistics.mean(v) for k, v in times.items()}
    return rows


def bench_shape(aug, shape, device, seeds, repeats, sync):
    """Seconds per forward + backward of each method, averaged over ``seeds`` draws (each
    the best of ``repeats``); ``no-grad``: the augmenter's forward alone, as in the
    student phase."""
    n, _, h, w = shape
    img = (torch.rand(shape, device=device) * 255).round()
    hw = torch.tensor([[h, w]] * n, device=device, dtype=torch.float32)
    valid = torch.ones(1, 1, 1, 1, device=device).expand(n, 1, h, w)
    ctx = OpContext(valid, hw, None, padded=False)
    samples = det_samples(n, h, w, device)
    methods = {
        'fused': (lambda s: run_fused(aug, img, None, s), True),
        'boxes': (lambda s: run_fused(aug, img, samples, s), True),
        'no-grad': (lambda s: run_fused(aug, img, samples, s), False),
        'kornia': (lambda s: run_kornia(aug, img, ctx, s), True),
        'per-op': (lambda s: run_per_op(aug, img, ctx, s), True),
    }
    params = list(aug.parameters())
    weight = torch.randn(shape, device=device)
    for fn, backward in methods.values():  # warm-up
        timed(lambda: fn(0), params, sync, backward, 1, weight)
    times = {k: [] for k in methods}
    for s in range(1, seeds + 1):  # methods interleaved: each draw sees the same load
        for k, (fn, backward) in methods.items():
            times[k].append(timed(lambda: fn(s), params, sync, backward, repeats, weight))
    return {k: statistics.mean(v) for k, v in times.items()}


def bench_imitation(aug, imitation, shape, device, seeds, repeats, sync):
    """Seconds per call of the exact and the imitation augmenter (same policy, same
    draws), forward + backward and no-grad forward, with 10 boxes per image."""
    n, _, h, w = shape
    img = (torch.rand(shape, device=device) * 255).round()
    samples = [s.to(device) for s in det_samples(n, h, w)]  # on the images' device
    params = [*aug.parameters(), *imitation.parameters()]
    weight = torch.randn(shape, device=device)
    methods = {(name, backward): (lambda s, a=a: run_fused(a, img, samples, s), backward)
               for name, a in (('exact', aug), ('imitation', imitation))
               for backward in (True, False)}
    for fn, backward in methods.values():  # warm-up
        timed(lambda: fn(0), params, sync, backward, 1, weight)
    times = {k: [] for k in methods}
    for s in range(1, seeds + 1):  # interleaved: each draw sees the same load
        for k, (fn, backward) in methods.items():
            times[k].append(timed(lambda: fn(s), params, sync, backward, repeats, weight))
    return {k: statistics.mean(v) for k, v in times.items()}


def bench_retinanet(shape, device, sync, iters=2):
    from mmdet.registry import MODELS
    from mmdet.utils import register_all_modules
    from mmengine.config import Config
    import mmdet
    import os.path as osp
    register_all_modules()
    root = osp.join(osp.dirname(mmdet.__file__), '.mim', 'configs')
    cfg = Config.fromfile(osp.join(root, 'retinanet', 'retinanet_r50_fpn_1x_coco.py'))
    cfg.model.backbone.init_cfg = None
    model = MODELS.build(cfg.model).to(device).train()
    n, _, h, w = shape
    img = torch.randn(shape, device=device)
    samples = det_samples(n, h, w, device)
    ts = []
    for _ in range(iters + 1):
        model.zero_grad()
        sync()
        start = clock()
        losses = model.loss(img, samples)
        sum(v if torch.is_tensor(v) else sum(v) for v in losses.values()).backward()
        sync()
        ts.append(clock() - start)
    return min(ts[1:])  # the first run warms up; best of the rest, as the augmenter


def main():
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--device', default='cuda' if torch.cuda.is_available() else 'cpu')
    parser.add_argument('--seeds', type=int, default=4, help='policy draws per shape')
    parser.add_argument('--repeats', type=int, default=2, help='runs per draw (best kept)')
    parser.add_argument('--retinanet', action='store_true')
    parser.add_argument('--scaling', action='store_true', help='also other sizes / batches')
    parser.add_argument('--masks', action='store_true',
                        help='only the instance-mask table (10 and 50 per image, COCO size)')
    parser.add_argument('--imitation', action='store_true',
                        help='only the table of TSTImitationAugmenter against TSTAugmenter')
    parser.add_argument('--threads', type=int, help='torch CPU threads (default: torch\'s)')
    parser.add_argument('--clock', choices=list(CLOCKS), default='wall',
                        help='cpu: process CPU time, robust on a shared machine with 1 thread')
    args = parser.parse_args()
    global clock
    clock = CLOCKS[args.clock]
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    sync = torch.cuda.synchronize if device.type == 'cuda' else (lambda: None)
    aug = TSTAugmenter().to(device)  # the default: all 14 ops, k = 4 per sample
    print(f'device {device}, torch {torch.__version__}, kornia {kornia.__version__}, '
          f'{torch.get_num_threads()} threads, {args.clock} clock; seconds per call, mean '
          f'over {args.seeds} '
          f'policy draws, best of {args.repeats} runs each')
    if args.masks:
        print('| instances / image (2x3x800x1333) | boxes only | + BitmapMasks | '
              '+ PolygonMasks | bitmap / boxes | polygon / boxes |')
        print('|---' * 6 + '|')
        for instances, t in bench_masks(aug, device, args.seeds, args.repeats,
                                        sync).items():
            print(f"| {instances} | {t[None]:.3f} | {t['bitmap']:.3f} | "
                  f"{t['polygon']:.3f} | {t['bitmap'] / t[None]:.2f}x | "
                  f"{t['polygon'] / t[None]:.2f}x |", flush=True)
        return
    shapes = [(2, 3, 800, 1333), (2, 3, 512, 1024)]
    if args.imitation:
        imitation = TSTImitationAugmenter().to(device)  # same policy, same draws
        print('| batch | exact f+b | imitation f+b | ratio | exact no-grad fwd | '
              'imitation no-grad fwd | ratio |')
        print('|---' * 7 + '|')
        # + the study's batches (tools/study/study.py): detection, segmentation
        for shape in shapes + [(8, 3, 256, 256), (8, 3, 64, 128)]:
            t = bench_imitation(aug, imitation, shape, device, args.seeds, args.repeats,
                                sync)
            f, g = (t['exact', True], t['imitation', True]), (t['exact', False],
                                                              t['imitation', False])
            print(f"| {'x'.join(map(str, shape))} | {f[0]:.3f} | {f[1]:.3f} | "
                  f"{f[1] / f[0]:.1f}x | {g[0]:.3f} | {g[1]:.3f} | {g[1] / g[0]:.1f}x |",
                  flush=True)
        return
    shapes.append((8, 3, 128, 128))  # the demo's batch
    if args.scaling:
        shapes += [(2, 3, 256, 512), (2, 3, 1024, 2048), (1, 3, 512, 1024),
                   (4, 3, 512, 1024), (8, 3, 512, 1024)]
    head = ('| batch | fused f+b | + 10 boxes/img | no-grad fwd | (a) kornia chain '
            '| (b) one warp per op | (a) / fused | (b) / fused |')
    if args.retinanet:
        head += ' RetinaNet-R50 f+b | (fused + boxes) / RetinaNet |'
    print(head)
    print('|---' * head.count(' |') + '|')
    for shape in shapes:
        t = bench_shape(aug, shape, device, args.seeds, args.repeats, sync)
        row = (f"| {'x'.join(map(str, shape))} | {t['fused']:.3f} | {t['boxes']:.3f} | "
               f"{t['no-grad']:.3f} | {t['kornia']:.3f} | {t['per-op']:.3f} | "
               f"{t['kornia'] / t['fused']:.1f}x | {t['per-op'] / t['fused']:.1f}x |")
        if args.retinanet and shape in shapes[:2]:
            r = bench_retinanet(shape, device, sync)
            row += f' {r:.2f} | {100 * t["boxes"] / r:.1f}% |'
        print(row, flush=True)


if __name__ == '__main__':
    main()
