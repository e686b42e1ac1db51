"""Data augmentation on whole training batches, on the training device: random affine + elastic distortion.

    aug = Augment.from_config(cfg)            # None when every strength is 0 (the default)
    x_aug = aug(x)                            # x: (batch, 784) or (batch, 28, 28), normalized

One sampling grid per batch: an affine map (rotation, scale, shear, translation, a
fresh draw per image) plus, for elastic distortion, a random displacement field per
image and axis (white noise smoothed with a Gaussian of `aug_elastic_sigma` pixels and
scaled to a peak of `aug_elastic_alpha` pixels; Simard et al. 2003), then one bilinear
`grid_sample`. The smoothed noise is drawn directly in the smoothing operator's top
singular vectors, which keep 99.8 % of its variance with about 22x fewer random draws
(6 x 6 instead of 28 x 28 at sigma 4). Pixels sampled from outside the image get the
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
        disp = self._displacement(n, img.device) if self.elastic_alpha > 0 else None
        grid = sampling_grid(self._affine(n, img.device), disp)
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
        """(n, 2, 784) smoothed random offsets (x, y), in normalized coordinates."""
        basis = smoothing_basis(self.elastic_sigma, str(device))  # (28, k)
        k = basis.shape[1]
        # S R S^T for white noise R equals, in distribution, A Z A^T with Z white in S's singular
        # basis; keeping the top k singular vectors needs (k/28)^2 of the serial random draws
        z = torch.randn(n * 2, k, k, device=device)
        field = basis @ (z.view(-1, k) @ basis.t()).view(-1, k, SIDE)  # (2n, 28, 28)
        field = field.view(n, 2, SIDE * SIDE)
        # unit peak displacement per image and axis after smoothing, then alpha pixels
        scale = (2 * self.elastic_alpha / SIDE) / field.abs().amax(dim=2, keepdim=True).clamp_min(1e-12)
        return field * scale


def sampling_grid(theta: torch.Tensor, disp: torch.Tensor | None = None) -> torch.Tensor:
    """F.affine_grid(theta, (n, 1, 28, 28), align_corners=False) plus offsets `disp` (n, 2, 784), in one batched matmul."""
    n = theta.shape[0]
    base = _base_grid(str(theta.device)).expand(n, 3, SIDE * SIDE)
    grid = torch.bmm(theta, base) if disp is None else torch.baddbmm(disp, theta, base)
    return grid.transpose(1, 2).view(n, SIDE, SIDE, 2)


@functools.lru_cache(maxsize=4)
def _base_grid(device: str) -> torch.Tensor:
    """(3, 784) rows x, y, 1 of every output pixel centre, row-major, in [-1, 1] (align_corners=False)."""
    c = (torch.arange(SIDE, dtype=torch.float32, device=device) * 2 + 1) / SIDE - 1
    y, x = torch.meshgrid(c, c, indexing="ij")
    return torch.stack([x.flatten(), y.flatten(), torch.ones(SIDE * SIDE, device=device)])


@functools.lru_cache(maxsize=8)
def smoothing_basis(sigma: float, device: str = "cpu", kept: float = 0.999) -> torch.Tensor:
    """(28, k) U_k diag(s_k) of S's SVD, the fewest singular vectors keeping `kept` of S's energy."""
    u, s, _ = torch.linalg.svd(smoothing_matrix(sigma, "cpu").double())
    energy = (s**2).cumsum(0) / (s**2).sum()
    k = int((energy < kept).sum()) + 1
    return (u[:, :k] * s[:k]).float().to(device)


def augmented_versions(images: torch.Tensor, aug: Augment, n: int, seed: int = 0) -> torch.Tensor:
    """(k, 1 + n, 28, 28): each of k images, then n independent draws of `aug` on it; torch's global RNG is left as it was."""
    x = images.reshape(len(images), 1, SIDE * SIDE).float()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        drawn = aug(x.expand(-1, n, -1).reshape(-1, SIDE * SIDE)).view(len(images), n, SIDE * SIDE)
    return torch.cat([x, drawn], 1).view(len(images), 1 + n, SIDE, SIDE)


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
