"""Turn an ordinary digit picture (PNG/JPEG) into MNIST's form.

MNIST digits are white on black, fitted into a 20x20 box that keeps the aspect
ratio, and placed in a 28x28 frame with their centre of mass at the centre.
`to_mnist` does the same to a photo or a drawing of one digit.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageOps, UnidentifiedImageError

from .errors import UserError


def to_mnist(image: Image.Image) -> torch.Tensor:
    """A PIL image of one digit -> uint8 tensor 28 x 28, white digit on black."""
    gray = ImageOps.exif_transpose(image).convert("L")
    arr = np.asarray(gray, dtype=np.float32)
    # a light background (most photos and drawings) means a dark digit: invert
    if np.median(arr) > 127:
        arr = 255.0 - arr
    arr = np.clip(arr - np.median(arr), 0, None)  # drop the background level
    if arr.max() <= 0:
        raise UserError("the image is blank: no digit found")
    arr = arr * (255.0 / arr.max())
    rows, cols = np.nonzero(arr > 0.2 * 255)
    crop = arr[rows.min() : rows.max() + 1, cols.min() : cols.max() + 1]
    h, w = crop.shape
    scale = 20.0 / max(h, w)
    size = (max(1, round(w * scale)), max(1, round(h * scale)))
    small = np.asarray(Image.fromarray(crop.astype(np.uint8)).resize(size, Image.Resampling.LANCZOS), dtype=np.float32)
    canvas = np.zeros((28, 28), dtype=np.float32)
    total = small.sum()
    ys, xs = np.indices(small.shape)
    cy, cx = (ys * small).sum() / total, (xs * small).sum() / total
    top = int(np.clip(round(14 - cy), 0, 28 - small.shape[0]))
    left = int(np.clip(round(14 - cx), 0, 28 - small.shape[1]))
    canvas[top : top + small.shape[0], left : left + small.shape[1]] = small
    return torch.from_numpy(np.clip(canvas, 0, 255).astype(np.uint8))


def load_digit(path: str | Path) -> torch.Tensor:
    """Read an image file and convert it with `to_mnist`; unreadable files are a UserError."""
    try:
        with Image.open(path) as img:
            return to_mnist(img)
    except FileNotFoundError:
        raise UserError(f"{path}: file not found") from None
    except (UnidentifiedImageError, OSError) as e:
        raise UserError(f"{path}: not a readable image ({e})") from None
    except UserError as e:
        raise UserError(f"{path}: {e}") from None
