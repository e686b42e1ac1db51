"""The registry of MNIST-style datasets: file names, checksums, mirrors and class names.

    spec = DATASETS["fashion-mnist"]
    spec.classes[5]                          # 'Sandal'
    spec.files["t10k-labels-idx1-ubyte"]     # IdxFile(magic=2049, shape=(10000,), md5='15d4...')
    identify("f4a8712d7a061bf5bd6d2ca38dc4d50a")   # ('fashion-mnist', 'train-images-idx3-ubyte')

Every dataset is four unsigned-byte IDX files: training images and labels, test
images and labels. Adding one (KMNIST, EMNIST-digits, ...) is one `register` call
with its checksums; the data layer, the Config's `dataset` choices, the class
names in plots and `predict` all follow from it. The MD5s are those of the
uncompressed files, so a recompressed .gz still verifies.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import NamedTuple


class IdxFile(NamedTuple):
    """What one IDX file must be: its magic number, shape and the MD5 of its uncompressed bytes."""

    magic: int
    shape: tuple[int, ...]
    md5: str

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


def standard_files(n_train: int, n_test: int, md5s: tuple[str, str, str, str]) -> dict[str, IdxFile]:
    """The usual four MNIST-format files of 28 x 28 images; md5s in the order train images, train labels, test images, test labels."""
    names = STANDARD_FILE_NAMES
    shapes = ((n_train, 28, 28), (n_train,), (n_test, 28, 28), (n_test,))
    # an unsigned-byte IDX file's magic is 0x0800 + its number of dimensions
    return {name: IdxFile(0x0800 + len(shape), shape, md5) for name, shape, md5 in zip(names, shapes, md5s, strict=True)}


STANDARD_SPLITS = {"train_files": STANDARD_FILE_NAMES[:2], "test_files": STANDARD_FILE_NAMES[2:]}

register(
    DatasetSpec(
        name="mnist",
        title="MNIST",
        # from the MNIST README (LeCun, Cortes and Burges)
        files=standard_files(
            60_000,
            10_000,
            (
                "6bbc9ace898e44ae57da46a324031adb",
                "a25bea736e30d166cdddb491f175f624",
                "2646ac647ad5339dbf082846283269ea",
                "27ae3e4e09519cfbb04c329615203637",
            ),
        ),  # fmt: skip
        mirrors=("https://ossci-datasets.s3.amazonaws.com/mnist/", "http://yann.lecun.com/exdb/mnist/"),  # torchvision's
        classes=tuple(str(d) for d in range(10)),
        torchvision_folder="MNIST",
        **STANDARD_SPLITS,
    )
)
register(
    DatasetSpec(
        name="fashion-mnist",
        title="Fashion-MNIST",
        # Xiao, Rasul and Vollgraf 2017; MD5s of the uncompressed files
        files=standard_files(
            60_000,
            10_000,
            (
                "f4a8712d7a061bf5bd6d2ca38dc4d50a",
                "9018921c3c673c538a1fc5bad174d6f9",
                "8181f5470baa50b63fa0f6fddb340f0a",
                "15d484375f8d13e6eb1aabb0c3f46965",
            ),
        ),  # fmt: skip
        mirrors=("http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",),  # torchvision's
        classes=("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"),
        torchvision_folder="FashionMNIST",
        **STANDARD_SPLITS,
    )
)


def get(name: str) -> DatasetSpec:
    """The registered dataset `name`; KeyError lists the registered ones."""
    try:
        return DATASETS[name]
    except KeyError:
        raise KeyError(f"unknown dataset {name!r}; registered: {', '.join(DATASETS)}") from None


def identify(md5: str) -> tuple[str, str] | None:
    """(dataset, file name) of the registered file with this MD5 (uncompressed bytes), or None."""
    for spec in DATASETS.values():
        for file_name, f in spec.files.items():
            if f.md5 == md5:
                return spec.name, file_name
    return None


def largest_file_size() -> int:
    """Bytes of the largest registered IDX file: no read of a data file needs more."""
    return max(f.size for spec in DATASETS.values() for f in spec.files.values())
