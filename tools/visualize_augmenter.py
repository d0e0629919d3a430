"""Draw what TSTAugmenter does to a config's training images, as one PNG grid.

    python tools/visualize_augmenter.py CONFIG [--num-images 4] [--views 3] [--seed 0]
        [--checkpoint CKPT] [--out work_dirs/augmenter.png] [--cfg-options KEY=VALUE ...]

1. build the config's train dataset and its model's data preprocessor, without mean/std
   and always RGB (also for caffe-style BGR models), so the batch is padded RGB pixels
   as the augmenter sees it in training;
2. build the augmenter from ``model.augmenter`` (the default TSTAugmenter if the config
   has none) and, with ``--checkpoint``, load its learned policy from a TST checkpoint;
3. one row per image: the original, then ``--views`` augmented draws, cropped to the real
   image; boxes (mmdet) drawn with their class names, label maps (mmseg) blended over the
   image in the dataset's palette (``metainfo['palette']``, e.g. Cityscapes' colours) with
   ignored pixels left clear; each draw is titled with the ops whose gate was on.
"""
import argparse
import os
import os.path as osp

import matplotlib

matplotlib.use('Agg')
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
from mmengine.config import Config, DictAction  # noqa: E402
from mmengine.dataset import pseudo_collate  # noqa: E402
from mmengine.registry import DATASETS, MODELS, init_default_scope  # noqa: E402

import tst_mm  # noqa: E402,F401  (registers TSTAugmenter)


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description='Draw TSTAugmenter outputs to a PNG.')
    parser.add_argument('config', help='an mmdet / mmseg (or TST) config file')
    parser.add_argument('--num-images', type=int, default=4)
    parser.add_argument('--views', type=int, default=3, help='augmented draws per image')
    parser.add_argument('--seed', type=int, default=0)
    parser.add_argument('--checkpoint', help='a TST checkpoint holding augmenter.* weights')
    parser.add_argument('--out', default='work_dirs/augmenter.png')
    parser.add_argument('--cfg-options', nargs='+', action=DictAction, default={})
    args = parser.parse_args(argv)
    if args.num_images < 1 or args.views < 1:
        parser.error(f'--num-images and --views must be >= 1, got {args.num_images}, '
                     f'{args.views}')
    return args


def pixel_batch(cfg, num_images):
    """The first ``num_images`` training samples, padded RGB pixels (no normalisation):
    what TSTDistiller's data preprocessor gives the augmenter in training, whatever
    channel order the model itself takes (caffe-style models: BGR)."""
    dataset = DATASETS.build(cfg.train_dataloader.dataset)
    items = [dataset[i] for i in range(min(num_images, len(dataset)))]
    model = cfg.model
    prep = model.get('data_preprocessor') or model.get('student', {}).get('data_preprocessor')
    if prep is None:
        raise ValueError('the config has no model.data_preprocessor (nor in model.student)')
    # As TSTDistiller builds its own: pixel space, RGB.
    prep = MODELS.build(dict(prep, mean=None, std=None, bgr_to_rgb=True,
                             rgb_to_bgr=False))
    with torch.no_grad():
        data = prep(pseudo_collate(items), training=True)
    return data['inputs'].float(), data['data_samples'], dataset.metainfo


def build_augmenter(cfg, checkpoint=None):
    augmenter = MODELS.build(cfg.model.get('augmenter') or dict(type='TSTAugmenter'))
    if checkpoint:
        state = torch.load(checkpoint, map_location='cpu')
        state = state.get('state_dict', state)
        own = {k[len('augmenter.'):]: v for k, v in state.items()
               if k.startswith('augmenter.')}
        if not own:
            raise KeyError(f'no augmenter.* weights in {checkpoint}')
        augmenter.load_state_dict(own)
    return augmenter


def drawn_ops(augmenter, draw, i):
    """'Rotate -12, Color +0.31': the ops sample ``i`` drew whose gate was on."""
    draw = draw._replace(weights=draw.weights.detach(), values=draw.values.detach())
    names = []
    for j, name in enumerate(augmenter.op_names):
        if draw.selected[i, j] and draw.weights[i, j] > 0.5:
            names.append(f'{name} {float(draw.values[i, j]):+.3g}'
                         if name in augmenter.magnitude_names else name)
    return ', '.join(names) or '(all gates off)'


def label_colors(palette=None) -> np.ndarray:
    """RGBA (0-1) for each label id 0-255: the dataset's palette where it has one, so
    classes look as in mmseg's own visualisations, else matplotlib's tab20."""
    colors = plt.cm.tab20(np.arange(256) % 20)
    if palette:
        palette = np.asarray(palette[:256], dtype=float) / 255
        colors[:len(palette), :3] = palette
    return colors


def show(ax, img, sample, metainfo, title):
    classes = metainfo.get('classes')
    h, w = sample.metainfo.get('img_shape', img.shape[-2:])
    ax.imshow(img[:, :h, :w].permute(1, 2, 0).clamp(0, 255).byte().cpu().numpy())
    inst = getattr(sample, 'gt_instances', None)
    if inst is not None and 'bboxes' in inst:
        boxes = inst.bboxes if isinstance(inst.bboxes, torch.Tensor) else inst.bboxes.tensor
        for (x1, y1, x2, y2), label in zip(boxes.tolist(), inst.labels.tolist()):
            color = plt.cm.tab10(label % 10)
            ax.add_patch(plt.Rectangle((x1, y1), x2 - x1, y2 - y1, fill=False, lw=1.2,
                                       ec=color))
            name = classes[label] if classes and label < len(classes) else str(label)
            ax.text(x1, y1, name, color='white', fontsize=6, va='bottom',
                    bbox=dict(fc=color, ec='none', pad=0.5))
    seg = getattr(sample, 'gt_sem_seg', None)
    if seg is not None:
        labels = seg.data[0, :h, :w].cpu().numpy()
        overlay = label_colors(metainfo.get('palette'))[labels]
        overlay[..., 3] = np.where(labels == 255, 0.0, 0.45)
        ax.imshow(overlay)
    ax.set_title(title, fontsize=6)
    ax.axis('off')


def main(argv=None):
    args = parse_args(argv)
    cfg = Config.fromfile(args.config)
    cfg.merge_from_dict(args.cfg_options)
    init_default_scope(cfg.get('default_scope', 'mmdet'))
    inputs, samples, metainfo = pixel_batch(cfg, args.num_images)
    augmenter = build_augmenter(cfg, args.checkpoint).to(inputs.device)
    n = len(inputs)
    fig, axes = plt.subplots(n, args.views + 1, squeeze=False,
                             figsize=(2.6 * (args.views + 1), 2.4 * n))
    for i in range(n):
        show(axes[i, 0], inputs[i], samples[i], metainfo, 'original')
    for v in range(args.views):
        torch.manual_seed(args.seed + v)  # the draw the forward below makes
        draw = augmenter.sample(n, inputs.device)
        torch.manual_seed(args.seed + v)
        with torch.no_grad():
            out, new = augmenter(inputs, samples)
        for i in range(n):
            show(axes[i, v + 1], out[i], new[i], metainfo, drawn_ops(augmenter, draw, i))
    fig.tight_layout()
    os.makedirs(osp.dirname(osp.abspath(args.out)), exist_ok=True)
    fig.savefig(args.out, dpi=150)
    plt.close(fig)
    print(f'wrote {args.out}')
    return args.out


if __name__ == '__main__':
    main()
