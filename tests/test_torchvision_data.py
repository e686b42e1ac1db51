"""The dataset registry's torchvision path: metadata read from torchvision's source, KMNIST on synthetic files.

The registry reads torchvision's MNIST-family classes with ast (no import: it
would cost ~2 s per process); here the imported classes are the independent
reference. KMNIST's real files are not on these machines, so its path is tested
on synthetic files registered exactly as KMNIST is, through a torchvision source
whose KMNIST class lists their .gz MD5s.
"""

import gzip
import hashlib
import importlib.util
import inspect
from pathlib import Path

import numpy as np
import pytest

from mnist_lib import Config, prepare_data, train
from mnist_lib.core import datasets, torchvision_source
from mnist_lib.core.errors import UserError
from mnist_lib.core.paths import DATA_DIR_ENV, DATA_ROOT_ENV
from mnist_lib.data.idx import data_dir, read_split
from tests.conftest import idx_bytes

KMNIST_CLASSES = ("o", "ki", "su", "tsu", "na", "ha", "ma", "ya", "re", "wo")  # Clanuwat et al. 2018, table 1
TORCHVISION = {"mnist": "MNIST", "fashion-mnist": "FashionMNIST", "kmnist": "KMNIST"}


def test_the_registry_is_what_torchvisions_imported_classes_say():
    import torchvision.datasets as tv  # required, not optional: without it mnist_lib's registry does not import at all

    for name, class_name in TORCHVISION.items():
        spec, cls = datasets.DATASETS[name], getattr(tv, class_name)
        assert spec.mirrors == tuple(cls.mirrors)
        assert {f"{file}.gz": f.gz_md5 for file, f in spec.files.items()} == dict(cls.resources)
        assert len(spec.classes) == len(cls.classes) == 10
        dataset = cls.__new__(cls)  # torchvision's own folder rule, without a download
        dataset.root = "ROOT"
        assert Path(dataset.raw_folder) == Path("ROOT") / spec.torchvision_folder / "raw"
    assert datasets.DATASETS["mnist"].classes == tuple("0123456789")  # torchvision's "0 - zero", named by its digit
    assert datasets.DATASETS["fashion-mnist"].classes == tuple(tv.FashionMNIST.classes)
    assert datasets.DATASETS["kmnist"].classes == KMNIST_CLASSES
    assert [f.md5 for f in datasets.DATASETS["kmnist"].files.values()] == [""] * 4  # unknown: verified by the .gz


def test_the_installed_source_is_the_imported_module():
    import torchvision.datasets.mnist as tv_mnist

    assert torchvision_source.mnist_source() == Path(inspect.getfile(tv_mnist))


def test_class_names():
    assert [datasets.class_name(n) for n in ("3 - three", "10 - ten", "T-shirt/top", "tsu", "3 - ")] == [
        "3",
        "10",
        "T-shirt/top",
        "tsu",
        "3 - ",
    ]


FAKE_SOURCE = '''
class VisionDataset: ...
class MNIST(VisionDataset):
    """docstring"""
    mirrors = ["https://a/", "http://b/"]
    resources = [
        ("train-images-idx3-ubyte.gz", "{0}"),
        ("train-labels-idx1-ubyte.gz", "{1}"),
        ("t10k-images-idx3-ubyte.gz", "{2}"),
        ("t10k-labels-idx1-ubyte.gz", "{3}"),
    ]
    training_file = "training.pt"
    classes: list[str] = ["0 - zero", "1 - one"]
class KMNIST(MNIST):
    classes = {classes}
class Computed(MNIST):
    mirrors = [m for m in "ab"]
class Odd(MNIST):
    resources = [("train.npz", "x")]
'''


def fake_source(folder: Path, gz_md5s=("a" * 32,) * 4, classes=KMNIST_CLASSES) -> Path:
    path = folder / "mnist.py"
    path.write_text(FAKE_SOURCE.replace("{classes}", repr(list(classes))).format(*gz_md5s))
    return path


def test_the_source_reader_follows_bases_and_refuses_what_it_cannot_read(tmp_path):
    source = fake_source(tmp_path)
    k = torchvision_source.dataset_class("KMNIST", source)
    assert k.folder == "KMNIST" and k.classes == KMNIST_CLASSES  # its own
    assert k.mirrors == ("https://a/", "http://b/") and k.resources[0] == ("train-images-idx3-ubyte.gz", "a" * 32)  # inherited
    assert torchvision_source.dataset_class("MNIST", source).classes == ("0 - zero", "1 - one")  # an annotated assignment
    with pytest.raises(torchvision_source.TorchvisionSourceError, match="Computed.mirrors is not a literal"):
        torchvision_source.dataset_class("Computed", source)
    with pytest.raises(torchvision_source.TorchvisionSourceError, match="no class EMNIST"):
        torchvision_source.dataset_class("EMNIST", source)
    with pytest.raises(torchvision_source.TorchvisionSourceError, match="class VisionDataset sets no mirrors"):
        torchvision_source.dataset_class("VisionDataset", source)
    with pytest.raises(torchvision_source.TorchvisionSourceError, match="not the four MNIST-format files"):
        datasets.from_torchvision("odd", "Odd", "Odd", source=source)
    (tmp_path / "broken.py").write_text("class MNIST(:\n")
    with pytest.raises(torchvision_source.TorchvisionSourceError, match="cannot read torchvision's dataset source"):
        torchvision_source.dataset_class("MNIST", tmp_path / "broken.py")


def test_without_torchvision_the_registry_says_how_to_install_it(monkeypatch):
    monkeypatch.setattr(importlib.util, "find_spec", lambda name: None)
    with pytest.raises(torchvision_source.TorchvisionSourceError, match="torchvision is not installed: .*pip install -r requirements.txt"):
        torchvision_source.mnist_source()


def kmnist_like(n: int, seed: int):
    """n images of ten classes, class c a bright column band at 2c + 4: learnable in an epoch."""
    rng = np.random.default_rng(seed)
    labels = (np.arange(n) % 10).astype(np.uint8)
    images = rng.integers(0, 80, size=(n, 28, 28)).astype(np.uint8)
    for i, c in enumerate(labels):
        images[i, :, 2 * c + 4 : 2 * c + 6] += 170
    return images, labels


@pytest.fixture
def synthetic_kmnist(tmp_path, monkeypatch):
    """KMNIST registered as the package registers it, from a torchvision source listing the .gz MD5s of synthetic
    files in <root>/KMNIST/raw/ (torchvision's layout: each .gz beside its extracted copy). Returns the raw folder."""
    raw = tmp_path / "root" / "KMNIST" / "raw"
    raw.mkdir(parents=True)
    arrays = (*kmnist_like(600, 0), *kmnist_like(200, 1))
    gz_md5s = []
    for file, arr in zip(datasets.STANDARD_FILE_NAMES, arrays, strict=True):
        data = idx_bytes(arr)
        (raw / file).write_bytes(data)
        (raw / f"{file}.gz").write_bytes(gzip.compress(data, mtime=0))
        gz_md5s.append(hashlib.md5((raw / f"{file}.gz").read_bytes()).hexdigest())
    spec = datasets.from_torchvision("kmnist", "KMNIST", "KMNIST", 600, 200, source=fake_source(tmp_path, gz_md5s))
    monkeypatch.setitem(datasets.DATASETS, "kmnist", spec)
    monkeypatch.delenv(DATA_DIR_ENV, raising=False)
    monkeypatch.setenv(DATA_ROOT_ENV, str(tmp_path / "root"))
    return raw


def test_kmnist_from_torchvisions_folder_trains_and_names_its_classes(synthetic_kmnist):
    raw = synthetic_kmnist
    assert data_dir(dataset="kmnist") == raw.resolve()
    (raw / "train-images-idx3-ubyte").write_bytes(b"not the extracted file")  # the .gz, the verifiable copy, is the one read
    images, labels = read_split("train", dataset="kmnist")
    np.testing.assert_array_equal(images.numpy(), kmnist_like(600, 0)[0])
    cfg = Config(dataset="kmnist", val_size=100, hidden=(32,), dropout=(0.0,), epochs=2, batch_size=50, lr=5e-3)
    data = prepare_data(cfg)
    result = train(cfg, data, device="cpu", threads=1, progress=False)
    assert result.best_val_acc > 0.9
    assert datasets.DATASETS["kmnist"].label(3) == "tsu (class 3 of KMNIST)"


def test_kmnist_files_are_verified_by_their_gz(synthetic_kmnist):
    raw = synthetic_kmnist
    (raw / "t10k-labels-idx1-ubyte.gz").unlink()  # only the extracted copy left: nothing to verify it by
    with pytest.raises(UserError, match="no MD5 of KMNIST's uncompressed t10k-labels-idx1-ubyte is known, so only the .gz can be verified"):
        read_split("test", raw, "kmnist")
    (raw / "t10k-labels-idx1-ubyte.gz").write_bytes(
        gzip.compress(b"\0\0\x08\x01\0\0\0\xc8" + bytes(200), mtime=0)
    )  # right shape, wrong bytes
    with pytest.raises(UserError, match=r"MD5 of the \.gz file is [0-9a-f]{32}, expected [0-9a-f]{32} for KMNIST's .*\(corrupt file"):
        read_split("test", raw, "kmnist")


def test_a_kmnist_gz_handed_over_as_mnist_is_named(synthetic_kmnist, tmp_path):
    folder = tmp_path / "looks-like-mnist"
    folder.mkdir()
    for file in datasets.STANDARD_FILE_NAMES:
        (folder / f"{file}.gz").symlink_to(synthetic_kmnist / f"{file}.gz")
    with pytest.raises(UserError, match="this is KMNIST's train-images-idx3-ubyte file, not MNIST's; .*use the dataset kmnist "):
        read_split("train", folder, "mnist")
