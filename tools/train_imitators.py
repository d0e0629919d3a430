"""Pre-train the imitator networks of TSTImitationAugmenter (the paper's "priori bias").

    python tools/train_imitators.py [--out tst_mm/augment/imitators.pth] [--steps 1500]
        [--seed 0] [--threads 1] [--ops Brightness Solarize ...]

1. Build an image pool: generated digit scenes (:mod:`tst_mm.datasets`, train digits),
   synthetic natural-ish images (smooth colour fields, edges, noise, flat areas) and
   uniform noise (every grey level, for the pointwise ops), all integer pixels as a data
   pipeline gives them.
2. For each op of ``IMITATOR_CFGS``: a fresh :class:`ImitatorNet`, trained with Adam on
   the squared error between its change and the exact op's, on random crops of the pool
   at values drawn uniformly over the op's range and both signs.
3. Evaluate every net on held-out images (scenes of the validation digits and synthetic
   images from other seeds, at another size, with a padded batch): the mean absolute
   error in grey levels against the exact op (change clamped as the augmenter clamps
   it), and for the smooth ops the correlation between the net's d change / d value and
   the exact op's, pixel by pixel.
4. Write the weights (with the table in ``meta``) to ``--out`` and print the table.

Everything is seeded by ``--seed``, each op on its own stream: the same command writes
the same weights, and ``--ops Solarize`` the same Solarize net as the full run.
"""
import argparse
import os.path as osp
import sys
import time

import numpy as np
import torch
import torch.nn.functional as F

sys.path.insert(0, osp.dirname(osp.dirname(osp.abspath(__file__))))
from tst_mm.augment.imitators import (IMITATOR_CFGS, ImitatorNet,  # noqa: E402
                                      save_imitators)
from tst_mm.augment.ops import OPS, PIXEL_MAX, OpContext  # noqa: E402

SMOOTH = ('Brightness', 'Color', 'Contrast', 'Sharpness')  # exact d change / d value


def synthetic_images(gen: torch.Generator, n: int, size) -> torch.Tensor:
    """n natural-ish RGB images: smooth fields at three scales, a hard edge, noise, a
    random grey-level range, and for a quarter of them few levels (flat areas)."""
    h, w = size
    x = torch.zeros(n, 3, h, w)
    for cells, weight in ((2, 1.0), (5, 0.6), (13, 0.3)):
        coarse = torch.rand(n, 3, cells, cells, generator=gen)
        x += weight * F.interpolate(coarse, (h, w), mode='bicubic', align_corners=False)
    ys, xs = torch.meshgrid(torch.linspace(-1, 1, h), torch.linspace(-1, 1, w),
                            indexing='ij')
    a, b, c = (torch.rand(3, n, 1, 1, generator=gen) * 2 - 1).unbind(0)
    edge = ((a * xs + b * ys + c) > 0).float().unsqueeze(1)
    x += edge * (torch.rand(n, 3, 1, 1, generator=gen) * 2 - 1)
    x += torch.randn(n, 3, h, w, generator=gen) * torch.rand(n, 1, 1, 1, generator=gen) * 0.1
    lo, hi = x.amin((1, 2, 3), keepdim=True), x.amax((1, 2, 3), keepdim=True)
    x = (x - lo) / (hi - lo)
    ends = torch.rand(n, 2, 1, 1, generator=gen).sort(1).values * 255
    x = ends[:, :1] + x * (ends[:, 1:] - ends[:, :1]).clamp(min=40)
    few = (torch.rand(n, 1, 1, 1, generator=gen) < 0.25).float()
    x = torch.lerp(x, (x / 32).round() * 32, few)
    return x.round().clamp(0, PIXEL_MAX)


def digit_scenes(seed: int, n: int, size, split: str) -> torch.Tensor:
    from tst_mm.datasets import render_scene
    rng = np.random.default_rng(seed)
    scenes = [render_scene(rng, size, (12, 40), (1, 4), split).image for _ in range(n)]
    return torch.from_numpy(np.stack(scenes)).permute(0, 3, 1, 2).float()


def draw_values(op: str, n: int, gen: torch.Generator) -> torch.Tensor:
    """Values over the op's whole range, each sign half the time for signed ops."""
    rng = OPS[op].magnitude_range
    if rng is None:  # applied at full strength only
        return torch.ones(n)
    value = rng[0] + torch.rand(n, generator=gen) * (rng[1] - rng[0])
    if OPS[op].signed:
        value = value * torch.where(torch.rand(n, generator=gen) < 0.5, -1.0, 1.0)
    return value


def full_context(img: torch.Tensor) -> OpContext:
    n, _, h, w = img.shape
    return OpContext(torch.ones(n, 1, h, w), torch.tensor([[h, w]] * n).float(),
                     torch.zeros(n, 2), padded=False)


def padded_context(img: torch.Tensor, gen: torch.Generator) -> OpContext:
    """Each image real on a random top-left part (at least 3/4 of each side)."""
    n, _, h, w = img.shape
    hw = torch.stack([torch.randint(3 * h // 4, h + 1, (n,), generator=gen),
                      torch.randint(3 * w // 4, w + 1, (n,), generator=gen)], 1).float()
    ys, xs = torch.arange(h).view(1, 1, h, 1), torch.arange(w).view(1, 1, 1, w)
    valid = ((ys < hw[:, 0].view(n, 1, 1, 1)) & (xs < hw[:, 1].view(n, 1, 1, 1))).float()
    return OpContext(valid, hw, torch.zeros(n, 2), padded=True)


def random_crops(pool: torch.Tensor, batch: int, side: int,
                 gen: torch.Generator) -> torch.Tensor:
    idx = torch.randint(len(pool), (batch,), generator=gen)
    h, w = pool.shape[-2:]
    ys = torch.randint(h - side + 1, (batch,), generator=gen)
    xs = torch.randint(w - side + 1, (batch,), generator=gen)
    crops = [pool[i, :, y:y + side, x:x + side] for i, y, x in zip(idx, ys, xs)]
    flip = torch.rand(batch, generator=gen) < 0.5
    return torch.stack([c.flip(-1) if f else c for c, f in zip(crops, flip)])


def train_one(op: str, pool: torch.Tensor, steps: int, batch: int, lr: float,
              gen: torch.Generator) -> ImitatorNet:
    """One net: ``batch`` crops of 16-32 pixels a step, or half as many of 32-64
    pixels for nets with image statistics (which a small crop would not have)."""
    net = ImitatorNet(op, **IMITATOR_CFGS[op])
    opt = torch.optim.Adam(net.parameters(), lr=lr)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, lr, total_steps=steps,
                                                pct_start=0.1)
    smallest = 32 if net.cfg['context'] else 16
    batch = batch // 2 if net.cfg['context'] else batch
    for _ in range(steps):
        side = int(torch.randint(smallest, 2 * smallest + 1, (1,), generator=gen))
        img = random_crops(pool, batch, side, gen)
        value = draw_values(op, batch, gen)
        ctx = full_context(img)
        with torch.no_grad():
            target = OPS[op].fn(img, value, ctx)
        loss = F.mse_loss(net(img, value, ctx), target, reduction='sum')
        opt.zero_grad()
        (loss / (PIXEL_MAX ** 2 * target.numel())).backward()
        opt.step()
        sched.step()
    return net.eval()


def _derivative(fn, img, value, ctx, eps):
    """Per-pixel central difference d change / d value (exact for the linear ops)."""
    return (fn(img, value + eps, ctx) - fn(img, value - eps, ctx)) / (2 * eps)


@torch.no_grad()
def evaluate(net: ImitatorNet, img: torch.Tensor, ctx: OpContext,
             gen: torch.Generator, draws: int = 4) -> dict:
    """Mean absolute error (grey levels, inside the real images, outputs clamped to
    0-255 as the augmenter does) and, for smooth ops, the mean per-image correlation of
    d change / d value with the exact op's."""
    op, errors, baseline, corrs = net.op, [], [], []
    net = net.double()
    img = img.double()
    ctx = ctx._replace(valid=ctx.valid.double(), hw=ctx.hw.double())
    for _ in range(draws):
        value = draw_values(op, len(img), gen).double()
        exact = (img + OPS[op].fn(img, value, ctx)).clamp(0, PIXEL_MAX)
        imitated = (img + net(img, value, ctx)).clamp(0, PIXEL_MAX)
        errors.append(((exact - imitated).abs() * ctx.valid).sum() / (3 * ctx.valid.sum()))
        baseline.append(((exact - img).abs() * ctx.valid).sum() / (3 * ctx.valid.sum()))
        if op in SMOOTH:
            eps = 1e-4 * net.scale
            d_exact = _derivative(OPS[op].fn, img, value, ctx, eps) * ctx.valid
            d_net = _derivative(net, img, value, ctx, eps) * ctx.valid
            for a, b in zip(d_exact.flatten(1), d_net.flatten(1)):
                corrs.append(torch.corrcoef(torch.stack([a, b]))[0, 1])
    net.float()
    out = dict(mae=float(torch.stack(errors).mean()),
               op_mae=float(torch.stack(baseline).mean()))
    if corrs:
        out['grad_corr'] = float(torch.stack(corrs).mean())
    return out


def held_out_images(seed: int):
    """Images no net was trained on: validation-digit scenes and synthetic images from
    other seeds, at 80 x 112 (training crops are 16-64 square), in a padded batch."""
    gen = torch.Generator().manual_seed(seed + 1000)
    img = torch.cat([digit_scenes(seed + 1000, 8, (80, 112), 'val'),
                     synthetic_images(gen, 8, (80, 112))])
    ctx = padded_context(img, gen)
    return img * ctx.valid, ctx  # zero padding, as mmdet / mmseg pad


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--out', default=osp.join('tst_mm', 'augment', 'imitators.pth'))
    parser.add_argument('--ops', nargs='+', default=list(IMITATOR_CFGS),
                        choices=list(IMITATOR_CFGS))
    parser.add_argument('--steps', type=int, default=1500)
    parser.add_argument('--batch', type=int, default=16)
    parser.add_argument('--lr', type=float, default=1e-2)
    parser.add_argument('--seed', type=int, default=0)
    parser.add_argument('--threads', type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    gen = torch.Generator().manual_seed(args.seed)
    pool = torch.cat([digit_scenes(args.seed, 48, (96, 128), 'train'),
                      synthetic_images(gen, 48, (96, 128)),
                      torch.randint(0, 256, (16, 3, 96, 128), generator=gen).float()])
    test_img, test_ctx = held_out_images(args.seed)
    nets, table = {}, {}
    print('| op | mean abs. error (grey levels) | the op\'s own mean change | '
          'd change / d value correlation | training s |')
    print('|---|---|---|---|---|')
    for op in args.ops:
        start = time.perf_counter()
        op_seed = 1000 * args.seed + list(IMITATOR_CFGS).index(op)  # whatever --ops says
        torch.manual_seed(op_seed)
        nets[op] = train_one(op, pool, args.steps, args.batch, args.lr,
                             torch.Generator().manual_seed(op_seed))
        seconds = time.perf_counter() - start
        table[op] = dict(evaluate(nets[op], test_img, test_ctx,
                                  torch.Generator().manual_seed(args.seed + 7)),
                         seconds=round(seconds, 1))
        corr = table[op].get('grad_corr')
        print(f"| {op} | {table[op]['mae']:.2f} | {table[op]['op_mae']:.1f} | "
              f"{'-' if corr is None else f'{corr:.3f}'} | {seconds:.0f} |", flush=True)
    save_imitators(nets, args.out, dict(
        seed=args.seed, steps=args.steps, batch=args.batch, lr=args.lr, held_out=table,
        trained_range={op: OPS[op].magnitude_range for op in nets}))
    print(f'wrote {args.out}')


if __name__ == '__main__':
    main()
