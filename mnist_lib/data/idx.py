"""Read, verify and (if missing) download a registered dataset's four IDX files.

    images, labels = read_split("train")                            # MNIST: uint8 (60000, 28, 28), int64 (60000,)
    images, labels = read_split("test", dataset="fashion-mnist")   # Fashion-MNIST's test file

Which datasets exist, their files, checksums and mirrors: datasets.py. A dataset's
folder is, in order: an explicit argument (--data-dir), $MNIST_DATA_DIR (MNIST
only, as before), $MNIST_DATA_ROOT/<dataset> (one root holding mnist/,
fashion-mnist/, ... side by side), or data/<dataset> in the repository; torchvision's
<root>/MNIST/raw/, <root>/FashionMNIST/raw/ and <root>/KMNIST/raw/ are found as
well. Each file may be gzipped or not; the MD5 of its uncompressed bytes must
match the registry, or, for a dataset whose uncompressed MD5s are not known
(KMNIST), the file must be the .gz torchvision downloads, with its MD5. A file
that is another registered dataset's (the file names are the same) is named as
such, never called corrupt. Missing files are downloaded from
the dataset's mirrors (MNIST_MIRRORS, comma-separated, overrides them), written
under a temporary name and renamed only once verified. The training split code
never calls read_split("test").
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

from ..core import datasets
from ..core.datasets import DatasetSpec, IdxFile, idx_size
from ..core.errors import UserError
from ..core.files import describe_os_error, user_path
from ..core.paths import DATA_DIR_ENV, DATA_ROOT_ENV, DEFAULT_DATA_ROOT

SPLITS = ("train", "test")
MIRRORS_ENV = "MNIST_MIRRORS"
TEST_LOCK_ENV = "MNIST_TEST_LOCKED"  # set in sweep workers: reading the test set then raises
DOWNLOAD_TIMEOUT_S = 30
DEFAULT_DATASET = "mnist"


def spec_of(dataset: str) -> DatasetSpec:
    """The registry entry of `dataset`, or a UserError listing the registered ones."""
    try:
        return datasets.get(dataset)
    except KeyError as e:
        raise UserError(e.args[0]) from None


def data_dir(path: str | Path | None = None, dataset: str = DEFAULT_DATASET) -> Path:
    """Resolve a dataset's folder: argument, then $MNIST_DATA_DIR (MNIST), then $MNIST_DATA_ROOT/<dataset>, then data/<dataset>.

    torchvision's layout is taken too, so files a torchvision script downloaded are
    not fetched again: where the folder lacks the dataset's files and
    <root>/<torchvision folder>/raw/ holds them all (root: the folder's parent for a
    root-based folder, or the folder itself), that raw/ folder is the data folder.
    """
    spec = spec_of(dataset)
    root, what = None, "data folder"
    if path is None:
        if dataset == "mnist" and os.environ.get(DATA_DIR_ENV):
            path, what = os.environ[DATA_DIR_ENV], f"data folder (${DATA_DIR_ENV})"
        else:
            root = Path(os.environ.get(DATA_ROOT_ENV) or DEFAULT_DATA_ROOT)
            path = root / dataset
            what = f"data folder (${DATA_ROOT_ENV}/{dataset})" if os.environ.get(DATA_ROOT_ENV) else what
    try:
        folder = user_path(Path(path).expanduser(), what).resolve(strict=False)  # a loop is one line before resolve()
        if folder.exists() and not folder.is_dir():
            raise UserError(f"data folder {folder} exists and is a file, not a folder of IDX files")
        if spec.torchvision_folder and not _holds_all(folder, spec):
            roots = ([Path(root).expanduser().resolve(strict=False)] if root is not None else []) + [folder]
            raw = next((r / spec.torchvision_folder / "raw" for r in roots if _holds_all(r / spec.torchvision_folder / "raw", spec)), None)
            folder = raw or folder
    except OSError as e:  # the torchvision folder beside it unreadable
        raise UserError(describe_os_error(e, path, "cannot use the data folder")) from None
    return folder


def _holds_all(folder: Path, spec: DatasetSpec) -> bool:
    """Whether `folder` has every file of the dataset, gzipped or not (nothing is read)."""
    return folder.is_dir() and all(find_file(folder, name, spec) is not None for name in spec.files)


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


def find_file(directory: Path, name: str, spec: DatasetSpec | None = None) -> Path | None:
    """The file for `name` in `directory`, uncompressed or .gz, or None.

    The uncompressed file is taken first, unless `spec` knows no MD5 for it: then
    the .gz, the one copy that can be verified (torchvision keeps both).
    """
    candidates = [directory / name, directory / f"{name}.gz"]
    if spec is not None and not spec.files[name].md5:
        candidates.reverse()
    for candidate in candidates:
        if candidate.is_file():
            return candidate
    return None


def load_idx(path: Path, name: str, expected: tuple | None = None, dataset: str = DEFAULT_DATASET) -> np.ndarray:
    """Read one IDX file and check it against the registry's magic, shape and MD5 (or `expected`, an IdxFile's fields).

    The MD5 is that of the uncompressed bytes; where none is known, the file must
    be a .gz whose own MD5 is the registry's gz_md5 (torchvision's).
    """
    spec = spec_of(dataset)
    magic, shape, md5, gz_md5 = IdxFile(*expected) if expected else spec.files[name]
    raw = _read_bytes(path, idx_size(shape))
    if md5:
        digest = hashlib.md5(raw).hexdigest()
        if digest != md5:
            raise UserError(f"{path}: {_mismatch(path, digest, md5, name, spec)}")
    elif path.suffix != ".gz" or not gz_md5:
        raise UserError(
            f"{path}: no MD5 of {spec.title}'s uncompressed {name} is known, so only the .gz can be verified: "
            f"put {name}.gz, as torchvision downloads it, in {path.parent}"
        )
    elif (digest := _file_md5(path)) != gz_md5:
        raise UserError(f"{path}: {_mismatch(path, digest, gz_md5, name, spec, of_gz=True)}")
    if int.from_bytes(raw[:4], "big") != magic:
        raise UserError(f"{path}: IDX magic {int.from_bytes(raw[:4], 'big')}, expected {magic}")
    arr = parse_idx(raw, str(path))
    if arr.shape != shape:
        raise UserError(f"{path}: shape {arr.shape}, expected {shape}")
    return arr


def _file_md5(path: Path) -> str:
    """MD5 of a file's bytes as they are on disk."""
    try:
        with open(path, "rb") as f:
            return hashlib.file_digest(f, "md5").hexdigest()
    except OSError as e:
        raise UserError(describe_os_error(e, path, "cannot read")) from None


def _mismatch(path: Path, digest: str, md5: str, name: str, spec: DatasetSpec, of_gz: bool = False) -> str:
    """Why a file's MD5 (of its uncompressed bytes, or of the .gz if `of_gz`) is not the expected one: another registered file (say which), else corruption."""
    found = datasets.identify(digest)
    if found is None and path.suffix == ".gz" and not of_gz:  # a dataset known only by torchvision's MD5s of its .gz files
        found = datasets.identify(_file_md5(path))
    if found is None:
        what = "of the .gz file" if of_gz else "of the uncompressed bytes"
        return f"MD5 {what} is {digest}, expected {md5} for {spec.title}'s {name} (corrupt file; delete it to re-download)"
    other = datasets.get(found[0])
    if other.name != spec.name:
        return (
            f"this is {other.title}'s {found[1]} file, not {spec.title}'s; the file is fine: "
            # no flag named: evaluate, inspect and speedrun take the dataset from a run's or a recipe's config, not a flag
            f"use the dataset {other.name} (the Config field dataset), or point the data folder at {spec.title}'s files"
        )
    return f"this is {spec.title}'s {found[1]} file, not {name} (renamed or swapped files)"


def missing_message(directory: Path, reason: str, dataset: str = DEFAULT_DATASET) -> str:
    spec = spec_of(dataset)
    names = ", ".join(spec.files)
    where = f"{DATA_DIR_ENV} to a folder that has them, or " if spec.name == "mnist" else ""
    return (
        f"{spec.title} data not found in {directory} and the download failed ({reason}). "
        f"Put the four IDX files ({names}; each may end in .gz) in that folder, "
        f"or set {where}{DATA_ROOT_ENV} to a folder holding {spec.name}/."
    )


def mirrors(dataset: str = DEFAULT_DATASET) -> list[str]:
    """Base URLs to download from: $MNIST_MIRRORS if set (for every dataset), else the dataset's own."""
    env = os.environ.get(MIRRORS_ENV)
    urls = [m.strip() for m in env.split(",") if m.strip()] if env else list(spec_of(dataset).mirrors)
    return [u if u.endswith("/") else u + "/" for u in urls]


def download(
    name: str, directory: Path, mirror_urls: list[str] | None = None, progress: bool = True, dataset: str = DEFAULT_DATASET
) -> Path:
    """Fetch `name`.gz from the first mirror that serves a verified copy.

    The file is written as a hidden temporary and renamed only after its MD5
    matches, so a failed or corrupt download leaves nothing behind.
    """
    directory.mkdir(parents=True, exist_ok=True)
    final = directory / f"{name}.gz"
    tmp = directory / f".{name}.part-{os.getpid()}.gz"  # .gz: read back as gzip
    errors = []
    for base in mirror_urls if mirror_urls is not None else mirrors(dataset):
        url = f"{base}{name}.gz"
        try:
            with urllib.request.urlopen(url, timeout=DOWNLOAD_TIMEOUT_S) as resp, open(tmp, "wb") as out:
                total = int(resp.headers.get("Content-Length") or 0) or None
                with tqdm(total=total, unit="B", unit_scale=True, desc=f"{name}.gz", disable=not progress) as bar:
                    while chunk := resp.read(1 << 16):
                        out.write(chunk)
                        bar.update(len(chunk))
            load_idx(tmp, name, dataset=dataset)  # verifies gzip, MD5, magic and shape
            os.replace(tmp, final)
            return final
        except (urllib.error.URLError, OSError, UserError, ValueError) as e:
            errors.append(f"{url}: {getattr(e, 'reason', e)}")
        finally:
            tmp.unlink(missing_ok=True)
    raise UserError(missing_message(directory, "; ".join(errors) or "no mirrors configured", dataset))


def ensure_files(
    directory: str | Path | None = None, allow_download: bool = True, progress: bool = True, dataset: str = DEFAULT_DATASET
) -> dict[str, Path]:
    """Paths of the dataset's four files, downloading any that are missing."""
    d = data_dir(directory, dataset)
    spec = spec_of(dataset)
    paths = {}
    for name in spec.files:
        found = find_file(d, name, spec)
        if found is None:
            if not allow_download:
                raise UserError(missing_message(d, "download disabled", dataset))
            found = download(name, d, progress=progress, dataset=dataset)
        paths[name] = found
    return paths


@functools.lru_cache(maxsize=8)
def _read_split_cached(directory: Path, split: str, dataset: str) -> tuple[torch.Tensor, torch.Tensor]:
    spec = spec_of(dataset)
    img_name, lbl_name = spec.split_files(split)
    arrays = {}
    for name in (img_name, lbl_name):
        path = find_file(directory, name, spec) or download(name, directory, dataset=dataset)
        arrays[name] = (path, load_idx(path, name, dataset=dataset))
    path, labels = arrays[lbl_name]
    if labels.size and labels.max() >= spec.n_classes:
        raise UserError(f"{path}: label {int(labels.max())} outside 0-{spec.n_classes - 1}")
    images = torch.from_numpy(arrays[img_name][1].copy())
    return images, torch.from_numpy(labels.astype(np.int64))


def read_split(split: str, directory: str | Path | None = None, dataset: str = DEFAULT_DATASET) -> tuple[torch.Tensor, torch.Tensor]:
    """Images (uint8, N x 28 x 28) and labels (int64, N) of a dataset's 'train' or 'test' file, verified.

    Cached per process, so notebooks and tests read each file once. Treat the
    returned tensors as read-only: raw data is never edited.
    """
    if split not in SPLITS:
        raise UserError(f"unknown split {split!r}; choose 'train' or 'test'")
    if split == "test" and os.environ.get(TEST_LOCK_ENV):
        raise UserError(f"the test set is locked ({TEST_LOCK_ENV} is set, as in every sweep worker): tuning selects on validation only")
    return _read_split_cached(data_dir(directory, dataset), split, dataset)
