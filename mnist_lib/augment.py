"""Data augmentation on whole training batches, on the training device: random affine + elastic distortion.

    aug = Augment.from_config(cfg)            # None when every strength is 0 (the default)
    x_aug = aug(x)                            # x: (batch, 784) or (batch, 28, 28), normalized

One sampling grid per batch: an affine map (rotation, scale, shear, translation, a
fresh draw per image) plus, for elastic distortion, a random displacement field per
image (uniform in [-1, 1] per pixel and axis, smoothed with a Gaussian of
`aug_elastic_sigma` pixels, scaled to `aug_elastic_alpha` pixels; Simard et al.
2003), then one bilinear `grid_sample`. Pixels sampled from outside the image get the
background value, so the output stays within the input's value range. The random
draws come from torch's generator, so `seed` makes them reproducible. TrainStep
applies it to training batches only; validation and test never pass through it.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

SIDE = 28


@dataclass(frozen=True)
class Augment:
    """Strengths of each distortion; 0 turns one off."""

    rotate: float = 0.0  # max rotation, degrees (uniform in [-rotate, rotate])
    scale: float = 0.0  # max relative zoom (uniform in [1 - scale, 1 + scale])
    shear: float = 0.0  # max shear angle, degrees
    translate: float = 0.0  # max shift, pixels, per axis
    elastic_alpha: float = 0.0  # elastic displacement scale, pixels
    elastic_sigma: float = 4.0  # Gaussian smoothing of the displacement field, pixels
    background: float = 0.0  # value of an empty pixel (normalized data: -mean / std)

    @classmethod
    def from_config(cls, config, background: float = 0.0) -> Augment | None:
        aug = cls(
            rotate=config.aug_rotate,
            scale=config.aug_scale,
            shear=config.aug_shear,
            translate=config.aug_translate,
            elastic_alpha=config.aug_elastic_alpha,
            elastic_sigma=config.aug_elastic_sigma,
            background=background,
        )
        return aug if aug.active else None

    @property
    def active(self) -> bool:
        return any(v > 0 for v in (self.rotate, self.scale, self.shear, self.translate, self.elastic_alpha))

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        if not self.active:
            return x
        n = x.shape[0]
        img = x.reshape(n, 1, SIDE, SIDE).float() - self.background  # so zero padding means background
        grid = F.affine_grid(self._affine(n, img.device), [n, 1, SIDE, SIDE], align_corners=False)
        if self.elastic_alpha > 0:
            grid = grid + self._displacement(n, img.device)
        out = F.grid_sample(img, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
        return (out + self.background).reshape(x.shape).to(x.dtype)

    def _affine(self, n: int, device: torch.device, u: torch.Tensor | None = None) -> torch.Tensor:
        """(n, 2, 3) maps from output to input coordinates in [-1, 1]; `u` (5, n) in [-1, 1] fixes the draws."""
        if u is None:  # rows, not columns: contiguous draws per parameter
            u = torch.rand(5, n, device=device) * 2 - 1
        angle = torch.deg2rad(u[0] * self.rotate)
        shear = torch.deg2rad(u[1] * self.shear)
        zoom = 1 + u[2] * self.scale
        shift = u[3:].t() * (2 * self.translate / SIDE)  # pixels -> normalized coordinates
        cos, sin = torch.cos(angle), torch.sin(angle)
        # rotation @ shear, then divide by zoom: sampling the input at 1/zoom enlarges the digit
        a = torch.stack([cos, cos * torch.tan(shear) - sin], 1) / zoom[:, None]
        b = torch.stack([sin, sin * torch.tan(shear) + cos], 1) / zoom[:, None]
        return torch.stack([torch.cat([a, shift[:, :1]], 1), torch.cat([b, shift[:, 1:]], 1)], 1)

    def _displacement(self, n: int, device: torch.device) -> torch.Tensor:
        """(n, 28, 28, 2) smoothed random offsets, in normalized coordinates."""
        field = torch.rand(n * 2, SIDE, SIDE, device=device) * 2 - 1
        smooth = smoothing_matrix(self.elastic_sigma, str(device))
        # Gaussian along x, then along y: each one (n*2*28, 28) @ (28, 28) matmul, far cheaper than conv2d here
        field = (field.view(-1, SIDE) @ smooth.t()).view(-1, SIDE, SIDE).transpose(1, 2)
        field = (field.reshape(-1, SIDE) @ smooth.t()).view(-1, SIDE, SIDE).transpose(1, 2)
        # unit peak displacement per image and axis after smoothing, then alpha pixels
        field = field / field.abs().amax(dim=(1, 2), keepdim=True).clamp_min(1e-12)
        return (field * (2 * self.elastic_alpha / SIDE)).view(n, 2, SIDE, SIDE).permute(0, 2, 3, 1)


@functools.lru_cache(maxsize=8)
def smoothing_matrix(sigma: float, device: str = "cpu") -> torch.Tensor:
    """(28, 28) matrix S with S @ f = f convolved with the Gaussian, reflect-padded at the edges."""
    k = gaussian_kernel(sigma, device)
    pad = len(k) // 2
    basis = torch.eye(SIDE, device=device).unsqueeze(1)  # row j: the unit signal at position j
    columns = F.conv1d(F.pad(basis, (pad, pad), mode="reflect"), k.view(1, 1, -1)).squeeze(1)
    return columns.t().contiguous()  # column j is the response to position j


def gaussian_kernel(sigma: float, device: torch.device | str = "cpu") -> torch.Tensor:
    """1-D normalized Gaussian, radius 2 sigma (at most 13 so it fits the reflect padding of a 28-pixel image)."""
    radius = max(1, min(13, math.ceil(2 * sigma)))
    t = torch.arange(-radius, radius + 1, dtype=torch.float32, device=device)
    k = torch.exp(-0.5 * (t / sigma) ** 2)
    return k / k.sum()
