"""What every inverse task loss is built from, whether the loss is a module
(:mod:`.inverse_losses`) or computed inline by a head (:mod:`.inline_inverses`): the
key of the tables that list them, the inverse of a softmax cross-entropy, and the
negation of a regression loss's output.

It imports neither of those modules, so both depend on it and
:mod:`.inverse_losses` on :mod:`.inline_inverses`, one way.
"""
import math
from typing import Any

import torch
import torch.nn as nn
from torch import Tensor


def class_key(cls: type) -> str:
    """'package.ClassName', the key of ``INVERSIONS``, ``INLINE_INVERSES`` and the
    other tables of inverses."""
    return f'{cls.__module__.split(".")[0]}.{cls.__name__}'


def module_key(module: nn.Module) -> str:
    """:func:`class_key` of the module's exact class."""
    return class_key(type(module))


def inverse_softmax_logits(logits: Tensor, label: Tensor) -> Tensor:
    """Logits ``z`` with ``cross_entropy(z, label) == -log(1 - softmax(logits)_label)``.

    With ``x = logits``, ``y = label`` and ``C`` classes, ``z_y = logsumexp_{c != y} x_c``
    and ``z_c = x_y - log(C - 1)`` for ``c != y``. Then ``logsumexp_c z_c =
    logsumexp_c x_c`` and ``CE(z, y) = logsumexp_c x_c - logsumexp_{c != y} x_c =
    -log(1 - p_y)``, computed from log-sum-exps only, so it stays finite when ``p_y``
    rounds to 1. Feeding ``z`` to the original loss module keeps its weighting and
    reduction. Entries whose label is not a class (``ignore_index``) get arbitrary
    logits; the original loss ignores them.

    Args:
        logits (Tensor): (N, C, ...) scores, classes on dim 1.
        label (Tensor): (N, ...) integer class indices.

    Returns:
        Tensor: The transformed logits, shape of ``logits``.
    """
    if label.dim() != logits.dim() - 1 or label.is_floating_point():
        raise ValueError('the inverse softmax cross-entropy needs integer class labels of '
                         f'shape (N, ...) for logits (N, C, ...); got logits '
                         f'{tuple(logits.shape)} and labels {tuple(label.shape)} of '
                         f'{label.dtype} (soft or one-hot targets are not supported)')
    num_classes = logits.size(1)
    if num_classes < 2:
        raise ValueError(f'softmax over {num_classes} class(es) has no inverse: '
                         f'1 - p_y is always 0 (logits shape {tuple(logits.shape)})')
    safe = label.long().clamp(0, num_classes - 1).unsqueeze(1)
    is_label = torch.zeros_like(logits, dtype=torch.bool).scatter_(1, safe, True)
    lse_others = logits.masked_fill(is_label, float('-inf')).logsumexp(1, keepdim=True)
    x_label = logits.gather(1, safe)
    return torch.where(is_label, lse_others, x_label - math.log(num_classes - 1))


def negate(output: Any) -> Any:
    """A loss output negated: a tensor, or a dict / tuple / list of them (nested)."""
    if isinstance(output, Tensor):
        return -output
    if isinstance(output, dict):
        return {k: negate(v) for k, v in output.items()}
    if isinstance(output, (tuple, list)):
        return type(output)(negate(v) for v in output)
    raise TypeError(f'cannot negate a loss output of type {type(output).__name__}')
