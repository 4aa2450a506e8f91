"""Batch augmentation on tensors (CPU or GPU), for digits seen through a camera.

Digits the runtime reads were normalised from photos: slightly rotated, sheared, off
centre, thinner or thicker than MNIST's pen. These transforms teach exactly that.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F


def random_affine(x: torch.Tensor, degrees: float = 12.0, scale=(0.85, 1.1), shear: float = 0.15,
                  translate: float = 0.12) -> torch.Tensor:
    """x: float N x C x H x W in 0..1 (background 0). One random affine map per image."""
    n = x.shape[0]
    dev = x.device
    angle = (torch.rand(n, device=dev) * 2 - 1) * math.radians(degrees)
    s = torch.empty(n, device=dev).uniform_(*scale)
    sh = (torch.rand(n, device=dev) * 2 - 1) * shear
    t = (torch.rand(n, 2, device=dev) * 2 - 1) * translate
    cos, sin = torch.cos(angle), torch.sin(angle)
    # grid_sample maps output to input coordinates, hence the inverse scale.
    theta = torch.stack(
        [
            torch.stack([cos / s, (-sin + sh * cos) / s, t[:, 0]], dim=1),
            torch.stack([sin / s, (cos + sh * sin) / s, t[:, 1]], dim=1),
        ],
        dim=1,
    )
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)


def random_stroke(x: torch.Tensor, p: float = 0.3) -> torch.Tensor:
    """Thicken or thin the ink of a random share of the batch.

    MNIST strokes are only 2-3 px wide, so a 3x3 erosion would erase them: thinning is a
    gamma that fades the anti-aliased rims, thickening a damped 3x3 dilation.
    """
    n = x.shape[0]
    r = torch.rand(n, 1, 1, 1, device=x.device)
    thick = torch.maximum(x, 0.8 * F.max_pool2d(x, 3, stride=1, padding=1))
    thin = x * x
    out = torch.where(r < p / 2, thick, x)
    return torch.where((r >= p / 2) & (r < p), thin, out)


def augment_digits(x: torch.Tensor) -> torch.Tensor:
    return random_stroke(random_affine(x))
