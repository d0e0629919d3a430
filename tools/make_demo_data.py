"""Writes the digits demo sets (COCO detection, Cityscapes segmentation) offline.

    python tools/make_demo_data.py --out data/digits --kind both

``--kind coco`` or ``cityscapes`` writes the set straight into ``--out``; ``both``
writes ``OUT/coco`` and ``OUT/cityscapes``. A set already present with the same
parameters is left untouched. See ``tst_mm/datasets/digits.py`` for the layouts.
"""
import argparse
import os.path as osp
import time

from tst_mm.datasets import ensure_digits_set

_DEFAULT_SIZE = {'coco': (256, 256), 'cityscapes': (128, 256)}


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--out', required=True, help='output folder')
    parser.add_argument('--kind', choices=('coco', 'cityscapes', 'both'), default='both',
                        help='which layout to write (default: both)')
    parser.add_argument('--num-train', type=int, default=200,
                        help='training images per set (default: 200)')
    parser.add_argument('--num-val', type=int, default=50,
                        help='validation images per set (default: 50)')
    parser.add_argument('--image-size', type=int, nargs=2, metavar=('H', 'W'),
                        help='image height and width (default: 256 256 for coco, '
                        '128 256 for cityscapes)')
    parser.add_argument('--digits-per-image', type=int, nargs=2, metavar=('MIN', 'MAX'),
                        default=(2, 6), help='digits per image (default: 2 6)')
    parser.add_argument('--digit-size', type=int, nargs=2, metavar=('MIN', 'MAX'),
                        help='digit height range in pixels (default: an eighth to '
                        '30%% of the short side)')
    parser.add_argument('--seed', type=int, default=0, help='seed (default: 0)')
    return parser.parse_args(argv)


def main(argv=None) -> None:
    args = parse_args(argv)
    kinds = ('coco', 'cityscapes') if args.kind == 'both' else (args.kind, )
    for kind in kinds:
        root = osp.join(args.out, kind) if args.kind == 'both' else args.out
        start = time.perf_counter()
        _, written = ensure_digits_set(
            kind, root, num_train=args.num_train, num_val=args.num_val,
            image_size=tuple(args.image_size or _DEFAULT_SIZE[kind]), seed=args.seed,
            digits_per_image=tuple(args.digits_per_image),
            digit_size=tuple(args.digit_size) if args.digit_size else None)
        if written:
            print(f'{kind}: wrote {args.num_train} train + {args.num_val} val images '
                  f'to {root} in {time.perf_counter() - start:.1f} s')
        else:
            print(f'{kind}: already present in {root} (same parameters), nothing written')


if __name__ == '__main__':
    main()
