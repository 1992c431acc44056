"""Batch augmentation on cached uint8 pixels, run as tensor ops (cheap on CPU).

The validation style is unseen, so the image tower is pushed to ignore
style cues: small affine jitter, colour jitter, grayscale and channel swaps.
No horizontal flips: "arrow left" must stay left.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F


def to_tensor(pixels, mean, std, device) -> torch.Tensor:
    """uint8 (B,H,W,3) -> normalised float (B,3,H,W)."""
    x = torch.from_numpy(np.ascontiguousarray(pixels)).to(device).permute(0, 3, 1, 2).float().div_(255.0)
    m = torch.tensor(mean, device=device).view(1, 3, 1, 1)
    s = torch.tensor(std, device=device).view(1, 3, 1, 1)
    return (x - m) / s


def augment(x: torch.Tensor, gen: torch.Generator, strength: float = 1.0) -> torch.Tensor:
    """x: float (B,3,H,W) in 0..1 (before normalisation); returns the same shape."""
    if strength <= 0:
        return x
    b = x.shape[0]
    dev = x.device

    def u(lo, hi, *shape):
        return lo + (hi - lo) * torch.rand(*(shape or (b,)), generator=gen, device="cpu").to(dev)

    # Affine: scale 0.75..1.1, translate +-10%, rotate +-10deg; pad with white.
    s = 1.0 / u(1 - 0.25 * strength, 1 + 0.1 * strength)
    a = u(-0.17, 0.17) * strength
    tx, ty = u(-0.1, 0.1) * strength, u(-0.1, 0.1) * strength
    theta = torch.stack(
        [torch.stack([s * a.cos(), -s * a.sin(), tx], 1), torch.stack([s * a.sin(), s * a.cos(), ty], 1)], 1
    )
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    x = F.grid_sample(x - 1.0, grid, mode="bilinear", padding_mode="zeros", align_corners=False) + 1.0
    # Colour: brightness/contrast/saturation jitter, 20% grayscale, 20% channel permutation.
    gray = x.mean(1, keepdim=True)
    sat = u(1 - 0.5 * strength, 1 + 0.3 * strength).view(b, 1, 1, 1)
    sat = torch.where(u(0, 1).view(b, 1, 1, 1) < 0.2 * strength, torch.zeros_like(sat), sat)
    x = gray + (x - gray) * sat
    con = u(1 - 0.3 * strength, 1 + 0.3 * strength).view(b, 1, 1, 1)
    mean = x.mean((1, 2, 3), keepdim=True)
    x = mean + (x - mean) * con + u(-0.1, 0.1).view(b, 1, 1, 1) * strength
    perm = torch.randperm(3, generator=gen).to(dev)
    swap = (u(0, 1) < 0.2 * strength).view(b, 1, 1, 1)
    x = torch.where(swap, x[:, perm], x)
    return x.clamp_(0, 1)
