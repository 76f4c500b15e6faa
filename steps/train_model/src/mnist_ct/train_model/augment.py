"""Batched augmentation with torch ops only: a random small affine warp per image."""

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

    @property
    def enabled(self) -> bool:
        return bool(self.max_shift or self.max_rotation or self.max_scale or self.hflip)


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
    return F.grid_sample(images, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
