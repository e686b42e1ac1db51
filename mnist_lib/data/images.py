"""Turn an ordinary digit picture (PNG/JPEG/...) into MNIST's form.

    digit = load_digit("my_digit.png")     # uint8 tensor 28 x 28, white digit on black

MNIST digits are white on black, fitted into a 20x20 box that keeps the aspect
ratio, and placed in a 28x28 frame with their centre of mass at the centre.
`to_mnist` does the same to a photo or a drawing of one digit, in any PIL mode:
16-bit and float images are scaled to 8 bits, and transparent pixels (a drawing
exported on a transparent background) are composited on white, or on black when
the strokes themselves are white.

`load_digit` treats the file as untrusted: an image of more than MAX_PIXELS is
refused from its header, before any pixel is decoded (a 400 KB PNG can declare
20000 x 20000 pixels), and anything the decoder cannot read is one UserError.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageOps

from ..core.errors import UserError
from ..core.files import user_path

MAX_PIXELS = 50_000_000  # 50 megapixels: every phone photo, far below what a decompression bomb declares
WORK_SIDE = 1024  # larger pictures are box-averaged down to this first: the result is 28 x 28 anyway
SIXTEEN_BIT = 257.0  # 65535 / 255


def load_digit(path: str | Path) -> torch.Tensor:
    """Read an image file and convert it with `to_mnist`; every unreadable or hostile file is a UserError naming it."""
    image = open_image(path)
    try:
        return to_mnist(image)
    except UserError as e:
        raise UserError(f"{path}: {e}") from None


def open_image(path: str | Path) -> Image.Image:
    """Decode the first frame of an image file, refusing oversized ones before decoding."""
    path = user_path(path, "image")
    if not path.is_file():
        raise UserError(f"{path}: file not found" if not path.exists() else f"{path}: not a file")
    with warnings.catch_warnings():
        # PIL only warns between MAX_IMAGE_PIXELS and twice that; make it an error like the rest
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        try:
            with Image.open(path) as img:
                w, h = img.size
                if w * h > MAX_PIXELS:
                    raise UserError(_too_large(path, w, h))
                img.load()
                img.getexif()  # parsed now, so a malformed EXIF block is this file's error, not to_mnist's
                return img.copy()
        except UserError:
            raise
        except (Image.DecompressionBombError, Image.DecompressionBombWarning):
            raise UserError(f"{path}: refused as a decompression bomb (more than {MAX_PIXELS // 1_000_000} megapixels)") from None
        except Exception as e:  # noqa: BLE001 - a third-party decoder on untrusted bytes fails in many ways (OSError, SyntaxError, ...)
            raise UserError(f"{path}: not a readable image ({type(e).__name__}: {e})") from None


def _too_large(path: Path, w: int, h: int) -> str:
    return (
        f"{path}: image is {w} x {h} pixels ({w * h / 1e6:.0f} megapixels); the limit is {MAX_PIXELS // 1_000_000} megapixels "
        "(scale the picture down first)"
    )


def to_mnist(image: Image.Image) -> torch.Tensor:
    """A PIL image of one digit -> uint8 tensor 28 x 28, white digit on black."""
    upright = ImageOps.exif_transpose(image)
    try:
        return _fit(_gray(upright))
    except UserError:
        if not _has_alpha(upright):
            raise
        # white strokes on a transparent background vanish on white: composite them on black instead
        return _fit(_gray(upright, backdrop=0))


def _has_alpha(image: Image.Image) -> bool:
    return "A" in image.getbands() or "a" in image.getbands() or image.has_transparency_data


def _gray(image: Image.Image, backdrop: int = 255) -> np.ndarray:
    """Luminance as float32 in [0, 255] (at most WORK_SIDE on a side); transparent pixels show `backdrop`."""
    if _has_alpha(image):
        image = Image.alpha_composite(Image.new("RGBA", image.size, (backdrop,) * 3 + (255,)), image.convert("RGBA")).convert("L")
    if image.mode in ("I", "F") or image.mode.startswith("I;16"):
        arr = np.nan_to_num(np.asarray(image, dtype=np.float64), nan=0.0, posinf=0.0, neginf=0.0)
        if image.mode.startswith("I;16"):
            arr = arr / SIXTEEN_BIT
        elif arr.size and (arr.min() < 0 or arr.max() > 255):  # 32-bit int or float: an unknown range, so stretch it
            lo, hi = arr.min(), arr.max()
            arr = (arr - lo) * (255.0 / (hi - lo)) if hi > lo else np.zeros_like(arr)
        arr = arr.astype(np.float32)
    else:
        try:
            gray = image.convert("L")
        except ValueError:  # no conversion to L (LAB, ...): its first band is the lightness
            gray = image.getchannel(0)
        arr = np.asarray(gray, dtype=np.float32)
    if max(arr.shape) > WORK_SIDE:
        factor = -(-max(arr.shape) // WORK_SIDE)  # ceil
        arr = np.asarray(Image.fromarray(arr, mode="F").reduce(factor), dtype=np.float32)
    return arr


def _fit(arr: np.ndarray) -> torch.Tensor:
    """Gray picture -> white-on-black digit in MNIST's 20x20 box, centred by mass in 28 x 28."""
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
    if total <= 0:  # LANCZOS can ring a one-pixel digit down to nothing
        small = np.asarray(Image.fromarray(crop.astype(np.uint8)).resize(size, Image.Resampling.BOX), dtype=np.float32)
        total = small.sum()
        if total <= 0:
            raise UserError("the image is blank: no digit found")
    ys, xs = np.indices(small.shape)
    cy, cx = (ys * small).sum() / total, (xs * small).sum() / total
    top = int(np.clip(round(14 - cy), 0, 28 - small.shape[0]))
    left = int(np.clip(round(14 - cx), 0, 28 - small.shape[1]))
    canvas[top : top + small.shape[0], left : left + small.shape[1]] = small
    return torch.from_numpy(np.clip(canvas, 0, 255).astype(np.uint8))
