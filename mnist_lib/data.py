"""Read, verify and (if missing) download the four MNIST IDX files.

    images, labels = read_split("train")   # uint8 (60000, 28, 28), int64 (60000,)

The data directory is, in order: an explicit argument, the MNIST_DATA_DIR
environment variable, or data/mnist in the repository. Each file may be gzipped
or not; the MD5 of its uncompressed bytes must match the canonical value.
Missing files are downloaded from the public mirrors (override the list with
MNIST_MIRRORS, comma-separated), written under a temporary name and renamed only
once verified. The training split code never calls read_split("test").
"""

from __future__ import annotations

import functools
import gzip
import hashlib
import math
import os
import urllib.error
import urllib.request
import zlib
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from .errors import UserError
from .paths import DATA_DIR_ENV, DEFAULT_DATA_DIR

# name -> (IDX magic, shape, MD5 of the uncompressed bytes); from the MNIST README
FILES = {
    "train-images-idx3-ubyte": (2051, (60000, 28, 28), "6bbc9ace898e44ae57da46a324031adb"),
    "train-labels-idx1-ubyte": (2049, (60000,), "a25bea736e30d166cdddb491f175f624"),
    "t10k-images-idx3-ubyte": (2051, (10000, 28, 28), "2646ac647ad5339dbf082846283269ea"),
    "t10k-labels-idx1-ubyte": (2049, (10000,), "27ae3e4e09519cfbb04c329615203637"),
}
SPLIT_FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}
# the mirrors torchvision uses, tried in order
MIRRORS = ("https://ossci-datasets.s3.amazonaws.com/mnist/", "http://yann.lecun.com/exdb/mnist/")
MIRRORS_ENV = "MNIST_MIRRORS"
TEST_LOCK_ENV = "MNIST_TEST_LOCKED"  # set in sweep workers: reading the test set then raises
DOWNLOAD_TIMEOUT_S = 30


def data_dir(path: str | Path | None = None) -> Path:
    """Resolve the data directory: argument, then $MNIST_DATA_DIR, then data/mnist."""
    if path is None:
        path = os.environ.get(DATA_DIR_ENV) or DEFAULT_DATA_DIR
    return Path(path).expanduser().resolve()


def parse_idx(raw: bytes, name: str = "IDX data") -> np.ndarray:
    """Decode IDX bytes (big-endian header, unsigned-byte payload) into an array (a view of `raw`, no copy)."""
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] != 0x08:
        raise UserError(f"{name}: not an unsigned-byte IDX file (bad magic number)")
    ndim = raw[3]
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise UserError(f"{name}: truncated IDX header")
    shape = tuple(int.from_bytes(raw[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    size = math.prod(shape)  # exact: numpy's int64 product would wrap for dimensions near 2**32
    if len(raw) != header + size:
        raise UserError(f"{name}: expected {header + size} bytes for shape {shape}, found {len(raw)} (truncated or corrupt)")
    try:
        return np.frombuffer(raw, dtype=np.uint8, offset=header).reshape(shape)
    except ValueError:  # an empty array whose other dimensions multiply past numpy's limit (found by tests/test_fuzz.py)
        raise UserError(f"{name}: IDX shape {shape} is too large to represent") from None


def idx_size(shape: tuple[int, ...]) -> int:
    """Bytes of an unsigned-byte IDX file of `shape`: the header and one byte per entry."""
    return 4 + 4 * len(shape) + math.prod(shape)


def _read_bytes(path: Path, limit: int) -> bytes:
    """The file's (uncompressed) bytes, refusing more than `limit`: a gzip bomb stops at limit + 1 bytes."""
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rb") as f:
            raw = f.read(limit + 1)
    except (OSError, EOFError, zlib.error) as e:  # gzip.BadGzipFile is an OSError
        raise UserError(f"{path}: cannot read ({e}); delete it to re-download") from None
    if len(raw) > limit:
        raise UserError(f"{path}: more than the {limit} bytes this file should have (uncompressed); delete it to re-download")
    return raw


def find_file(directory: Path, name: str) -> Path | None:
    """The file for `name` in `directory`, uncompressed or .gz, or None."""
    for candidate in (directory / name, directory / f"{name}.gz"):
        if candidate.is_file():
            return candidate
    return None


def load_idx(path: Path, name: str, expected: tuple | None = None) -> np.ndarray:
    """Read one IDX file and check it against the canonical magic, shape and MD5."""
    magic, shape, md5 = expected or FILES[name]
    raw = _read_bytes(path, idx_size(shape))
    digest = hashlib.md5(raw).hexdigest()
    if digest != md5:
        raise UserError(f"{path}: MD5 of the uncompressed bytes is {digest}, expected {md5} (corrupt file; delete it to re-download)")
    if int.from_bytes(raw[:4], "big") != magic:
        raise UserError(f"{path}: IDX magic {int.from_bytes(raw[:4], 'big')}, expected {magic}")
    arr = parse_idx(raw, str(path))
    if arr.shape != shape:
        raise UserError(f"{path}: shape {arr.shape}, expected {shape}")
    return arr


def missing_message(directory: Path, reason: str) -> str:
    names = ", ".join(FILES)
    return (
        f"MNIST data not found in {directory} and the download failed ({reason}). "
        f"Put the four IDX files ({names}; each may end in .gz) in that folder, "
        f"or set {DATA_DIR_ENV} to a folder that has them."
    )


def mirrors() -> list[str]:
    env = os.environ.get(MIRRORS_ENV)
    urls = [m.strip() for m in env.split(",") if m.strip()] if env else list(MIRRORS)
    return [u if u.endswith("/") else u + "/" for u in urls]


def download(name: str, directory: Path, mirror_urls: list[str] | None = None, progress: bool = True) -> Path:
    """Fetch `name`.gz from the first mirror that serves a verified copy.

    The file is written as a hidden temporary and renamed only after its MD5
    matches, so a failed or corrupt download leaves nothing behind.
    """
    directory.mkdir(parents=True, exist_ok=True)
    final = directory / f"{name}.gz"
    tmp = directory / f".{name}.part-{os.getpid()}.gz"  # .gz: read back as gzip
    errors = []
    for base in mirror_urls if mirror_urls is not None else mirrors():
        url = f"{base}{name}.gz"
        try:
            with urllib.request.urlopen(url, timeout=DOWNLOAD_TIMEOUT_S) as resp, open(tmp, "wb") as out:
                total = int(resp.headers.get("Content-Length") or 0) or None
                with tqdm(total=total, unit="B", unit_scale=True, desc=f"{name}.gz", disable=not progress) as bar:
                    while chunk := resp.read(1 << 16):
                        out.write(chunk)
                        bar.update(len(chunk))
            load_idx(tmp, name)  # verifies gzip, MD5, magic and shape
            os.replace(tmp, final)
            return final
        except (urllib.error.URLError, OSError, UserError, ValueError) as e:
            errors.append(f"{url}: {getattr(e, 'reason', e)}")
        finally:
            tmp.unlink(missing_ok=True)
    raise UserError(missing_message(directory, "; ".join(errors) or "no mirrors configured"))


def ensure_files(directory: str | Path | None = None, allow_download: bool = True, progress: bool = True) -> dict[str, Path]:
    """Paths of all four files, downloading any that are missing."""
    d = data_dir(directory)
    paths = {}
    for name in FILES:
        found = find_file(d, name)
        if found is None:
            if not allow_download:
                raise UserError(missing_message(d, "download disabled"))
            found = download(name, d, progress=progress)
        paths[name] = found
    return paths


@functools.lru_cache(maxsize=4)
def _read_split_cached(directory: Path, split: str) -> tuple[torch.Tensor, torch.Tensor]:
    img_name, lbl_name = SPLIT_FILES[split]
    images, labels = None, None
    for name in (img_name, lbl_name):
        path = find_file(directory, name) or download(name, directory)
        arr = load_idx(path, name)
        if name == img_name:
            images = torch.from_numpy(arr.copy())
        else:
            if arr.max() > 9:
                raise UserError(f"{path}: label {int(arr.max())} outside 0-9")
            labels = torch.from_numpy(arr.astype(np.int64))
    images.requires_grad_(False)
    return images, labels


def read_split(split: str, directory: str | Path | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Images (uint8, N x 28 x 28) and labels (int64, N) of 'train' or 'test', verified.

    Cached per process, so notebooks and tests read each file once. Treat the
    returned tensors as read-only: raw data is never edited.
    """
    if split not in SPLIT_FILES:
        raise UserError(f"unknown split {split!r}; choose 'train' or 'test'")
    if split == "test" and os.environ.get(TEST_LOCK_ENV):
        raise UserError(f"the test set is locked ({TEST_LOCK_ENV} is set, as in every sweep worker): tuning selects on validation only")
    return _read_split_cached(data_dir(directory), split)
