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


def random_blur(x: torch.Tensor, p: float = 0.2) -> torch.Tensor:
    """A 3x3 Gaussian blur on a random share of the batch: out-of-focus camera digits."""
    kernel = torch.tensor([1.0, 2.0, 1.0], device=x.device)
    kernel = (kernel[:, None] * kernel[None, :] / 16).expand(x.shape[1], 1, 3, 3)
    blurred = F.conv2d(x, kernel, padding=1, groups=x.shape[1])
    return torch.where(torch.rand(x.shape[0], 1, 1, 1, device=x.device) < p, blurred, x)


def random_crop_flip(x: torch.Tensor, pad: int = 4) -> torch.Tensor:
    """The CIFAR recipe: a random crop of the zero-padded image, and a horizontal flip half the time."""
    n, _, h, w = x.shape
    padded = F.pad(x, (pad, pad, pad, pad))
    dy = torch.randint(0, 2 * pad + 1, (n,), device=x.device)
    dx = torch.randint(0, 2 * pad + 1, (n,), device=x.device)
    rows = (dy[:, None] + torch.arange(h, device=x.device))[:, None, :, None].expand(n, x.shape[1], h, w + 2 * pad)
    out = padded.gather(2, rows)
    cols = (dx[:, None] + torch.arange(w, device=x.device))[:, None, None, :].expand(n, x.shape[1], h, w)
    out = out.gather(3, cols)
    flip = torch.rand(n, 1, 1, 1, device=x.device) < 0.5
    return torch.where(flip, out.flip(3), out)


def random_resized_crop(x: torch.Tensor, size: int, scale=(0.08, 1.0), ratio=(3 / 4, 4 / 3)) -> torch.Tensor:
    """torchvision's RandomResizedCrop + horizontal flip, batched through one affine grid."""
    n = x.shape[0]
    dev = x.device
    area = torch.empty(n, device=dev).uniform_(*scale)
    log_r = torch.empty(n, device=dev).uniform_(math.log(ratio[0]), math.log(ratio[1]))
    aspect = torch.exp(log_r)
    sw = torch.sqrt(area * aspect).clamp(max=1.0)  # crop width / image width
    sh = torch.sqrt(area / aspect).clamp(max=1.0)
    cx = (torch.rand(n, device=dev) * 2 - 1) * (1 - sw)
    cy = (torch.rand(n, device=dev) * 2 - 1) * (1 - sh)
    flip = torch.where(torch.rand(n, device=dev) < 0.5, -1.0, 1.0)
    zero = torch.zeros(n, device=dev)
    theta = torch.stack([torch.stack([sw * flip, zero, cx], 1), torch.stack([zero, sh, cy], 1)], 1)
    grid = F.affine_grid(theta, [n, x.shape[1], size, size], align_corners=False)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)


def color_jitter(x: torch.Tensor, strength: float = 0.4) -> torch.Tensor:
    """Random brightness, contrast and saturation per image (factors in 1 +- strength)."""
    n = x.shape[0]

    def factor():
        return torch.empty(n, 1, 1, 1, device=x.device).uniform_(1 - strength, 1 + strength)

    x = x * factor()
    mean = x.mean(dim=(1, 2, 3), keepdim=True)
    x = (x - mean) * factor() + mean
    gray = x.mean(dim=1, keepdim=True)
    x = (x - gray) * factor() + gray
    return x.clamp(0.0, 1.0)


def augment_batch(x: torch.Tensor, spec) -> torch.Tensor:
    """The augmentation that fits the dataset (spec.augment), on float 0..1 images."""
    if spec.augment == "digits":
        return random_blur(augment_digits(x))
    if spec.augment == "crop_flip":
        return random_crop_flip(x)
    if spec.augment == "resized_crop":
        return color_jitter(random_resized_crop(x, spec.size))
    raise ValueError(f"unknown augmentation {spec.augment!r}")
