"""TSTImitationAugmenter: TSTAugmenter with the paper's imitator networks for pixel ops."""
import os.path as osp
from typing import List, Optional, Sequence, Tuple

import torch
import torch.nn as nn
from mmengine.registry import MODELS

from .augmenter import TSTAugmenter
from .imitators import freeze, load_imitators
from .ops import OPS, OpContext

Tensor = torch.Tensor
DEFAULT_WEIGHTS = osp.join(osp.dirname(osp.abspath(__file__)), 'imitators.pth')


@MODELS.register_module()
class TSTImitationAugmenter(TSTAugmenter):
    """TSTAugmenter whose pixel ops go through frozen networks that imitate them.

    This is TST's own augmentation module, "with priori bias" (Shao et al., IJCAI 2023):
    each op is a small network initialised to reproduce it (pre-trained by
    ``tools/train_imitators.py``, see :mod:`tst_mm.augment.imitators`; held-out errors
    in docs/benchmarks.md) and frozen, and the op's magnitude and probability are learned
    through it. A magnitude's gradient is then the network's ``d change / d value``
    instead of the exact op's (or, for Posterize and Solarize, instead of a
    straight-through surrogate); a probability's gradient is, as in TSTAugmenter, the
    gate's through the residual sum ``x + sum_i g_i * change_i``. The exact augmenter
    (:class:`TSTAugmenter`) stays the default: it is exact and faster.

    Geometric ops are NOT imitated: they stay the exact affine matrix, composed into one
    warp, so boxes, instance masks and label maps follow the geometry exactly, as in
    TSTAugmenter. The nets draw no random numbers, so under the same seed both
    augmenters draw the same ops, gates, signs and noise, and warp identically.
    Ops without a net (Cutout: its change is a square at a random centre, not a function
    of the image; any op left out of ``imitated_ops``) use the exact op.

    The nets' weights are non-persistent buffers (:func:`imitators.freeze`): not
    parameters, so the augmenter's optimizer, its gradient clipping and the distiller's
    parameter bound see the policy logits only, and not in ``state_dict()``, so a
    checkpoint holds the same keys as TSTAugmenter's and loads into either augmenter
    (the nets come from ``imitator_weights`` again).

    Args:
        imitator_weights (str, optional): a weights file written by
            ``tools/train_imitators.py``. None: the shipped
            ``tst_mm/augment/imitators.pth``. Defaults to None.
        imitated_ops (Sequence[str], optional): which of the augmenter's pixel ops go
            through their nets; each must have one in the weights file. None: every op
            of the augmenter that has one. Defaults to None.
        **kwargs: :class:`TSTAugmenter`'s arguments (``ops``, ``num_ops``,
            ``temperature``, ``per_sample``, ``hard_gates``, ``op_cfgs``, ...).
    """

    def __init__(self, imitator_weights: Optional[str] = None,
                 imitated_ops: Optional[Sequence[str]] = None, **kwargs) -> None:
        super().__init__(**kwargs)
        path = DEFAULT_WEIGHTS if imitator_weights is None else imitator_weights
        if not osp.isfile(path):
            raise FileNotFoundError(f'imitator_weights {path!r} does not exist; write '
                                    'one with tools/train_imitators.py')
        nets = load_imitators(path)
        if imitated_ops is None:
            names = [n for n in self.op_names if n in nets]
        else:
            names = list(imitated_ops)
            bad = [n for n in names if n not in nets or n not in self.op_names]
            if bad:
                raise ValueError(f'imitated_ops must be ops of this augmenter '
                                 f'({self.op_names}) with a net in {path} '
                                 f'({sorted(nets)}), got {bad!r}')
        self._check_ranges(names, nets, path)
        self.imitator_weights = path
        self.imitators = nn.ModuleDict({n: freeze(nets[n]) for n in names})

    def _check_ranges(self, names: List[str], nets: dict, path: str) -> None:
        """A net was trained for |value| up to its ``scale``: refuse wider ranges."""
        for name in names:
            if name not in self.magnitude_names:
                continue
            lo, hi = self._range[self.magnitude_names.index(name)].tolist()
            if max(abs(lo), abs(hi)) > nets[name].scale * (1 + 1e-6):
                raise ValueError(
                    f'the {name} net of {path} was trained for values up to '
                    f'{nets[name].scale}, but op_cfgs gives it the range {(lo, hi)!r}; '
                    'train one for that range with tools/train_imitators.py')

    def _pixel_change(self, name: str, img: Tensor, weight: Tensor, value: Tensor,
                      ctx: OpContext) -> Tuple[Tensor, Tensor]:
        """The net's change for an imitated op (coefficient: the gate), else the exact
        op's. An op without a magnitude has no value to learn: its net runs without
        autograd, and its probability's gradient flows through the gate as before."""
        if name not in self.imitators:
            return super()._pixel_change(name, img, weight, value, ctx)
        net = self.imitators[name]
        if OPS[name].magnitude_range is None:
            with torch.no_grad():
                return net(img, value, ctx), weight
        return net(img, value, ctx), weight

    def extra_repr(self) -> str:
        return (f'{super().extra_repr()}, imitated_ops={list(self.imitators)}, '
                f'imitator_weights={self.imitator_weights!r}')
