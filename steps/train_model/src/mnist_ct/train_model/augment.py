"""Batched augmentation with torch ops only: a random small affine warp per image, plus a smooth elastic one."""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F


@dataclass(frozen=True)
class Augmentation:
    """Ranges of the random warp; all zero means no augmentation."""

    max_shift: float = 2.0  # pixels
    max_rotation: float = 10.0  # degrees
    max_scale: float = 0.1  # relative: scale in [1 - s, 1 + s]
    hflip: bool = False  # mirror half the images left-right (clothes, not digits)
    elastic: float = 0.0  # pixels: largest displacement of a smooth random field (Simard et al. 2003); 0: none
    elastic_grid: int = 4  # the field is random on this many x this many points, bicubically interpolated

    @property
    def enabled(self) -> bool:
        return bool(self.max_shift or self.max_rotation or self.max_scale or self.hflip or self.elastic)


def random_affine(images: torch.Tensor, aug: Augmentation, generator: torch.Generator) -> torch.Tensor:
    """Warp each image of [N,1,H,W] by its own random shift, rotation and scale; same shape and range.

    The random parameters come from `generator` on the CPU, so a seed gives the same warps on any device.
    Bilinear sampling with zero padding keeps values within the input's range ([0,1] stays [0,1]).
    """
    if not aug.enabled:
        return images
    n, _, h, w = images.shape
    u = torch.rand(n, 4, generator=generator) * 2 - 1  # uniform in [-1, 1)
    angle = u[:, 0] * math.radians(aug.max_rotation)
    scale = 1 + u[:, 1] * aug.max_scale
    # affine_grid works in [-1,1] coordinates: one pixel is 2/W wide.
    tx = u[:, 2] * aug.max_shift * 2 / w
    ty = u[:, 3] * aug.max_shift * 2 / h
    cos, sin = torch.cos(angle) / scale, torch.sin(angle) / scale
    # Mirroring negates the x input coordinate: the first column of the output->input map.
    flip = torch.where(torch.rand(n, generator=generator) < 0.5, -1.0, 1.0) if aug.hflip else torch.ones(n)
    theta = torch.stack([torch.stack([cos * flip, -sin, tx], 1), torch.stack([sin * flip, cos, ty], 1)], 1)
    theta = theta.to(device=images.device, dtype=images.dtype)
    grid = F.affine_grid(theta, [n, 1, h, w], align_corners=False)
    if aug.elastic:
        # A coarse random displacement field, upsampled smoothly: strokes bend and thicken locally the way
        # handwriting varies, which a global affine warp cannot do. In grid units (one pixel is 2/W).
        k = aug.elastic_grid
        coarse = (torch.rand(n, 2, k, k, generator=generator) * 2 - 1) * aug.elastic
        coarse = coarse * torch.tensor([2 / w, 2 / h]).view(1, 2, 1, 1)
        field = F.interpolate(coarse.to(device=images.device, dtype=images.dtype), size=(h, w), mode="bicubic")
        grid = grid + field.permute(0, 2, 3, 1)
    return F.grid_sample(images, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
