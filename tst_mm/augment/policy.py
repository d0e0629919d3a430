"""TST's learnable augmentation policy: magnitudes, probabilities and their sampling.

Per op: magnitude ``m = sigmoid(theta_m)`` mapped into the op's range, probability
``p = sigmoid(theta_p)`` over the whole of (0, 1), gate ``g ~ RelaxedBernoulli(p, tau)``
drawn by reparameterisation (Maddison et al., 2017; Jang et al., 2017). Both thetas start
at 0, the reference's initialisation. The reference feeds ``sigmoid(theta_p)`` in as a
*logit*, which pins p to 0.50-0.73; that bug is not reproduced.

This module only *samples* parameters (``TSTPolicy.sample``); applying them to images,
boxes and label maps is :class:`tst_mm.augment.TSTAugmenter`'s job.
"""
import math
from typing import Dict, List, NamedTuple, Optional, Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F
from mmengine.model import BaseModule

from .ops import OPS

Tensor = torch.Tensor


def relaxed_bernoulli(logits: Tensor, uniform: Tensor, temperature: float,
                      hard: bool = False) -> Tensor:
    """Reparameterised relaxed-Bernoulli gate ``sigmoid((logit + logistic noise) / tau)``.

    Args:
        logits (Tensor): log-odds of the gate being on, broadcast against ``uniform``.
        uniform (Tensor): U(0, 1) draws, one per gate.
        temperature (float): relaxation temperature tau (smaller: closer to 0/1).
        hard (bool): forward the hard 0/1 sample and backpropagate through the relaxed
            one (straight-through). Defaults to False.

    Returns:
        Tensor: gates in [0, 1], differentiable in ``logits``.
    """
    eps = torch.finfo(uniform.dtype).eps
    u = uniform.clamp(eps, 1 - eps)
    z = (logits + torch.log(u) - torch.log1p(-u)) / temperature
    # exp(log sigmoid(z)) = exp(-softplus(-z)) rather than sigmoid(z): same forward, but
    # the gradient g * sigmoid(-z) stays non-zero (if tiny) for a saturated gate, where
    # sigmoid's g * (1 - g) rounds to 0. (F.logsigmoid is as exact, but slow on CPU.)
    soft = torch.exp(-F.softplus(-z))
    if not hard:
        return soft
    return (z > 0).to(soft.dtype) + (soft - soft.detach())


def straight_through_bernoulli(logits: Tensor, uniform: Tensor) -> Tensor:
    """Hard ``Bernoulli(sigmoid(logit))`` gates whose gradient is that of their mean.

    The forward is exactly the 0/1 draw; the backward takes ``d gate / d logit`` as
    ``p (1 - p)``, the derivative of the gate's expectation ``p`` (the straight-through
    estimator of Bengio et al., 2013). So ``d loss / d logit = p (1 - p) dL/dg`` at
    the drawn gate: every draw contributes, where a relaxed gate at a low temperature
    passes a gradient only for the few draws near its threshold (the rest are
    saturated). Biased (a first-order estimate of ``L(on) - L(off)``), and far less
    noisy: docs/results.md measures both.

    Args:
        logits (Tensor): log-odds of the gate being on, broadcast against ``uniform``.
        uniform (Tensor): U(0, 1) draws, one per gate.

    Returns:
        Tensor: gates in {0, 1}, differentiable in ``logits``.
    """
    p = torch.sigmoid(logits)
    p = p.expand_as(uniform) if p.shape != uniform.shape else p
    return (uniform < p).to(p.dtype) + (p - p.detach())


GATE_ESTIMATORS = ('relaxed', 'straight_through')


def _logit(p: float, what: str) -> float:
    if not 0 < p < 1:
        raise ValueError(f'{what} must lie in (0, 1), got {p!r}')
    return math.log(p / (1 - p))


class PolicySample(NamedTuple):
    """One draw of the policy for a batch of N samples (``n`` ops)."""
    selected: Tensor  # N x n bool, on the CPU: which ops each sample applies (k per row)
    weights: Tensor  # N x n: selected * gate (0 = off), differentiable in theta_p
    values: Tensor  # N x n: sign * magnitude in each op's unit, differentiable in theta_m
    noise: Tensor  # N x 2 in [0, 1): per-sample randomness of the ops (Cutout's centre)


class TSTPolicy(BaseModule):
    """Learnable magnitudes and probabilities of the ops in :data:`tst_mm.augment.OPS`.

    Args:
        ops (Sequence[str], optional): op names, in table order or any order; None means
            all 14. Defaults to None.
        num_ops (int): ops drawn (without replacement) for each sample, or for the whole
            batch when ``per_sample`` is False. Defaults to 4, the reference's k.
        temperature (float): relaxed-Bernoulli temperature. Defaults to 0.05.
        per_sample (bool): draw ops, gates, signs and noise per sample (True) or once for
            the batch (False, the reference). Defaults to True.
        hard_gates (bool): straight-through gates (hard forward, relaxed backward).
            Gates are always hard in eval mode. Defaults to False.
        gate_estimator (str): how a gate's gradient reaches its probability:
            ``'relaxed'``, the reparameterised relaxed Bernoulli at ``temperature``
            (the reference's); ``'straight_through'``, hard Bernoulli gates with the
            gradient of their mean (:func:`straight_through_bernoulli`; the
            temperature and ``hard_gates`` are then unused). Defaults to 'relaxed'.
        op_cfgs (dict, optional): per-op overrides, ``{name: dict(range=(lo, hi),
            magnitude=m0, probability=p0)}`` with ``m0, p0`` in (0, 1) (the initial
            sigmoid values; 0.5 is theta = 0). Defaults to None.
    """

    def __init__(self, ops: Optional[Sequence[str]] = None, num_ops: int = 4,
                 temperature: float = 0.05, per_sample: bool = True,
                 hard_gates: bool = False, op_cfgs: Optional[Dict[str, dict]] = None,
                 init_cfg: Optional[dict] = None,
                 gate_estimator: str = 'relaxed') -> None:
        super().__init__(init_cfg)
        names = list(OPS) if ops is None else list(ops)
        unknown = [n for n in names if n not in OPS]
        if unknown or len(set(names)) != len(names) or not names:
            raise ValueError(f'ops must be distinct names from {list(OPS)}, got {ops!r}')
        if not 1 <= num_ops <= len(names):
            raise ValueError(f'num_ops must be in [1, {len(names)}], got {num_ops!r}')
        if not temperature > 0:
            raise ValueError(f'temperature must be > 0, got {temperature!r}')
        if gate_estimator not in GATE_ESTIMATORS:
            raise ValueError(f'gate_estimator must be one of {GATE_ESTIMATORS}, got '
                             f'{gate_estimator!r}')
        self.gate_estimator = gate_estimator
        op_cfgs = dict(op_cfgs or {})
        for name, cfg in op_cfgs.items():
            if name not in names:
                raise ValueError(f'op_cfgs names an op not in {names}: {name!r}')
            extra = set(cfg) - {'range', 'magnitude', 'probability'}
            if extra or (OPS[name].magnitude_range is None and
                         ({'range', 'magnitude'} & set(cfg))):
                raise ValueError(f'bad op_cfgs entry for {name!r}: {cfg!r}')
        self.op_names: List[str] = names
        self.num_ops, self.temperature = num_ops, float(temperature)
        self.per_sample, self.hard_gates = per_sample, hard_gates

        mag_names = [n for n in names if OPS[n].magnitude_range is not None]
        ranges = []
        for n in mag_names:
            lo, hi = op_cfgs.get(n, {}).get('range', OPS[n].magnitude_range)
            if not lo <= hi:
                raise ValueError(f'range of {n!r} must have lo <= hi, got {(lo, hi)!r}')
            ranges.append((float(lo), float(hi)))
        self.magnitude_names: List[str] = mag_names
        self.magnitude_logits = nn.Parameter(torch.tensor(
            [_logit(op_cfgs.get(n, {}).get('magnitude', 0.5), f'{n} magnitude')
             for n in mag_names]))
        self.probability_logits = nn.Parameter(torch.tensor(
            [_logit(op_cfgs.get(n, {}).get('probability', 0.5), f'{n} probability')
             for n in names]))
        self.register_buffer('_range', torch.tensor(ranges).view(-1, 2), persistent=False)
        # op j reads entry _gather[j] of [magnitudes..., 1.0] (1.0: fixed full strength)
        self.register_buffer('_gather', torch.tensor(
            [mag_names.index(n) if n in mag_names else len(mag_names) for n in names]),
            persistent=False)
        self.register_buffer('_signed', torch.tensor([OPS[n].signed for n in names]),
                             persistent=False)

    def magnitudes(self) -> Tensor:
        """Each op's magnitude in its own unit (1.0 for probability-only ops), n-vector."""
        lo, hi = self._range[:, 0], self._range[:, 1]
        scaled = lo + torch.sigmoid(self.magnitude_logits) * (hi - lo)
        return torch.cat([scaled, scaled.new_ones(1)])[self._gather]

    def probabilities(self) -> Tensor:
        return torch.sigmoid(self.probability_logits)

    @torch.no_grad()
    def policy(self) -> Dict[str, Dict[str, float]]:
        """``{op: {'magnitude': m, 'probability': p}}`` for logging (one host sync).

        ``magnitude`` is the learned ``sigmoid(theta_m)`` in (0, 1), 1.0 for
        probability-only ops.
        """
        m = torch.sigmoid(self.magnitude_logits)
        m = torch.cat([m, m.new_ones(1)])[self._gather]
        rows = torch.stack([m, self.probabilities()], 1).tolist()
        return {n: dict(magnitude=r[0], probability=r[1])
                for n, r in zip(self.op_names, rows)}

    def sample(self, batch_size: int, device: torch.device,
               dtype: torch.dtype = torch.float32) -> PolicySample:
        """Draw which ops apply, their gates, signs and noise for a batch.

        Which ops (k of n per row) is drawn from torch's global CPU generator, so the
        caller can skip unselected ops without reading anything back from the device;
        gates, signs and noise are drawn on ``device``. Both are seeded by
        ``torch.manual_seed``.
        """
        n, rows = len(self.op_names), batch_size if self.per_sample else 1
        order = torch.rand(rows, n).argsort(1)[:, :self.num_ops]
        selected = torch.zeros(rows, n, dtype=torch.bool).scatter_(1, order, True)
        uniform = torch.rand(rows, n, device=device, dtype=dtype)
        flip = torch.rand(rows, n, device=device) < 0.5
        noise = torch.rand(rows, 2, device=device, dtype=dtype)
        logits = self.probability_logits.to(dtype)
        if self.gate_estimator == 'straight_through':
            gates = straight_through_bernoulli(logits, uniform)
        else:
            gates = relaxed_bernoulli(logits, uniform, self.temperature,
                                      self.hard_gates or not self.training)
        sign = torch.where(flip & self._signed, -1.0, 1.0).to(dtype)
        weights = gates * selected.to(device=device, dtype=dtype, non_blocking=True)
        values = sign * self.magnitudes().to(dtype)
        if not self.per_sample:
            selected, weights = selected.expand(batch_size, n), weights.expand(batch_size, n)
            values, noise = values.expand(batch_size, n), noise.expand(batch_size, 2)
        return PolicySample(selected, weights, values, noise)

    def extra_repr(self) -> str:
        return (f'ops={self.op_names}, num_ops={self.num_ops}, '
                f'temperature={self.temperature}, per_sample={self.per_sample}, '
                f'hard_gates={self.hard_gates}, gate_estimator={self.gate_estimator!r}')
