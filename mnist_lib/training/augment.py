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
draws come from torch's generator, so `seed` makes them reproducible. A population
augments every member's batch in one pass (StackedAugment, per-member strengths);
train.PopulationStep applies it to training batches only; validation and test
never pass through it.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence
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
        """x (n, 784) or (n, 28, 28): each image through its own random distortion (StackedAugment with one member)."""
        if not self.active:
            return x
        return StackedAugment([self], x.device)(x.reshape(1, x.shape[0], -1)).reshape(x.shape)

    def _affine(self, n: int, device: torch.device | str, u: torch.Tensor | None = None) -> torch.Tensor:
        """(n, 2, 3) maps from output to input coordinates in [-1, 1]; `u` (5, n) in [-1, 1] fixes the draws."""
        if u is None:
            u = torch.rand(5, n, device=device) * 2 - 1
        return affine_maps(u, self.rotate, self.shear, self.scale, self.translate)

    def _displacement(self, n: int, device: torch.device | str) -> torch.Tensor:
        """(n, 2, 784) smoothed random offsets (x, y), in normalized coordinates."""
        return StackedAugment([self], device).displacement(1, n)


class StackedAugment:
    """Each member's Augment on its own batch, all members in one pass: x [M, B, 784] -> [M, B, 784].

    Per-member strengths are [M, 1] columns that broadcast over the member's batch, so
    a population augments in the same dozen ops whatever M is. A member without
    augmentation (None) gets its batch back untouched. Everything the pass needs but
    its random draws (strengths, smoothing bases, the base grid) is made here, once:
    a CUDA-graph capture may not allocate or copy from the host (graphs.py).
    Draws: the elastic noise (M, 2B, k, k), then the affine parameters (5, M, B); for
    one member these are the same numbers as before populations existed.
    """

    def __init__(self, augments: Sequence[Augment | None], device: torch.device | str) -> None:
        device = torch.device(device)
        on = [a is not None and a.active for a in augments]
        augs = [a if a_on else Augment() for a, a_on in zip(augments, on, strict=True)]

        def column(name: str) -> torch.Tensor:
            return torch.tensor([float(getattr(a, name)) for a in augs], dtype=torch.float32, device=device).view(-1, 1)

        self.rotate, self.shear, self.scale, self.translate = (column(f) for f in ("rotate", "shear", "scale", "translate"))
        self.alpha = column("elastic_alpha").unsqueeze(2)  # [M, 1, 1]
        self.background = column("background").unsqueeze(2)  # [M, 1, 1]
        self.elastic = any(a.elastic_alpha > 0 for a in augs)
        self.basis = None
        if self.elastic:  # each member's (28, k_m) basis, zero-padded to the largest k: the padding meets noise it ignores
            bases = [smoothing_basis(a.elastic_sigma) if a.elastic_alpha > 0 else torch.zeros(SIDE, 1) for a in augs]
            padded = torch.zeros(len(augs), SIDE, max(b.shape[1] for b in bases))
            for m, b in enumerate(bases):
                padded[m, :, : b.shape[1]] = b
            self.basis = padded.to(device)
        self.base_grid = _base_grid(str(device))
        self.augmented = None if all(on) else torch.tensor(on, device=device).view(-1, 1, 1)  # members left untouched

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        m, b = x.shape[:2]
        img = x.reshape(m, b, SIDE * SIDE).float() - self.background  # so zero padding means background
        disp = self.displacement(m, b) if self.elastic else None
        u = torch.rand(5, m, b, device=x.device) * 2 - 1
        theta = affine_maps(u, self.rotate, self.shear, self.scale, self.translate).view(m * b, 2, 3)
        grid = sampling_grid(theta, disp, self.base_grid)
        out = F.grid_sample(img.view(m * b, 1, SIDE, SIDE), grid, mode="bilinear", padding_mode="zeros", align_corners=False)
        out = (out.view(m, b, SIDE * SIDE) + self.background).view(x.shape).to(x.dtype)
        return out if self.augmented is None else torch.where(self.augmented, out, x)

    def displacement(self, m: int, b: int) -> torch.Tensor:
        """(m * b, 2, 784) smoothed random offsets (x, y) per image, in normalized coordinates."""
        k = self.basis.shape[2]
        # S R S^T for white noise R equals, in distribution, A Z A^T with Z white in S's singular
        # basis; keeping the top k singular vectors needs (k/28)^2 of the serial random draws
        z = torch.randn(m, b * 2, k, k, device=self.basis.device)
        inner = torch.bmm(z.view(m, -1, k), self.basis.transpose(1, 2)).view(m, b * 2, k, SIDE)
        field = (self.basis.unsqueeze(1) @ inner).view(m, b * 2, SIDE * SIDE)
        # unit peak displacement per image and axis after smoothing, then alpha pixels
        scale = (2 * self.alpha / SIDE) / field.abs().amax(dim=2, keepdim=True).clamp_min(1e-12)
        return (field * scale).view(m * b, 2, SIDE * SIDE)


def affine_maps(u: torch.Tensor, rotate, shear, scale, translate) -> torch.Tensor:
    """(*S, 2, 3) maps from output to input coordinates for draws u (5, *S) in [-1, 1]; strengths are numbers or broadcast to S."""
    angle = torch.deg2rad(u[0] * rotate)
    shear = torch.deg2rad(u[1] * shear)
    zoom = 1 + u[2] * scale
    shift_x, shift_y = u[3] * (2 * translate / SIDE), u[4] * (2 * translate / SIDE)  # pixels -> normalized coordinates
    cos, sin = torch.cos(angle), torch.sin(angle)
    # rotation @ shear, then divide by zoom: sampling the input at 1/zoom enlarges the digit
    a = torch.stack([cos / zoom, (cos * torch.tan(shear) - sin) / zoom, shift_x], -1)
    b = torch.stack([sin / zoom, (sin * torch.tan(shear) + cos) / zoom, shift_y], -1)
    return torch.stack([a, b], -2)


def sampling_grid(theta: torch.Tensor, disp: torch.Tensor | None = None, base: torch.Tensor | None = None) -> torch.Tensor:
    """F.affine_grid(theta, (n, 1, 28, 28), align_corners=False) plus offsets `disp` (n, 2, 784), in one batched matmul."""
    n = theta.shape[0]
    base = (_base_grid(str(theta.device)) if base is None else base).expand(n, 3, SIDE * SIDE)
    grid = torch.bmm(theta, base) if disp is None else torch.baddbmm(disp, theta, base)
    return grid.transpose(1, 2).view(n, SIDE, SIDE, 2)


@functools.lru_cache(maxsize=4)
def _base_grid(device: str) -> torch.Tensor:
    """(3, 784) rows x, y, 1 of every output pixel centre, row-major, in [-1, 1] (align_corners=False)."""
    c = (torch.arange(SIDE, dtype=torch.float32, device=device) * 2 + 1) / SIDE - 1
    y, x = torch.meshgrid(c, c, indexing="ij")
    return torch.stack([x.flatten(), y.flatten(), torch.ones(SIDE * SIDE, device=device)])


@functools.lru_cache(maxsize=8)
def smoothing_basis(sigma: float, kept: float = 0.999) -> torch.Tensor:
    """(28, k) U_k diag(s_k) of S's SVD, the fewest singular vectors keeping `kept` of S's energy (on the CPU)."""
    u, s, _ = torch.linalg.svd(smoothing_matrix(sigma, "cpu").double())
    energy = (s**2).cumsum(0) / (s**2).sum()
    k = int((energy < kept).sum()) + 1
    return (u[:, :k] * s[:k]).float()


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
