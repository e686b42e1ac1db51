"""The registry of MNIST-style datasets: file names, checksums, mirrors and class names.

    spec = DATASETS["fashion-mnist"]
    spec.classes[5]                          # 'Sandal'
    spec.files["t10k-labels-idx1-ubyte"]     # IdxFile(magic=2049, shape=(10000,), md5='15d4...', gz_md5='bb30...')
    identify("f4a8712d7a061bf5bd6d2ca38dc4d50a")   # ('fashion-mnist', 'train-images-idx3-ubyte')

Every dataset is four unsigned-byte IDX files: training images and labels, test
images and labels. MNIST, Fashion-MNIST and KMNIST are registered from
torchvision's dataset classes (torchvision_source.py): their file names,
mirrors, the MD5s of the .gz files, class names and torchvision's folder. This
file keeps only what torchvision does not give: the numbers of examples and the
MD5s of the uncompressed files, which verify a file however it was compressed
and tell one dataset's files from another's (the file names are the same). For
KMNIST no such MD5 is known, so its files are verified as the .gz torchvision
downloads. Adding a dataset is one `register` call; the data layer, the
Config's `dataset` choices, the class names in plots and `predict` follow.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

from . import torchvision_source


class IdxFile(NamedTuple):
    """What one IDX file must be: its magic number, its shape, and the MD5 of its uncompressed bytes or of its .gz."""

    magic: int
    shape: tuple[int, ...]
    md5: str  # of the uncompressed bytes; "" where none is known
    gz_md5: str = ""  # of the .gz file torchvision downloads; "" where none is known

    @property
    def size(self) -> int:
        """Bytes of the uncompressed file: the header, then one byte per entry."""
        return idx_size(self.shape)


def idx_size(shape: tuple[int, ...]) -> int:
    """Bytes of an unsigned-byte IDX file of `shape`: the 4-byte magic, 4 bytes per dimension, one byte per entry."""
    return 4 + 4 * len(shape) + math.prod(shape)


@dataclass(frozen=True)
class DatasetSpec:
    """One registered dataset."""

    name: str  # the Config's `dataset` value and the data folder's name: data/<name>/
    title: str  # how people write it: "Fashion-MNIST"
    files: dict[str, IdxFile]  # file name (without .gz) -> what it must be
    mirrors: tuple[str, ...]  # base URLs serving <file name>.gz, tried in order
    classes: tuple[str, ...]  # class names, index = label
    train_files: tuple[str, str]  # (images, labels) of the training file; the split's source
    test_files: tuple[str, str]  # (images, labels) of the test file
    torchvision_folder: str = ""  # torchvision's folder for it under a root, <root>/<this>/raw/ ("": none)

    @property
    def n_classes(self) -> int:
        return len(self.classes)

    @property
    def n_train(self) -> int:
        """Examples in the training file (split into train and validation)."""
        return self.files[self.train_files[1]].shape[0]

    def label(self, index: int) -> str:
        """How a prediction is named: the class name, with its number and dataset unless it is a digit naming itself."""
        name = self.classes[index]
        return name if name == str(index) else f"{name} (class {index} of {self.title})"

    def split_files(self, split: str) -> tuple[str, str]:
        return self.train_files if split == "train" else self.test_files


DATASETS: dict[str, DatasetSpec] = {}


def register(spec: DatasetSpec) -> DatasetSpec:
    """Add a dataset to the registry (a name may be registered once)."""
    if spec.name in DATASETS:
        raise ValueError(f"dataset {spec.name!r} is already registered")
    for images, labels in (spec.train_files, spec.test_files):
        if spec.files[images].shape[0] != spec.files[labels].shape[0]:
            raise ValueError(f"{spec.name}: {images} and {labels} hold different numbers of examples")
    DATASETS[spec.name] = spec
    return spec


def unregister(name: str) -> None:
    """Remove a dataset (tests register synthetic ones)."""
    DATASETS.pop(name, None)


STANDARD_FILE_NAMES = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")


def standard_files(n_train: int, n_test: int, md5s: tuple[str, str, str, str], gz_md5s: tuple[str, ...] = ("",) * 4) -> dict[str, IdxFile]:
    """The usual four MNIST-format files of 28 x 28 images; MD5s in the order train images, train labels, test images, test labels."""
    names = STANDARD_FILE_NAMES
    shapes = ((n_train, 28, 28), (n_train,), (n_test, 28, 28), (n_test,))
    # an unsigned-byte IDX file's magic is 0x0800 + its number of dimensions
    return {
        name: IdxFile(0x0800 + len(shape), shape, md5, gz_md5)
        for name, shape, md5, gz_md5 in zip(names, shapes, md5s, gz_md5s, strict=True)
    }


STANDARD_SPLITS = {"train_files": STANDARD_FILE_NAMES[:2], "test_files": STANDARD_FILE_NAMES[2:]}


def class_name(torchvision_name: str) -> str:
    """How a class is named here: torchvision's name, except that a digit named "3 - three" is named "3"."""
    digit = re.fullmatch(r"(\d+) - \w+", torchvision_name)
    return digit.group(1) if digit else torchvision_name


def from_torchvision(
    name: str,
    title: str,
    torchvision_class: str,
    n_train: int = 60_000,
    n_test: int = 10_000,
    md5s: tuple[str, str, str, str] = ("",) * 4,
    source: Path | None = None,
) -> DatasetSpec:
    """A dataset as torchvision's class `torchvision_class` describes it, with what torchvision does not give.

    md5s: of the uncompressed files, in the order train images, train labels, test
    images, test labels ("" where unknown). source: torchvision's mnist.py (tests
    hand a synthetic one).
    """
    tv = torchvision_source.dataset_class(torchvision_class, source)
    gz = dict(tv.resources)
    wanted = tuple(f"{file}.gz" for file in STANDARD_FILE_NAMES)
    if sorted(gz) != sorted(wanted):
        raise torchvision_source.TorchvisionSourceError(
            f"torchvision's {torchvision_class} has the files {sorted(gz)}, not the four MNIST-format files {list(wanted)}"
        )
    return DatasetSpec(
        name=name,
        title=title,
        files=standard_files(n_train, n_test, md5s, tuple(gz[f] for f in wanted)),
        mirrors=tv.mirrors,
        classes=tuple(map(class_name, tv.classes)),
        torchvision_folder=tv.folder,
        **STANDARD_SPLITS,
    )


# MD5s of the uncompressed files: MNIST's from its README (LeCun, Cortes and Burges), Fashion-MNIST's from
# Xiao, Rasul and Vollgraf 2017; both match ../shared/data/*/README.md.
register(
    from_torchvision(
        "mnist",
        "MNIST",
        "MNIST",
        md5s=(
            "6bbc9ace898e44ae57da46a324031adb",
            "a25bea736e30d166cdddb491f175f624",
            "2646ac647ad5339dbf082846283269ea",
            "27ae3e4e09519cfbb04c329615203637",
        ),
    )
)  # fmt: skip
register(
    from_torchvision(
        "fashion-mnist",
        "Fashion-MNIST",
        "FashionMNIST",
        md5s=(
            "f4a8712d7a061bf5bd6d2ca38dc4d50a",
            "9018921c3c673c538a1fc5bad174d6f9",
            "8181f5470baa50b63fa0f6fddb340f0a",
            "15d484375f8d13e6eb1aabb0c3f46965",
        ),
    )
)  # fmt: skip
# Kuzushiji-MNIST (Clanuwat et al. 2018): ten cursive hiragana, 60,000 + 10,000 images of 28 x 28. Its files are
# not on this project's machines, so no MD5 of the uncompressed files is known: they verify as torchvision's .gz.
register(from_torchvision("kmnist", "KMNIST", "KMNIST"))


def get(name: str) -> DatasetSpec:
    """The registered dataset `name`; KeyError lists the registered ones."""
    try:
        return DATASETS[name]
    except KeyError:
        raise KeyError(f"unknown dataset {name!r}; registered: {', '.join(DATASETS)}") from None


def identify(md5: str) -> tuple[str, str] | None:
    """(dataset, file name) of the registered file with this MD5 (of the uncompressed bytes or of the .gz), or None."""
    for spec in DATASETS.values():
        for file_name, f in spec.files.items():
            if md5 in (f.md5, f.gz_md5) and md5:
                return spec.name, file_name
    return None


def largest_file_size() -> int:
    """Bytes of the largest registered IDX file: no read of a data file needs more."""
    return max(f.size for spec in DATASETS.values() for f in spec.files.values())
