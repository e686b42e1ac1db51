"""The dataset registry: a synthetic dataset registered like a real one, folder resolution, foreign files, Fashion-MNIST."""

from pathlib import Path

import numpy as np
import pytest
import torch

from mnist_lib import Config, load_model, prepare_data, train
from mnist_lib.core import datasets
from mnist_lib.core.errors import UserError
from mnist_lib.core.paths import DATA_DIR_ENV, DATA_ROOT_ENV, DEFAULT_DATA_ROOT
from mnist_lib.data.idx import data_dir, ensure_files, load_idx, read_split
from mnist_lib.records.runs import save_model
from mnist_lib.training.evaluate import classification_report

FASHION_CLASSES = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot")


def synthetic(n: int, seed: int = 0):
    """n noisy images, class c with a bright band across rows 2c + 4 and 2c + 5: easily learned, not trivially constant."""
    rng = np.random.default_rng(seed)
    labels = np.arange(n, dtype=np.uint8) % 10
    images = rng.integers(0, 100, size=(n, 28, 28)).astype(np.uint8)
    for i, c in enumerate(labels):
        images[i, 2 * c + 4 : 2 * c + 6] += 150
    return images, labels


def test_a_registered_synthetic_dataset_trains_end_to_end(tmp_path, fake_dataset):
    images, labels = synthetic(1000)
    names = tuple(f"kind {c}" for c in range(10))
    name = fake_dataset(tmp_path, images, labels, classes=names)
    cfg = Config(dataset=name, val_size=200, hidden=(32,), dropout=(0.0,), epochs=3, batch_size=32, lr=1e-2)
    data = prepare_data(cfg, tmp_path)
    assert (len(data.y_train), len(data.y_val), data.dataset) == (800, 200, name)
    train_pixels = images[data.train_idx.numpy()] / 255.0  # the statistics come from this dataset's training split alone
    assert data.mean == pytest.approx(train_pixels.mean(), rel=1e-5) and data.std == pytest.approx(train_pixels.std(ddof=1), rel=1e-4)
    result = train(cfg, data, device="cpu", threads=1, progress=False)
    assert result.best_val_acc > 0.9
    report = classification_report(result.model, data.x_val, data.y_val, datasets.DATASETS[name].classes)
    assert report.per_class["name"].tolist() == list(names)


def test_val_size_bounds_follow_the_dataset(tmp_path, fake_dataset):
    name = fake_dataset(tmp_path, *synthetic(100))
    assert Config(dataset=name, val_size=90).val_size == 90
    with pytest.raises(UserError, match=f"val_size must be in \\[10, 90\\] for {name}, got 91"):
        Config(dataset=name, val_size=91)
    with pytest.raises(UserError, match="val_size must be in \\[10, 59990\\] for mnist"):
        Config(val_size=59991)


def test_unknown_dataset_lists_the_registered_ones():
    with pytest.raises(UserError, match="dataset must be one of mnist, fashion-mnist, kmnist, got 'emnist'"):
        Config(dataset="emnist")
    with pytest.raises(UserError, match="unknown dataset 'emnist'; registered: mnist, fashion-mnist, kmnist"):
        read_split("train", dataset="emnist")


def test_registering_twice_or_inconsistently_is_refused():
    with pytest.raises(ValueError, match="already registered"):
        datasets.register(datasets.DATASETS["mnist"])
    files = datasets.standard_files(10, 5, ("0" * 32,) * 4)
    files["train-labels-idx1-ubyte"] = datasets.IdxFile(2049, (9,), "0" * 32)
    with pytest.raises(ValueError, match="different numbers of examples"):
        datasets.register(datasets.DatasetSpec("bad", "Bad", files, (), ("a", "b"), **datasets.STANDARD_SPLITS))
    assert "bad" not in datasets.DATASETS


def test_registry_entries_match_the_shared_data_readmes():
    """Fashion-MNIST's checksums and class names as its README gives them; both datasets are 60k + 10k of 28 x 28."""
    fashion = datasets.DATASETS["fashion-mnist"]
    assert fashion.classes == FASHION_CLASSES
    assert fashion.files["train-images-idx3-ubyte"][:3] == (2051, (60000, 28, 28), "f4a8712d7a061bf5bd6d2ca38dc4d50a")
    assert fashion.files["t10k-labels-idx1-ubyte"][:3] == (2049, (10000,), "15d484375f8d13e6eb1aabb0c3f46965")
    assert datasets.DATASETS["mnist"].classes == tuple("0123456789")
    assert datasets.identify("9018921c3c673c538a1fc5bad174d6f9") == ("fashion-mnist", "train-labels-idx1-ubyte")
    assert datasets.identify("6bbc9ace898e44ae57da46a324031adb") == ("mnist", "train-images-idx3-ubyte")
    assert datasets.identify("0" * 32) is None


def test_data_folder_order(tmp_path, monkeypatch):
    monkeypatch.delenv(DATA_DIR_ENV, raising=False)
    monkeypatch.delenv(DATA_ROOT_ENV, raising=False)
    assert data_dir() == (DEFAULT_DATA_ROOT / "mnist").resolve()
    assert data_dir(dataset="fashion-mnist") == (DEFAULT_DATA_ROOT / "fashion-mnist").resolve()
    monkeypatch.setenv(DATA_ROOT_ENV, str(tmp_path / "root"))
    assert data_dir() == tmp_path / "root" / "mnist"
    assert data_dir(dataset="fashion-mnist") == tmp_path / "root" / "fashion-mnist"
    monkeypatch.setenv(DATA_DIR_ENV, str(tmp_path / "m"))  # MNIST's own variable wins for MNIST only
    assert data_dir() == tmp_path / "m"
    assert data_dir(dataset="fashion-mnist") == tmp_path / "root" / "fashion-mnist"
    assert data_dir(tmp_path / "x", "fashion-mnist") == tmp_path / "x"  # an explicit folder wins over both


def test_fashion_files_given_as_mnist_are_named_not_called_corrupt(fashion_dir):
    with pytest.raises(UserError) as err:
        read_split("train", fashion_dir, "mnist")
    msg = str(err.value)
    assert "this is Fashion-MNIST's train-images-idx3-ubyte file, not MNIST's" in msg and "use the dataset fashion-mnist" in msg
    assert "--" not in msg  # no flag: evaluate, inspect and speedrun take the dataset from a config, and have none
    assert "corrupt" not in msg and "delete" not in msg and "\n" not in msg


def test_mnist_files_given_as_fashion_are_named(mnist_dir):
    with pytest.raises(UserError, match="this is MNIST's t10k-labels-idx1-ubyte file, not Fashion-MNIST's; .*use the dataset mnist "):
        load_idx(ensure_files(mnist_dir, allow_download=False)["t10k-labels-idx1-ubyte"], "t10k-labels-idx1-ubyte", dataset="fashion-mnist")


def test_a_swapped_file_within_a_dataset_is_named(tmp_path, fake_dataset):
    images, labels = synthetic(100)
    folder = tmp_path / "a"
    folder.mkdir()
    name = fake_dataset(folder, images, labels, synthetic(50, 1)[0], labels[:50])
    (folder / "train-labels-idx1-ubyte").rename(folder / "swap")
    (folder / "t10k-labels-idx1-ubyte").rename(folder / "train-labels-idx1-ubyte")
    with pytest.raises(UserError, match="this is .*'s t10k-labels-idx1-ubyte file, not train-labels-idx1-ubyte"):
        read_split("train", folder, name)


def test_really_corrupt_data_is_still_called_corrupt(tmp_path, fake_dataset):
    images, labels = synthetic(100)
    name = fake_dataset(tmp_path, images, labels)
    raw = bytearray((tmp_path / "train-images-idx3-ubyte").read_bytes())
    raw[-1] ^= 1
    (tmp_path / "train-images-idx3-ubyte").write_bytes(bytes(raw))
    with pytest.raises(UserError, match="MD5 of the uncompressed bytes is .* \\(corrupt file; delete it to re-download\\)"):
        read_split("train", tmp_path, name)


def test_fashion_mnist_learns_and_its_model_round_trips(fashion_dir, tmp_path):
    """A short real Fashion-MNIST run passes 75 %; its model file alone rebuilds it, with its dataset."""
    cfg = Config(dataset="fashion-mnist", epochs=2, hidden=(128,), dropout=(0.1,), lr=2e-3)
    data = prepare_data(cfg, fashion_dir, max_train_samples=12000)
    images, _ = read_split("train", fashion_dir, "fashion-mnist")
    pixels = images[data.train_idx].float() / 255
    assert data.mean == pytest.approx(pixels.mean().item(), rel=1e-5)  # Fashion-MNIST's own statistics, not MNIST's 0.1307
    assert abs(data.mean - 0.2859) < 0.003 and abs(data.std - 0.3529) < 0.003
    result = train(cfg, data, device="cpu", threads=2, progress=False)
    assert result.best_val_acc > 0.75
    save_model(tmp_path / "m.safetensors", result.model, cfg, data.mean, data.std)
    model, loaded, mean, std = load_model(tmp_path / "m.safetensors")
    assert loaded == cfg and loaded.dataset == "fashion-mnist" and (mean, std) == (data.mean, data.std)
    torch.testing.assert_close(model(data.x_val[:100]), result.model.eval()(data.x_val[:100]))


def test_a_norm_model_round_trips_with_its_buffers(tmp_path, small_data):
    cfg = Config(epochs=1, hidden=(64, 32), dropout=(0.1, 0.1), norm="batch", activation="gelu")
    result = train(cfg, small_data, device="cpu", threads=2, progress=False)
    save_model(tmp_path / "m.safetensors", result.model, cfg, small_data.mean, small_data.std)
    model, loaded, _, _ = load_model(tmp_path / "m.safetensors")
    assert loaded == cfg and not model.training
    bn = model.net[1]
    assert int(bn.num_batches_tracked) == int(result.model.net[1].num_batches_tracked) > 0
    torch.testing.assert_close(bn.running_var, result.model.net[1].running_var)
    torch.testing.assert_close(model(small_data.x_val[:50]), result.model.eval()(small_data.x_val[:50]))


@pytest.mark.parametrize("dataset, folder", [("mnist", "MNIST"), ("fashion-mnist", "FashionMNIST")])
def test_torchvision_layout_works_as_a_data_folder(tmp_path, monkeypatch, mnist_dir, fashion_dir, dataset, folder):
    """<root>/MNIST/raw/ as torchvision leaves it: found from $MNIST_DATA_ROOT and from --data-dir ROOT; our layout wins."""
    source = mnist_dir if dataset == "mnist" else fashion_dir
    raw = tmp_path / folder / "raw"
    raw.mkdir(parents=True)
    for f in Path(source).iterdir():
        if "ubyte" in f.name:
            (raw / f.name).symlink_to(f)
    monkeypatch.delenv("MNIST_DATA_DIR", raising=False)
    monkeypatch.setenv("MNIST_DATA_ROOT", str(tmp_path))
    assert data_dir(dataset=dataset) == raw.resolve()
    assert data_dir(tmp_path, dataset) == raw.resolve()  # a torchvision root handed over as the folder
    images, labels = read_split("test", dataset=dataset)
    assert images.shape == (10_000, 28, 28) and labels.shape == (10_000,)
    own = tmp_path / dataset  # the project's own layout, when it holds the files, comes first
    own.mkdir()
    for f in raw.iterdir():
        (own / f.name).symlink_to(f.resolve())
    assert data_dir(dataset=dataset) == own.resolve()
    (raw / next(iter(raw.iterdir())).name).unlink()
    assert data_dir(tmp_path / "elsewhere", dataset) == (tmp_path / "elsewhere").resolve()  # no files anywhere: the folder named
