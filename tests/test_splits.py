"""Splits are disjoint, stratified and deterministic; normalization uses the training split only."""

import numpy as np
import pytest
import torch

from mnist_lib import Config, prepare_data
from mnist_lib.core.errors import UserError
from mnist_lib.data.idx import read_split
from mnist_lib.data.splits import split_hash, stratified_split


@pytest.fixture(scope="module")
def labels(mnist_dir):
    return read_split("train", mnist_dir)[1]


def test_split_is_disjoint_and_covers_everything(labels):
    train, val = stratified_split(labels, 6000, seed=0)
    assert len(train) == 54000 and len(val) == 6000
    assert len(np.intersect1d(train.numpy(), val.numpy())) == 0
    assert torch.equal(torch.cat([train, val]).sort().values, torch.arange(60000))


def test_split_is_stratified(labels):
    _, val = stratified_split(labels, 6000, seed=0)
    full = np.bincount(labels.numpy(), minlength=10)
    in_val = np.bincount(labels[val].numpy(), minlength=10)
    # each class is represented in proportion, to within one example
    assert np.all(np.abs(in_val - full * 6000 / 60000) < 1.0)


def test_split_is_deterministic_per_seed(labels):
    a = stratified_split(labels, 6000, seed=3)
    b = stratified_split(labels, 6000, seed=3)
    c = stratified_split(labels, 6000, seed=4)
    assert torch.equal(a[1], b[1]) and torch.equal(a[0], b[0])
    assert not torch.equal(a[1], c[1])
    assert split_hash(a[1]) == split_hash(b[1]) != split_hash(c[1])


def test_split_sizes_that_do_not_divide_evenly():
    y = torch.tensor([0] * 7 + [1] * 5 + [2] * 3)
    train, val = stratified_split(y, 4, seed=0)
    assert len(val) == 4 and len(train) == 11
    with pytest.raises(UserError):
        stratified_split(y, 15, seed=0)


def test_normalization_uses_training_split_only(mnist_dir):
    cfg = Config(val_size=6000, split_seed=1)
    data = prepare_data(cfg, mnist_dir)
    images, _ = read_split("train", mnist_dir)
    train_pixels = images.numpy()[data.train_idx.numpy()].astype(np.float64) / 255.0
    assert data.mean == pytest.approx(train_pixels.mean(), rel=1e-5)
    assert data.std == pytest.approx(train_pixels.std(ddof=1), rel=1e-5)
    # the standardized training split has mean 0 and std 1; the validation one only roughly
    assert abs(float(data.x_train.mean())) < 1e-3 and abs(float(data.x_train.std()) - 1) < 1e-3
    assert data.x_train.shape == (54000, 784) and data.x_val.shape == (6000, 784)
    assert data.x_train.dtype == torch.float32


def test_without_validation_the_whole_training_file_trains(mnist_dir):
    data = prepare_data(Config(), mnist_dir, validation=False)
    images, labels = read_split("train", mnist_dir)
    pixels = images.numpy().astype(np.float64) / 255.0
    assert data.x_train.shape == (60000, 784) and data.x_val.shape == (0, 784) and len(data.y_val) == 0
    assert torch.equal(data.y_train, labels)  # every example, in the file's order (each epoch draws its own permutation)
    assert data.mean == pytest.approx(pixels.mean(), rel=1e-5) and data.std == pytest.approx(pixels.std(ddof=1), rel=1e-5)


def test_max_train_samples_keeps_validation_whole(small_data):
    assert len(small_data.y_train) == 8000 and len(small_data.y_val) == 6000
    counts = torch.bincount(small_data.y_train, minlength=10)
    assert counts.min() > 200  # still every class


def test_same_split_hash_for_same_split_seed(mnist_dir, small_data):
    assert prepare_data(Config(seed=7), mnist_dir).split_hash == small_data.split_hash
    assert prepare_data(Config(split_seed=1), mnist_dir).split_hash != small_data.split_hash


def test_training_code_never_reads_the_test_set(mnist_dir, monkeypatch):
    import mnist_lib.data.idx as data_mod
    from mnist_lib import train

    real = data_mod._read_split_cached

    def guarded(directory, split, dataset):
        assert split != "test", "the test set was read during training"
        return real(directory, split, dataset)

    monkeypatch.setattr(data_mod, "_read_split_cached", guarded)
    data = prepare_data(Config(), mnist_dir, max_train_samples=500)
    train(Config(epochs=1, hidden=(16,), dropout=(0.0,)), data, device="cpu", progress=False)


def test_default_split_is_pinned(labels):
    """Every committed run record carries split hash ab5f73b9cb3f: a change to the split must not pass unnoticed."""
    _, val = stratified_split(labels, Config().val_size, Config().split_seed)
    assert split_hash(val) == "ab5f73b9cb3f"
    # class c has n_c * 6000 / 60000 validation examples, rounded down, plus one for the 4 largest
    # remainders (9: .9, 2: .8, 6: .8, 7: .5); not the 4 biggest classes (1, 7, 3, 2)
    assert torch.bincount(labels[val], minlength=10).tolist() == [592, 674, 596, 613, 584, 542, 592, 627, 585, 595]


def test_largest_remainders_get_the_extra_examples():
    # class sizes 10, 30, 27, 33 of 100; 10 to validation: exact shares 1.0, 3.0, 2.7, 3.3
    y = torch.tensor([0] * 10 + [1] * 30 + [2] * 27 + [3] * 33)
    _, val = stratified_split(y, 10, seed=0)
    assert torch.bincount(y[val], minlength=4).tolist() == [1, 3, 3, 3]  # the one extra goes to class 2 (.7), not class 3 (biggest)


def test_one_validation_example_is_allowed_and_the_bounds_are_named():
    y = torch.tensor([0] * 7 + [1] * 5 + [2] * 3)
    train, val = stratified_split(y, 1, seed=0)
    assert len(val) == 1 and len(train) == 14
    for bad in (0, 15):
        with pytest.raises(UserError, match=f"val_size must be between 1 and 14, got {bad}"):
            stratified_split(y, bad, seed=0)


def test_tied_remainders_go_to_the_lower_class_index():
    y = torch.tensor([0] * 5 + [1] * 5 + [2] * 5)  # 4 of 15: 1.33 each, one extra, all remainders tied
    _, val = stratified_split(y, 4, seed=0)
    assert torch.bincount(y[val], minlength=3).tolist() == [2, 1, 1]


def test_data_to_moves_every_tensor_and_keeps_the_rest(small_data):
    moved = small_data.to("meta")
    assert all(getattr(moved, k).device.type == "meta" for k in ("x_train", "y_train", "x_val", "y_val"))
    assert moved.train_idx is small_data.train_idx and moved.val_idx is small_data.val_idx
    assert (moved.mean, moved.std, moved.split_hash) == (small_data.mean, small_data.std, small_data.split_hash)


def test_an_explicit_data_dir_wins_over_the_environment(mnist_dir, monkeypatch, tmp_path):
    monkeypatch.setenv("MNIST_DATA_DIR", str(tmp_path / "nowhere"))
    monkeypatch.setenv("MNIST_MIRRORS", "http://127.0.0.1:9/")  # and nothing can be downloaded there
    data = prepare_data(Config(), mnist_dir, max_train_samples=1)
    assert len(data.y_train) == 1 and len(data.y_val) == 6000
    _, val = stratified_split(read_split("train", mnist_dir)[1], 6000, 0)
    assert torch.equal(data.val_idx, val) and data.split_hash == split_hash(val)
    from mnist_lib.data.splits import load_test

    x, y = load_test(data.mean, data.std, mnist_dir)
    assert x.shape == (10000, 784) and len(y) == 10000
    with pytest.raises(UserError, match="max_train_samples must be >= 1, got 0"):
        prepare_data(Config(), mnist_dir, max_train_samples=0)
