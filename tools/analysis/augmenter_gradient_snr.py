"""How much signal is in the augmenter's gradient? (issue 21, part 2)

    python tools/analysis/augmenter_gradient_snr.py CONFIG CHECKPOINT [--teacher-ckpt T]
        [--images 8 32 128] [--estimates 8] [--cfg-options KEY=VALUE ...] [--json OUT]
    python tools/analysis/augmenter_gradient_snr.py --report OUT   # the table of OUT

Loads a TST config's distiller (the teacher from ``--teacher-ckpt`` or the config's
``teacher_ckpt``; the student, and the augmenter if the checkpoint has one, from
CHECKPOINT: a TST / KD run's ``iter_N.pth``), then draws ``--estimates`` independent
estimates of the augmenter's gradient from ``B`` images each (B in ``--images``; an
estimate accumulates B / batch_size batches, fresh images and fresh random draws,
student and teacher frozen as in an augment phase). Per objective term (and their
sum) and per parameter group (``magnitude``, ``probability``) it prints:

- ``cos``: the mean cosine between two independent estimates. Near 0: each estimate is
  mostly the noise of which images, ops and gates it drew. Near 1: all agree.
- ``descent`` (in ``--json``; printed where ``|z| > 2``): per op, where one descent
  step moves its magnitude / probability (minus the mean gradient) and ``z``, that
  mean over its standard error across the estimates: what the objective *wants*.
- ``snr``: ``|E g|^2 / E|g - E g|^2`` for one estimate (the squared norm of the mean
  corrected for its own noise, over the noise of one estimate), from the spread of the
  estimates. With independent images it grows in proportion to B; the cosine of two
  estimates is then about ``snr / (1 + snr)``.

Nothing is updated: this measures the estimator, not a training run. Use
``--cfg-options`` to measure other estimators, e.g.
``model.augmenter.temperature=0.5``, ``model.augmenter.per_sample=False``,
``model.augmenter.hard_gates=True``, or another objective
(``model.augment_loss_weights.student_inverse=0.0 model.augment_loss_weights.divergence=1.0``;
with ``transfer`` half of each batch is augmented, so B images give B / 2 views).
"""
import argparse
import itertools
import json
import os.path as osp
import sys
from typing import Dict, List

import torch
from mmengine.config import Config, DictAction
from mmengine.logging import MMLogger
from mmengine.registry import MODELS, DefaultScope
from mmengine.runner import Runner

import tst_mm  # noqa: F401
from tst_mm.distill.freeze import frozen

GROUPS = {'magnitude': 'magnitude_logits', 'probability': 'probability_logits'}


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('config', nargs='?')
    parser.add_argument('checkpoint', nargs='?',
                        help="a run's checkpoint (student, augmenter); none: the "
                        "student's initial weights and the initial policy")
    parser.add_argument('--teacher-ckpt')
    parser.add_argument('--images', type=int, nargs='+', default=[8, 32, 128])
    parser.add_argument('--estimates', type=int, default=8)
    parser.add_argument('--seed', type=int, default=0)
    parser.add_argument('--cfg-options', nargs='+', action=DictAction, default={})
    parser.add_argument('--label', default='', help='a name for this row in the output')
    parser.add_argument('--json', help='append the results (one JSON line) to this file')
    parser.add_argument('--report', metavar='JSONL',
                        help='print a markdown table of the results in JSONL and exit')
    args = parser.parse_args(argv)
    if not args.report and not args.config:
        parser.error('CONFIG is required (or --report JSONL)')
    return args


def report(path: str) -> None:
    """One row per measured state x term x parameter group: the cosine of two estimates
    (and the SNR of one) at each number of images."""
    with open(path) as f:
        runs = [json.loads(line) for line in f if line.strip()]
    images = sorted({r['images'] for run in runs for r in run['rows']})
    print('| state / estimator | term | group | ' +
          ' | '.join(f'cos (snr) at {n} images' for n in images) + ' |')
    print('|---' * (3 + len(images)) + '|')
    for run in runs:
        cells = {}
        for r in run['rows']:
            cells.setdefault((r['term'], r['group']), {})[r['images']] = r
        for (term, group), by_images in cells.items():
            values = [f"{by_images[n]['cos']:+.2f} ({by_images[n]['snr']:+.2f})"
                      if n in by_images else '-' for n in images]
            print(f"| {run['label']} | {term} | {group} | " + ' | '.join(values) + ' |')


def build(args):
    cfg = Config.fromfile(args.config)
    cfg.merge_from_dict(args.cfg_options)
    if args.teacher_ckpt:
        cfg.model.teacher_ckpt = args.teacher_ckpt
    scope = cfg.get('default_scope', 'mmdet')
    with DefaultScope.overwrite_default_scope(scope):
        torch.manual_seed(args.seed)
        model = MODELS.build(cfg.model)
        if args.checkpoint:
            state = torch.load(args.checkpoint, map_location='cpu', weights_only=False)
            state = state.get('state_dict', state)
            missing, _ = model.load_state_dict(state, strict=False)
            student_missing = [k for k in missing if k.startswith('student.')]
            if student_missing:
                raise KeyError(f'{args.checkpoint} lacks student weights, e.g. '
                               f'{student_missing[:3]}')
        loader = dict(cfg.train_dataloader)
        loader.update(num_workers=0, persistent_workers=False,
                      sampler=dict(type='InfiniteSampler', shuffle=True, seed=args.seed))
        dataloader = Runner.build_dataloader(loader, seed=args.seed)
    model.train()
    return model, dataloader, scope, loader['batch_size']


def gradient(model, batches, names) -> Dict[str, Dict[str, torch.Tensor]]:
    """The mean over ``batches`` of each term's gradient on the augmenter (and the
    terms' sum, ``'total'``), per parameter group."""
    params = {g: getattr(model.augmenter, attr) for g, attr in GROUPS.items()}
    sums = {}
    trained = [p for p in model.student.parameters() if p.requires_grad]
    for batch in batches:
        with frozen(model.student):
            terms, _ = model.augment_terms(model.data_preprocessor(batch, True), trained)
        live = [n for n in names if n in terms and terms[n].requires_grad]
        for i, name in enumerate(live):
            grads = torch.autograd.grad(terms[name], list(params.values()),
                                        retain_graph=i < len(live) - 1, allow_unused=True)
            for g, grad in zip(params, grads):
                grad = torch.zeros_like(params[g]) if grad is None else grad.detach()
                for key in (name, 'total'):
                    sums.setdefault(key, {}).setdefault(g, torch.zeros_like(grad))
                    sums[key][g] += grad
    return {k: {g: v / len(batches) for g, v in gs.items()} for k, gs in sums.items()}


def statistics(estimates: List[torch.Tensor]) -> Dict[str, float]:
    """Mean pairwise cosine and the signal-to-noise ratio of one estimate."""
    g = torch.stack([e.double() for e in estimates])
    unit = g / g.norm(dim=1, keepdim=True).clamp_min(1e-30)
    cosines = [float(unit[i] @ unit[j])
               for i, j in itertools.combinations(range(len(g)), 2)]
    mean = g.mean(0)
    noise = ((g - mean) ** 2).sum(1).sum() / (len(g) - 1)  # E|g - Eg|^2, unbiased
    signal = mean.pow(2).sum() - noise / len(g)  # |Eg|^2, its own noise removed
    return dict(cos=sum(cosines) / len(cosines), snr=float(signal / noise),
                norm=float(g.norm(dim=1).mean()))


def descent(estimates: List[torch.Tensor], names: List[str]) -> Dict[str, List[float]]:
    """Where one descent step moves each parameter: ``name -> [-mean gradient, z]``
    over the estimates, ``z`` the mean over its standard error (|z| > 2: the objective
    wants that direction beyond the noise of the estimates)."""
    g = torch.stack([e.double() for e in estimates])
    mean, error = g.mean(0), g.std(0) / len(g) ** 0.5
    z = -mean / error.clamp_min(1e-30)
    return {n: [float(-m), float(zi)] for n, m, zi in zip(names, mean, z)}


def main(argv=None) -> None:
    args = parse_args(argv)
    if args.report:
        report(args.report)
        return
    MMLogger.get_current_instance().setLevel('ERROR')
    model, dataloader, scope, batch_size = build(args)
    names = [n for n, w in model.augment_loss_weights.items() if w]
    param_names = dict(magnitude=list(model.augmenter.magnitude_names),
                       probability=list(model.augmenter.op_names))
    batches = iter(dataloader)
    results = dict(label=args.label, config=args.config, checkpoint=args.checkpoint,
                   options=args.cfg_options, policy=model.augmenter.policy(), rows=[])
    with DefaultScope.overwrite_default_scope(scope):
        for images in args.images:
            if images % batch_size:
                sys.exit(f'--images {images} is not a multiple of the batch size '
                         f'{batch_size}')
            estimates = [gradient(model, [next(batches) for _ in range(images //
                                                                       batch_size)],
                                  names)
                         for _ in range(args.estimates)]
            for term in estimates[0]:
                for group in GROUPS:
                    group_estimates = [e[term][group] for e in estimates]
                    stats = statistics(group_estimates)
                    row = dict(images=images, term=term, group=group, **stats,
                               descent=descent(group_estimates, param_names[group]))
                    results['rows'].append(row)
                    print(f'{args.label} images {images:4d} {term:16s} {group:11s} '
                          f'cos {stats["cos"]:+.3f}  snr {stats["snr"]:+.3f}  '
                          f'|g| {stats["norm"]:.3g}', flush=True)
                    sure = [f'{n} {"up" if z > 0 else "down"} (z {z:+.1f})'
                            for n, (_, z) in row['descent'].items() if abs(z) > 2]
                    print(f'    a descent step moves {group}: ' +
                          (', '.join(sure) or 'none beyond 2 standard errors'))
    if args.json:
        with open(args.json, 'a') as f:
            f.write(json.dumps(results) + '\n')


if __name__ == '__main__':
    sys.path.insert(0, osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__)))))
    main()
