"""The download path, for real, against an HTTP server on 127.0.0.1 serving the gzip files."""

import functools
import gzip
import shutil
import socket
import threading
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer

import pytest

from mnist_lib.core.datasets import DATASETS
from mnist_lib.core.errors import UserError
from mnist_lib.core.paths import DATA_DIR_ENV
from mnist_lib.data.idx import MIRRORS_ENV, download, ensure_files, find_file, load_idx, missing_message

FILES = DATASETS["mnist"].files  # MNIST's four IDX files

LABELS = "t10k-labels-idx1-ubyte"


class _Quiet(SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


@pytest.fixture
def serve(tmp_path):
    """serve(folder) -> base URL of a local HTTP server for that folder."""
    servers = []

    def start(folder):
        handler = functools.partial(_Quiet, directory=str(folder))
        server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        servers.append(server)
        return f"http://127.0.0.1:{server.server_address[1]}/"

    yield start
    for s in servers:
        s.shutdown()
        s.server_close()


@pytest.fixture
def mirror_dir(tmp_path, mnist_dir):
    """A folder holding the four .gz files, as a public mirror would."""
    folder = tmp_path / "mirror"
    folder.mkdir()
    for name in FILES:
        src = find_file(mnist_dir, name)
        if src.suffix == ".gz":
            shutil.copy(src, folder / f"{name}.gz")
        else:
            with gzip.open(folder / f"{name}.gz", "wb") as f:
                f.write(src.read_bytes())
    return folder


def closed_port_url():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"http://127.0.0.1:{port}/"  # nothing listens here once the socket is closed


def test_download_fetches_verifies_and_renames(tmp_path, serve, mirror_dir):
    dest = tmp_path / "data"
    path = download(LABELS, dest, [serve(mirror_dir)], progress=False)
    assert path == dest / f"{LABELS}.gz"
    assert load_idx(path, LABELS).shape == (10000,)
    assert sorted(p.name for p in dest.iterdir()) == [f"{LABELS}.gz"]  # no temporary left


def test_download_falls_back_to_the_next_mirror(tmp_path, serve, mirror_dir):
    empty = tmp_path / "empty"
    empty.mkdir()
    path = download(LABELS, tmp_path / "data", [serve(empty), serve(mirror_dir)], progress=False)
    assert path.is_file()


@pytest.mark.parametrize("damage", ["flip_byte", "truncate"])
def test_corrupt_download_is_refused_and_nothing_is_left(tmp_path, serve, mirror_dir, damage):
    bad = tmp_path / "bad"
    bad.mkdir()
    raw = gzip.decompress((mirror_dir / f"{LABELS}.gz").read_bytes())
    if damage == "flip_byte":
        payload = gzip.compress(raw[:-1] + bytes([(raw[-1] + 1) % 256]))  # valid gzip, wrong content
    else:
        payload = (mirror_dir / f"{LABELS}.gz").read_bytes()[:-100]
    (bad / f"{LABELS}.gz").write_bytes(payload)
    dest = tmp_path / "data"
    with pytest.raises(UserError) as err:
        download(LABELS, dest, [serve(bad)], progress=False)
    assert str(dest) in str(err.value) and DATA_DIR_ENV in str(err.value)
    assert list(dest.iterdir()) == []


def test_ensure_files_downloads_every_missing_file_from_env_mirrors(tmp_path, serve, mirror_dir, monkeypatch):
    monkeypatch.setenv(MIRRORS_ENV, serve(mirror_dir))
    dest = tmp_path / "data"
    paths = ensure_files(dest, progress=False)
    assert set(paths) == set(FILES)
    assert all(p.parent == dest and p.is_file() for p in paths.values())
    assert {p.name for p in dest.iterdir()} == {f"{n}.gz" for n in FILES}


def test_missing_data_and_failed_download_give_one_clear_message(tmp_path, monkeypatch):
    monkeypatch.setenv(MIRRORS_ENV, closed_port_url())
    monkeypatch.setenv(DATA_DIR_ENV, str(tmp_path / "nowhere"))
    with pytest.raises(UserError) as err:
        ensure_files(progress=False)
    msg = str(err.value)
    assert str(tmp_path / "nowhere") in msg and DATA_DIR_ENV in msg
    assert all(name in msg for name in FILES)
    assert "\n" not in msg
    assert missing_message(tmp_path, "x").count("\n") == 0


def test_each_failed_mirror_is_named_with_its_reason(tmp_path, serve):
    empty = tmp_path / "empty"
    empty.mkdir()
    url = serve(empty)
    with pytest.raises(UserError) as err:
        download(LABELS, tmp_path / "a" / "b", [url], progress=False)  # nested folders are created
    assert f"{url}{LABELS}.gz: File not found" in str(err.value)  # the HTTP reason, not the exception's repr
    assert (tmp_path / "a" / "b").is_dir()
    dead = closed_port_url()
    with pytest.raises(UserError) as err:
        download(LABELS, tmp_path / "d", [url, dead], progress=False)
    assert f"({url}{LABELS}.gz: File not found; {dead}{LABELS}.gz: " in str(err.value)  # every mirror, in order, "; " apart
    with pytest.raises(UserError, match="download failed \\(no mirrors configured\\)"):
        download(LABELS, tmp_path / "c", [], progress=False)


def test_mirrors_from_the_environment_are_trimmed_and_end_in_a_slash(monkeypatch):
    from mnist_lib.data.idx import mirrors

    monkeypatch.setenv(MIRRORS_ENV, " http://a/x, ,http://b/y/ ")
    assert mirrors() == ["http://a/x/", "http://b/y/"]
    assert mirrors("fashion-mnist") == ["http://a/x/", "http://b/y/"]  # the override is for every dataset
    monkeypatch.delenv(MIRRORS_ENV)
    assert (
        mirrors()
        == list(DATASETS["mnist"].mirrors)
        == ["https://ossci-datasets.s3.amazonaws.com/mnist/", "http://yann.lecun.com/exdb/mnist/"]
    )
    assert mirrors("fashion-mnist") == ["http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/"]


def test_missing_files_without_download_name_the_folder_and_files(tmp_path):
    with pytest.raises(UserError) as err:
        ensure_files(tmp_path, allow_download=False)
    msg = str(err.value)
    assert msg.startswith(f"MNIST data not found in {tmp_path} and the download failed (download disabled).")
    assert ", ".join(FILES) in msg
