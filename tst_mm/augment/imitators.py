"""Small frozen networks that imitate TST's pixel ops: the paper's "priori bias" module.

TST (Shao et al., IJCAI 2023) makes its augmenter a neural network "with priori bias":
each op is a small network initialised to reproduce it, and the op's magnitude and
probability are learned through that network. tst_mm's default augmenter uses the exact
ops (:mod:`tst_mm.augment.ops`); the networks here are the paper's alternative,
pre-trained once by ``tools/train_imitators.py`` and shipped in ``imitators.pth``.

An :class:`ImitatorNet` has the contract of a pixel op of :data:`tst_mm.augment.OPS`:
``net(img, value, ctx) -> change`` with ``img`` an N x 3 x H x W batch in pixel space
(0-255), ``value`` an N-vector in the op's unit and ``change`` the imitated
``T(img) - img``. The network:

1. sees the image scaled to [-1, 1], as one 3-channel image or (``per_channel``: ops
   that treat the channels alike and apart, e.g. Brightness, Solarize) as three
   1-channel ones; with a ``context`` branch, also standardised by its mean and
   standard deviation over the real image (``ctx.valid``), the cheap global statistics
   Contrast needs;
2. a ``kernel`` x ``kernel`` convolution (3 for Sharpness's neighbourhood) plus an
   embedding of ``value / scale`` (the value moves thresholds, e.g. Solarize's), ReLU,
   a 1x1 layer, ReLU, a 1x1 output, plus a linear skip convolution of the image (what
   the linear ops are); with ``context``, each first-layer unit's share of the real
   image above its threshold (a learned histogram) weighs ``context`` more per-pixel
   basis maps;
3. the change is that output times ``a(v) - a(0)`` for a tiny MLP ``a``: exactly zero
   at value 0, as the ops' contract asks.

The network's weights are frozen buffers (:func:`freeze`): gradients pass through it to
the value (magnitude) and to the gate (probability), never into it.
"""
from typing import Dict, Optional

import torch
import torch.nn as nn
import torch.nn.functional as F

from .ops import OPS, PIXEL_MAX, OpContext, _inner_mask

Tensor = torch.Tensor
STD_EPS = 2 / PIXEL_MAX  # one grey level (the image enters as [-1, 1])

# Per imitated op, the network's shape. Not imitated (the exact op runs): Cutout, whose
# change is a square at a random centre, a function of the noise and not of the image;
# and Equalize: it has no magnitude, so a net would open no new gradient path (its
# probability's gradient is the gate's either way), and a per-image histogram turned
# into a per-pixel lookup is the one op a small net imitates badly (hidden 24, 24
# statistics, 3000 steps: 19 grey levels mean error on held-out images, where the op
# itself changes pixels by 62).
IMITATOR_CFGS: Dict[str, dict] = {
    'Brightness': dict(per_channel=True),
    'Color': dict(),
    'Contrast': dict(context=8),
    'Sharpness': dict(per_channel=True, kernel=3),
    'Posterize': dict(per_channel=True, hidden=16, slope=4),
    'Solarize': dict(per_channel=True, hidden=24, slope=4),
    'Invert': dict(per_channel=True),
}


class ImitatorNet(nn.Module):
    """A small network imitating one pixel op (see the module docstring).

    Args:
        op (str): the pixel op of :data:`tst_mm.augment.OPS` it imitates.
        hidden (int): feature channels. Defaults to 12.
        kernel (int): size of the first convolution, 1 or 3. A 3x3 net changes no
            pixel whose window leaves the real image (as Sharpness, PIL's border
            rule). Defaults to 1.
        context (int): basis maps weighed by pooled image statistics (0: no context
            branch). Defaults to 0.
        per_channel (bool): one 1-channel network shared by the three channels.
            Defaults to False.
        slope (float): gain on the image and value entering the first layer: sharp
            thresholds (Solarize's) need steep first-layer units, which this puts
            within the optimiser's reach. Defaults to 1.
        scale (float, optional): the value that the network sees as 1 (its training
            values lie in [-1, 1]); None: the largest magnitude of the op's range in
            :data:`OPS` (1 for ops without a magnitude). Defaults to None.
    """

    def __init__(self, op: str, hidden: int = 12, kernel: int = 1, context: int = 0,
                 per_channel: bool = False, slope: float = 1.0,
                 scale: Optional[float] = None) -> None:
        super().__init__()
        if op not in OPS or OPS[op].geometric:
            raise ValueError(f'op must be a pixel op of OPS, got {op!r}')
        if hidden < 1 or kernel not in (1, 3) or context < 0 or not slope > 0:
            raise ValueError(f'bad imitator shape: hidden={hidden!r}, kernel={kernel!r}, '
                             f'context={context!r}, slope={slope!r}')
        if scale is None:
            rng = OPS[op].magnitude_range
            scale = 1.0 if rng is None else max(map(abs, rng))
        if not scale > 0:
            raise ValueError(f'scale must be > 0, got {scale!r}')
        self.op, self.scale = op, float(scale)
        self.cfg = dict(hidden=hidden, kernel=kernel, context=context,
                        per_channel=per_channel, slope=float(slope), scale=self.scale)
        channels = 1 if per_channel else 3
        inputs = 2 * channels if context else channels  # + the standardised image
        self.embed = nn.Conv2d(inputs, hidden, kernel, padding=kernel // 2)
        self.value_embed = nn.Linear(1, hidden, bias=False)
        self.mid = nn.Conv2d(hidden, hidden, 1)
        self.out = nn.Conv2d(hidden, channels, 1)
        self.skip = nn.Conv2d(channels, channels, kernel, padding=kernel // 2, bias=False)
        if context:
            self.context_mix = nn.Linear(hidden, context * channels)
            self.basis = nn.Conv2d(hidden, context * channels, 1)
        self.gain = nn.Sequential(nn.Linear(1, 8), nn.Tanh(), nn.Linear(8, 1))
        if per_channel and kernel == 1:  # ramps with kinks spread over the input range
            with torch.no_grad():
                self.embed.weight.zero_()[:, -1] = 1.0  # the standardised image if any
                span = 2.5 if context else 1.0
                self.embed.bias.copy_(-torch.linspace(-span, span, hidden) * slope)

    def forward(self, img: Tensor, value: Tensor, ctx: OpContext) -> Tensor:
        n, c, h, w = img.shape
        dtype = self.skip.weight.dtype  # the net's: fp32 weights on fp64 images work
        x = (img * (2 / PIXEL_MAX) - 1).to(dtype)
        v = (value / self.scale).to(dtype).view(n, 1)
        if self.cfg['per_channel']:  # channels become samples of a 1-channel network
            x = x.reshape(n * c, 1, h, w)
            v = v.repeat_interleave(c, 0)
        slope, inputs = self.cfg['slope'], x
        if self.cfg['context']:  # statistics over the real image only
            valid = ctx.valid.to(dtype).repeat_interleave(len(x) // n, 0)
            count = valid.sum((2, 3), keepdim=True).clamp(min=1)
            mean = (x * valid).sum((2, 3), keepdim=True) / count
            var = ((x - mean).square() * valid).sum((2, 3), keepdim=True) / count
            inputs = torch.cat([x, (x - mean) * torch.rsqrt(var + STD_EPS ** 2)], 1)
        first = F.relu(self.embed(inputs * slope) +
                       self.value_embed(v * slope)[..., None, None])
        feat = F.relu(self.mid(first))
        change = self.out(feat) + self.skip(x)
        if self.cfg['context']:  # image statistics weigh per-pixel basis functions
            stats = first.clamp(max=1) * valid  # per unit: 1 above its threshold
            stats = stats.sum((2, 3)) / count.flatten(1)
            k, m = self.cfg['context'], len(x)
            weights = self.context_mix(stats).view(m, -1, k, 1, 1)
            change = change + (self.basis(feat).view(m, -1, k, h, w) * weights).sum(2)
        gain = self.gain(v) - self.gain(torch.zeros_like(v))
        change = (change * (gain.view(-1, 1, 1, 1) * PIXEL_MAX)).reshape(n, c, h, w)
        if self.cfg['kernel'] > 1:  # as Sharpness: no change where the window leaves
            change = change * _inner_mask(ctx, img.shape, dtype)  # the real image
        return change.to(img.dtype)

    def extra_repr(self) -> str:
        return f'op={self.op!r}, scale={self.scale}'


def freeze(net: nn.Module) -> nn.Module:
    """Turn every parameter of ``net`` into a non-persistent buffer, in place.

    A frozen net still moves with ``.to()`` / ``.double()``, but it is not in
    ``parameters()`` (so no optimizer, gradient clipping or parameter bound sees it) nor
    in ``state_dict()`` (checkpoints hold the policy only; the weights come from their
    file), and no gradient is ever accumulated into it.
    """
    for module in net.modules():
        for name, param in list(module._parameters.items()):
            del module._parameters[name]
            module.register_buffer(name, None if param is None else param.detach(),
                                   persistent=False)
    return net


def save_imitators(nets: Dict[str, ImitatorNet], path: str,
                   meta: Optional[dict] = None) -> None:
    """Write trained nets as ``{'nets': {op: {'cfg', 'state_dict'}}, 'meta': meta}``."""
    torch.save({
        'nets': {op: dict(cfg=net.cfg, state_dict={k: v.detach().float().cpu()
                                                   for k, v in net.state_dict().items()})
                 for op, net in nets.items()},
        'meta': dict(meta or {}),
    }, path)


def load_imitators(path: str) -> Dict[str, ImitatorNet]:
    """The nets of a weights file written by :func:`save_imitators`, trainable."""
    blob = torch.load(path, map_location='cpu', weights_only=True)
    if not isinstance(blob, dict) or 'nets' not in blob:
        raise ValueError(f'{path} is not an imitator weights file (no `nets`); write one '
                         'with tools/train_imitators.py')
    nets = {}
    with torch.random.fork_rng(devices=[]):  # loading draws no random numbers
        for op, entry in blob['nets'].items():
            nets[op] = ImitatorNet(op, **entry['cfg'])
            nets[op].load_state_dict(entry['state_dict'])
    return nets
