"""The IDX reader on small synthetic files: round trip, bad magic, truncation, checksums."""

import numpy as np
import pytest
from conftest import idx_bytes, write_idx

from mnist_lib.core.errors import UserError
from mnist_lib.data.idx import find_file, load_idx, parse_idx


def test_round_trip_images_and_labels():
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, size=(5, 28, 28), dtype=np.uint8)
    labels = rng.integers(0, 10, size=(5,), dtype=np.uint8)
    np.testing.assert_array_equal(parse_idx(idx_bytes(images)), images)
    np.testing.assert_array_equal(parse_idx(idx_bytes(labels)), labels)


def test_header_is_big_endian():
    arr = np.zeros((300, 2), dtype=np.uint8)  # 300 needs two bytes: order matters
    assert parse_idx(idx_bytes(arr)).shape == (300, 2)


@pytest.mark.parametrize("corrupt", [b"\x00\x00\x09\x01", b"\x01\x00\x08\x01", b"PK\x03\x04"])
def test_wrong_magic_is_refused(corrupt):
    raw = corrupt + idx_bytes(np.zeros(4, dtype=np.uint8))[4:]
    with pytest.raises(UserError, match="magic"):
        parse_idx(raw)


def test_truncated_file_is_refused():
    raw = idx_bytes(np.zeros((3, 28, 28), dtype=np.uint8))
    with pytest.raises(UserError, match="truncated"):
        parse_idx(raw[:-1])
    with pytest.raises(UserError, match="truncated"):
        parse_idx(raw[:9])  # inside the header


@pytest.mark.parametrize("compress", [False, True])
def test_load_idx_checks_md5_of_uncompressed_bytes(tmp_path, compress):
    arr = np.arange(2 * 28 * 28, dtype=np.uint64).astype(np.uint8).reshape(2, 28, 28)
    path = tmp_path / ("x.gz" if compress else "x")
    md5 = write_idx(path, arr, compress)
    np.testing.assert_array_equal(load_idx(path, "x", (2051, (2, 28, 28), md5)), arr)
    with pytest.raises(UserError, match="MD5"):
        load_idx(path, "x", (2051, (2, 28, 28), "0" * 32))


def test_load_idx_checks_shape_and_magic(tmp_path):
    arr = np.zeros((2, 28, 28), dtype=np.uint8)
    md5 = write_idx(tmp_path / "x", arr)
    with pytest.raises(UserError, match="shape"):
        load_idx(tmp_path / "x", "x", (2051, (3, 28, 28), md5))
    with pytest.raises(UserError, match="magic"):
        load_idx(tmp_path / "x", "x", (2049, (2, 28, 28), md5))


def test_corrupt_gzip_is_a_user_error(tmp_path):
    (tmp_path / "x.gz").write_bytes(b"\x1f\x8b\x08\x00garbage")
    with pytest.raises(UserError, match="cannot read"):
        load_idx(tmp_path / "x.gz", "x", (2051, (1,), "0" * 32))


def test_find_file_prefers_uncompressed_then_gz(tmp_path):
    assert find_file(tmp_path, "a") is None
    (tmp_path / "a.gz").write_bytes(b"")
    assert find_file(tmp_path, "a") == tmp_path / "a.gz"
    (tmp_path / "a").write_bytes(b"")
    assert find_file(tmp_path, "a") == tmp_path / "a"


@pytest.mark.parametrize("top_label, ok", [(9, True), (10, False), (255, False)])
def test_labels_outside_0_to_9_are_refused(tmp_path, fake_dataset, top_label, ok):
    """The label-range check, reached with a registered synthetic dataset (real MNIST never fails it)."""
    import mnist_lib.data.idx as data

    images = np.zeros((3, 28, 28), dtype=np.uint8)
    labels = np.array([0, 5, top_label], dtype=np.uint8)
    name = fake_dataset(tmp_path, images, labels)
    if ok:
        assert data.read_split("train", tmp_path, name)[1].tolist() == [0, 5, 9]
    else:
        with pytest.raises(UserError, match=f"train-labels-idx1-ubyte: label {top_label} outside 0-9"):
            data.read_split("train", tmp_path, name)


def test_a_gzip_that_inflates_past_the_expected_size_stops_early(tmp_path):
    import gzip

    raw = idx_bytes(np.zeros((2, 28, 28), dtype=np.uint8))
    (tmp_path / "x.gz").write_bytes(gzip.compress(raw + bytes(50 * 2**20)))  # 50 MB of zeros in 50 kB
    with pytest.raises(UserError, match="more than the 1584 bytes"):
        load_idx(tmp_path / "x.gz", "x", (2051, (2, 28, 28), "0" * 32))


def test_header_edge_cases_are_exact():
    assert parse_idx(b"\x00\x00\x08\x00\x07").tolist() == 7  # rank 0: one entry
    with pytest.raises(UserError, match=r"expected 5 bytes for shape \(\), found 4"):
        parse_idx(b"\x00\x00\x08\x00")
    empty = parse_idx(b"\x00\x00\x08\x01\x00\x00\x00\x00")  # exactly a header, for a shape with no entries
    assert empty.shape == (0,)
    with pytest.raises(UserError, match=r"x\.idx: expected 1584 bytes for shape \(2, 28, 28\), found 1583"):
        parse_idx(idx_bytes(np.zeros((2, 28, 28), dtype=np.uint8))[:-1], "x.idx")


def test_file_errors_name_the_file(tmp_path):
    raw = idx_bytes(np.zeros((2, 28, 28), dtype=np.uint8))
    md5 = write_idx(tmp_path / "x", np.zeros((2, 28, 28), dtype=np.uint8))
    with pytest.raises(UserError, match=r"x: IDX magic 2051, expected 2049"):
        load_idx(tmp_path / "x", "x", (2049, (2, 28, 28), md5))
    import hashlib

    (tmp_path / "short").write_bytes(raw[:-5])  # its own MD5 registered: the length check must still name the file
    with pytest.raises(UserError, match=f"{tmp_path / 'short'}: expected 1584 bytes"):
        load_idx(tmp_path / "short", "x", (2051, (2, 28, 28), hashlib.md5(raw[:-5]).hexdigest()))


def test_a_gzip_bomb_is_never_inflated_in_memory(tmp_path):
    """300 MB of zeros in a 300 kB gzip: reading must stop at the expected size, well under a 64 MB allocation cap."""
    import zlib

    from conftest import memory_cap

    z = zlib.compressobj(1, zlib.DEFLATED, 31)  # wbits 31: a gzip container
    chunk = bytes(2**20)
    (tmp_path / "x.gz").write_bytes(b"".join(z.compress(chunk) for _ in range(300)) + z.flush())
    with memory_cap(64 * 2**20), pytest.raises(UserError, match="more than the 1584 bytes"):
        load_idx(tmp_path / "x.gz", "x", (2051, (2, 28, 28), "0" * 32))


def test_read_split_refuses_an_unknown_split_and_a_locked_test_set(tmp_path, monkeypatch):
    """Both before any file is opened: the folder here is empty."""
    from mnist_lib.data.idx import TEST_LOCK_ENV, read_split

    with pytest.raises(UserError, match=r"^unknown split 'valid'; choose 'train' or 'test'$"):
        read_split("valid", tmp_path)
    monkeypatch.setenv(TEST_LOCK_ENV, "1")
    locked = r"^the test set is locked \(MNIST_TEST_LOCKED is set, as in every sweep worker\): tuning selects on validation only$"
    with pytest.raises(UserError, match=locked):
        read_split("test", tmp_path)
