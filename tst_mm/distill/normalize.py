"""Per-model input normalisation after augmentation in pixel space.

The augmenter works on RGB pixel values (0-255). The teacher and the student may expect
different inputs: a caffe-style teacher wants BGR with its own mean and no std scaling, a
pytorch-style student RGB with ImageNet mean/std. Each model gets a
:class:`InputNormalizer` built from its own ``data_preprocessor`` config.
"""
from typing import Optional, Sequence

import torch
import torch.nn as nn
from torch import Tensor


def valid_pixel_mask(samples: Optional[Sequence], shape: torch.Size,
                     device: torch.device) -> Optional[Tensor]:
    """N x 1 x H x W mask of each sample's real image inside the padded batch."""
    if not samples:
        return None
    n, _, h, w = shape
    sizes = torch.tensor([s.metainfo.get('img_shape', (h, w))[:2] for s in samples],
                         device=device)
    rows = torch.arange(h, device=device).view(1, 1, h, 1)
    cols = torch.arange(w, device=device).view(1, 1, 1, w)
    return (rows < sizes[:, 0].view(n, 1, 1, 1)) & (cols < sizes[:, 1].view(n, 1, 1, 1))


class InputNormalizer(nn.Module):
    """Turns an RGB pixel-space batch into what one model's data preprocessor makes.

    mmdet and mmseg normalise each image *before* padding, so their padding is 0 in
    normalised space; the padding is zeroed here too, so the model sees exactly the
    inputs it was built for.

    Args:
        preprocessor_cfg (dict): The model's ``data_preprocessor`` config (``mean``,
            ``std``, ``bgr_to_rgb`` / ``rgb_to_bgr``).
    """

    def __init__(self, preprocessor_cfg: Optional[dict]) -> None:
        super().__init__()
        cfg = dict(preprocessor_cfg or {})
        # Images are loaded BGR; a model whose preprocessor does no channel swap expects
        # BGR, while our augmented batch is RGB.
        self.to_bgr = not (cfg.get('bgr_to_rgb', False) or cfg.get('rgb_to_bgr', False))
        mean, std = cfg.get('mean'), cfg.get('std')
        if (mean is None) != (std is None):
            raise ValueError(f'data_preprocessor needs both mean and std or neither, got '
                             f'mean={mean}, std={std}')
        self.normalize = mean is not None
        if self.normalize:
            self.register_buffer('mean', torch.tensor(mean, dtype=torch.float32)
                                 .view(1, -1, 1, 1), persistent=False)
            self.register_buffer('std', torch.tensor(std, dtype=torch.float32)
                                 .view(1, -1, 1, 1), persistent=False)

    def forward(self, rgb: Tensor, samples: Optional[Sequence] = None) -> Tensor:
        x = rgb.flip(1) if self.to_bgr else rgb
        if self.normalize:
            x = (x - self.mean) / self.std
        valid = valid_pixel_mask(samples, x.shape, x.device)
        return x if valid is None else x * valid

    def extra_repr(self) -> str:
        order = 'BGR' if self.to_bgr else 'RGB'
        if not self.normalize:
            return f'{order}, not normalised'
        return f'{order}, mean={self.mean.flatten().tolist()}, std={self.std.flatten().tolist()}'
