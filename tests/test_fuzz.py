"""Property-based fuzzing of every parser of outside input (hypothesis).

The property, for each: a valid result, or a UserError whose message names the
file. Never another exception, and never an allocation beyond MEMORY_CAP (the
process's data segment is capped while the parser runs, so a parser that trusts a
size written in the file fails loudly instead of passing). The examples tried are
counted in the test output ("fuzz examples tried: ..."). The default profile is
bounded and seeded (a fixed set of examples, about 30 s in all); run
`HYPOTHESIS_PROFILE=deep pytest tests/test_fuzz.py` for a long randomized hunt.
"""

from __future__ import annotations

import gzip
import io
import json
import struct

import numpy as np
import pytest
import torch
import yaml
from conftest import FUZZ_EXAMPLES, idx_bytes, memory_cap
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from PIL import Image

from mnist_lib import MLP, Config
from mnist_lib.core.errors import UserError
from mnist_lib.data.idx import load_idx, parse_idx
from mnist_lib.data.images import load_digit
from mnist_lib.records.runs import load_model, save_model
from mnist_lib.workflows.batch import load_run
from mnist_lib.workflows.sweep_spec import TOP_KEYS, load_spec

MEMORY_CAP = 256 * 2**20  # every input here is under 1 MB; 256 MB more is far beyond what any of them justifies


def fuzz_settings(share: float = 1.0) -> settings:
    """The loaded profile's settings, with `share` of its examples; fixtures are per test, files per example."""
    return settings(
        max_examples=max(10, int(settings.default.max_examples * share)),
        suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
    )


def parse_or_refuse(name: str, path, parse):
    """Run `parse(path)` under the memory cap: its result, or None after a UserError that names the file."""
    FUZZ_EXAMPLES[name] += 1
    try:
        with memory_cap(MEMORY_CAP):
            return parse(path)
    except UserError as e:
        assert str(path) in str(e), f"the message does not name the file: {e}"
        assert "\n" not in str(e).strip(), f"not one line: {e!r}"
        return None


class Files:
    """A fresh path per example in one temporary folder."""

    def __init__(self, folder):
        self.folder, self.n = folder, 0

    def write(self, data: bytes | str, suffix: str = "") -> object:
        self.n += 1
        path = self.folder / f"f{self.n}{suffix}"
        path.write_bytes(data.encode("utf-8", "surrogatepass") if isinstance(data, str) else data)
        return path


@pytest.fixture
def files(tmp_path):
    return Files(tmp_path)


# --- IDX ---------------------------------------------------------------------------------------

dims = st.lists(st.one_of(st.integers(0, 6), st.integers(0, 2**32 - 1)), max_size=5)


@st.composite
def idx_files(draw):
    """A header with a random type byte, rank and dimensions, then a payload that may be short, exact or long."""
    shape = draw(dims)
    type_byte = draw(st.sampled_from([0x08, 0x08, 0x08, 0x09, 0x0D, 0x00]))
    rank = draw(st.one_of(st.just(len(shape)), st.integers(0, 255)))
    zeros = draw(st.sampled_from([b"\x00\x00", b"\x00\x00", b"\x01\x00", b"PK"]))
    header = zeros + bytes([type_byte, rank]) + b"".join(struct.pack(">I", d) for d in shape)
    exact = int(np.prod(shape, dtype=object)) if shape else 1
    n = draw(st.one_of(st.just(exact), st.integers(0, 300))) if exact <= 4096 else draw(st.integers(0, 300))
    raw = header + draw(st.binary(min_size=n, max_size=n))
    cut = draw(st.one_of(st.none(), st.integers(0, len(raw))))
    return raw if cut is None else raw[:cut]


@given(raw=idx_files())
@example(raw=idx_bytes(np.zeros((2, 3), dtype=np.uint8)))
@example(raw=b"\x00\x00\x08\x02" + struct.pack(">II", 2**32 - 1, 2**32 - 1))  # 2**64 entries declared, none present
@example(raw=b"\x00\x00\x08\xff")  # rank 255, no dimensions
@example(raw=b"\x00\x00\x08\x03" + struct.pack(">III", 0, 2**32 - 1, 2**32 - 1))  # no entries, yet a shape numpy cannot hold
def test_idx_parser(raw):
    FUZZ_EXAMPLES["idx"] += 1
    try:
        with memory_cap(MEMORY_CAP):
            arr = parse_idx(raw, "fuzz.idx")
    except UserError as e:
        assert "fuzz.idx" in str(e)
        return
    # a result must be exactly what the header declares, read from the payload
    rank = raw[3]
    shape = tuple(int.from_bytes(raw[4 + 4 * i : 8 + 4 * i], "big") for i in range(rank))
    assert arr.shape == shape and arr.dtype == np.uint8
    assert arr.tobytes() == raw[4 + 4 * rank :]


@fuzz_settings()
@given(raw=idx_files(), compress=st.sampled_from(["none", "gzip", "broken-gzip", "gzip-bomb"]), trust_md5=st.booleans())
def test_idx_file_reader(files, raw, compress, trust_md5):
    """load_idx on a file: plain, gzipped, a damaged gzip stream, or a gzip that inflates far past the expected size."""
    import hashlib

    data = raw
    if compress in ("gzip", "broken-gzip"):
        data = gzip.compress(raw)
        if compress == "broken-gzip":
            data = data[: len(data) // 2] + b"\xff" * 3
    elif compress == "gzip-bomb":
        data = gzip.compress(raw + bytes(8 * 2**20))  # 8 MB of zeros in ~8 kB
    path = files.write(data, ".gz" if compress != "none" else "")
    expected = (2051, (2, 3), hashlib.md5(raw).hexdigest() if trust_md5 else "0" * 32)
    arr = parse_or_refuse("idx-file", path, lambda p: load_idx(p, "x", expected))
    if arr is not None:
        assert arr.shape == (2, 3) and compress in ("none", "gzip")


# --- safetensors model files --------------------------------------------------------------------

SMALL = Config(hidden=(6, 4), dropout=(0.1, 0.0))
DTYPES = ["F32", "F32", "F64", "BF16", "F16", "I64", "U8", "BOOL", "F8_E4M3", "Q4", ""]


def json_values(max_leaves=12):
    scalars = st.one_of(
        st.none(),
        st.booleans(),
        st.integers(),
        st.integers(-3, 3),
        st.floats(),
        st.text(max_size=20),
        st.sampled_from(["fp32", "bf16", "cosine"]),
    )
    return st.recursive(
        scalars, lambda kids: st.lists(kids, max_size=4) | st.dictionaries(st.text(max_size=12), kids, max_size=4), max_leaves=max_leaves
    )


field_names = st.sampled_from(Config.field_names())
# mostly Config's own fields, with values of every JSON type, plus strangers
config_dicts = st.dictionaries(st.one_of(field_names, field_names, st.text(max_size=10)), json_values(6), max_size=8)


@st.composite
def plausible_configs(draw):
    """A config JSON near SMALL's, so that many files get past the metadata checks to the tensor checks."""
    cfg = SMALL.to_dict()
    cfg.update(draw(st.dictionaries(st.sampled_from(["hidden", "dropout", "input_dropout", "lr"]), json_values(4), max_size=2)))
    if draw(st.booleans()):
        width = draw(st.one_of(st.integers(1, 8), st.integers(2**20, 2**31 - 1)))
        cfg.update(hidden=[width, 4])
    return json.dumps(cfg)


@st.composite
def safetensors_files(draw):
    """A header table of random names, dtypes, shapes and offsets, our metadata or random strings, then some payload bytes."""
    names = draw(
        st.lists(
            st.sampled_from(["net.0.weight", "net.0.bias", "net.3.weight", "net.3.bias", "net.6.weight", "net.6.bias", "x"]),
            max_size=7,
            unique=True,
        )
    )
    table, offset = {}, 0
    for name in names:
        shape = draw(st.lists(st.one_of(st.integers(0, 8), st.integers(0, 2**40)), max_size=3))
        size = draw(st.one_of(st.just(4 * int(np.prod(shape, dtype=object))), st.integers(0, 64)))
        table[name] = {"dtype": draw(st.sampled_from(DTYPES)), "shape": shape, "data_offsets": [offset, offset + min(size, 2**62)]}
        offset += min(size, 2**62)
    meta = {
        "config": draw(st.one_of(plausible_configs(), config_dicts.map(json.dumps), st.text(max_size=30))),
        "mean": draw(st.sampled_from(["0.1307", "nan", "x", "1e999"])),
        "std": draw(st.sampled_from(["0.3081", "0", "-1"])),
    }
    if draw(st.booleans()):
        table["__metadata__"] = draw(st.one_of(st.just(meta), st.dictionaries(st.text(max_size=8), st.text(max_size=8), max_size=3)))
    header = json.dumps(table).encode()
    declared = draw(st.one_of(st.just(len(header)), st.integers(0, 2**64 - 1)))
    payload = bytes(min(offset, 4096)) if draw(st.booleans()) else draw(st.binary(max_size=64))
    return struct.pack("<Q", declared) + header + payload


@st.composite
def tampered_real_files(draw):
    """A real saved model with its metadata replaced by random values."""
    buf = io.BytesIO()
    import safetensors.torch

    tensors = {k: v.contiguous() for k, v in MLP.from_config(SMALL).state_dict().items()}
    meta = {
        "config": draw(st.one_of(plausible_configs(), config_dicts.map(json.dumps))),
        "mean": draw(st.text(max_size=8) | st.just("0.5")),
        "std": "0.25",
    }
    buf.write(safetensors.torch.save(tensors, metadata=meta))
    return buf.getvalue()


@fuzz_settings()
@given(data=st.one_of(safetensors_files(), tampered_real_files(), st.binary(max_size=200)))
def test_model_file_loader(files, data):
    loaded = parse_or_refuse("safetensors", files.write(data, ".safetensors"), load_model)
    if loaded is not None:
        model, config, mean, std = loaded
        assert isinstance(model, MLP) and not model.training and np.isfinite(mean) and std > 0
        assert model(torch.zeros(2, 784)).shape == (2, 10)


def test_model_file_loader_accepts_a_real_model(tmp_path):
    save_model(tmp_path / "m.safetensors", MLP.from_config(SMALL), SMALL, 0.5, 0.25)
    assert load_model(tmp_path / "m.safetensors")[1] == SMALL  # the fuzzed property is not vacuous


# --- images ----------------------------------------------------------------------------------

FORMATS = {  # mode -> formats PIL writes it in
    "1": ["PNG", "BMP", "TIFF", "GIF"],
    "L": ["PNG", "JPEG", "BMP", "TIFF", "GIF", "WEBP"],
    "P": ["PNG", "GIF", "BMP", "TIFF"],
    "RGB": ["PNG", "JPEG", "BMP", "TIFF", "WEBP"],
    "RGBA": ["PNG", "TIFF", "WEBP", "GIF"],
    "LA": ["PNG", "TIFF"],
    "CMYK": ["JPEG", "TIFF"],
    "YCbCr": ["JPEG", "TIFF"],
    "LAB": ["TIFF"],
    "I;16": ["PNG", "TIFF"],
    "I": ["TIFF"],
    "F": ["TIFF"],
}


@st.composite
def image_files(draw):
    """Random mode, size, pixel values and frame count, in a format that stores that mode; sometimes cut short."""
    mode = draw(st.sampled_from(sorted(FORMATS)))
    fmt = draw(st.sampled_from(FORMATS[mode]))
    w, h = draw(st.integers(1, 48)), draw(st.integers(1, 48))
    frames = []
    for _ in range(draw(st.integers(1, 3)) if fmt in ("GIF", "TIFF", "WEBP", "PNG") else 1):
        probe = Image.new(mode, (w, h))
        nbytes = len(probe.tobytes())
        pixels = draw(
            st.one_of(
                st.binary(min_size=nbytes, max_size=nbytes), st.sampled_from([b"\x00", b"\xff", b"\x80"]).map(lambda b, n=nbytes: b * n)
            )
        )
        frames.append(Image.frombytes(mode, (w, h), pixels))
    buf = io.BytesIO()
    options = {"save_all": True, "append_images": frames[1:]} if len(frames) > 1 else {}
    if mode == "P" and fmt == "PNG" and draw(st.booleans()):
        options["transparency"] = draw(st.integers(0, 255))
    frames[0].save(buf, fmt, **options)
    data = buf.getvalue()
    cut = draw(st.one_of(st.none(), st.none(), st.integers(0, len(data))))
    return data if cut is None else data[:cut]


@fuzz_settings()
@given(
    data=st.one_of(
        image_files(),
        st.binary(max_size=100),
        st.sampled_from([b"\x89PNG\r\n\x1a\n", b"GIF89a", b"II*\x00", b"BM"]).flatmap(
            lambda m: st.binary(max_size=60).map(lambda b: m + b)
        ),
    )
)
def test_image_loader(files, data):
    digit = parse_or_refuse("image", files.write(data, ".img"), load_digit)
    if digit is not None:
        assert digit.shape == (28, 28) and digit.dtype == torch.uint8 and int(digit.max()) > 0


# --- configs -----------------------------------------------------------------------------------


@fuzz_settings()
@given(text=st.one_of(config_dicts.map(json.dumps), json_values().map(json.dumps), st.text(max_size=60)))
@example(text="[" * 100_000 + "]" * 100_000)  # deeper than Python's recursion limit
@example(text='{"epochs": ' + "1" * 5000 + "}")  # past Python's 4300-digit integer limit
@example(text='{"lr": 1e999, "hidden": [1e400]}')
@example(text='{"seed": 1e300, "hidden": [3.0], "dropout": [0]}')
def test_config_loader(files, text):
    config = parse_or_refuse("config", files.write(text, ".json"), Config.load)
    if config is not None:  # a result is a valid Config that survives its own round trip
        assert Config.from_json(config.to_json()) == config


def test_config_loader_refuses_bytes_that_are_not_utf8(tmp_path):
    (tmp_path / "c.json").write_bytes(b'{"lr": "\xff"}')
    with pytest.raises(UserError, match=r"c\.json: cannot read it"):
        Config.load(tmp_path / "c.json")


# --- sweep and run files (YAML) ----------------------------------------------------------------

yaml_scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.floats(),
    st.text(max_size=12),
    st.dates(),
    st.binary(max_size=4),
    st.sampled_from(["02_train.ipynb", "smoke", "library"]),
)
yaml_values = st.recursive(
    yaml_scalars,
    lambda kids: st.lists(kids, max_size=4) | st.dictionaries(st.one_of(st.text(max_size=10), st.integers(-2, 2)), kids, max_size=4),
    max_leaves=10,
)


@st.composite
def sweep_documents(draw):
    """Mostly the sweep file's own keys and Config's fields, with values of every YAML type."""
    grid = draw(
        st.dictionaries(
            st.one_of(field_names, st.text(max_size=6)), st.one_of(st.lists(json_values(3), max_size=3), yaml_values), max_size=3
        )
    )
    doc = {"grid": grid, "base": draw(st.one_of(config_dicts, yaml_values))}
    extra = draw(st.dictionaries(st.one_of(st.sampled_from(sorted(TOP_KEYS)), st.text(max_size=6), st.integers()), yaml_values, max_size=3))
    return {**doc, **extra}


YAML_TRAPS = [
    "a: &x [1, 2]\nb: *x\n",  # an alias
    "grid: {lr: !!python/object/apply:os.system [echo]}\n",  # an unsafe tag
    "grid: {lr: !!set 5}\n",
    "grid: {lr: [!!timestamp nope]}\n",
    "grid: {lr: [1e3000]}\n",
    "grid: {? [1, 2] : 3}\n",  # an unhashable key
    "[" * 5000 + "]" * 5000,
    "grid: {lr: [" + "9" * 5000 + "]}\n",
    "\t- bad indent",
    "grid:\n  lr: [1.0e-3]\nrefine: {trials: 2.5}\n",
]


@fuzz_settings()
@given(
    text=st.one_of(
        sweep_documents().map(yaml.safe_dump), yaml_values.map(yaml.safe_dump), st.text(max_size=80), st.sampled_from(YAML_TRAPS)
    )
)
@example(text="grid:\n  lr: [1.0e-3, 2.0e-3]\nbase: {epochs: 1}\n")
def test_sweep_file_loader(files, text):
    spec = parse_or_refuse("sweep-file", files.write(text, ".yaml"), load_spec)
    if spec is not None:  # every grid point of a loaded spec is a valid Config
        assert all(isinstance(spec.config_for(p), Config) for p in spec.grid_points())


@st.composite
def run_documents(draw):
    notebook = draw(
        st.one_of(
            st.sampled_from(["02_train.ipynb", "01_explore_data.ipynb", "nope.ipynb", "../README.md", "params/02_train.yaml", ""]),
            yaml_scalars,
        )
    )
    params = draw(
        st.one_of(
            st.dictionaries(
                st.one_of(st.sampled_from(["epochs", "lr", "run_name", "threads", "hidden"]), st.text(max_size=6)), yaml_values, max_size=3
            ),
            yaml_values,
        )
    )
    doc = {"notebook": notebook, "parameters": params}
    doc.update(draw(st.dictionaries(st.text(max_size=6), yaml_values, max_size=1)))
    return doc


@fuzz_settings(0.5)  # each example that names a real notebook reads and parses it
@given(text=st.one_of(run_documents().map(yaml.safe_dump), st.text(max_size=60), st.sampled_from(YAML_TRAPS)))
@example(text="notebook: 02_train.ipynb\nparameters: {epochs: 1}\n")
def test_run_file_loader(files, text):
    run = parse_or_refuse("run-file", files.write(text, ".yaml"), load_run)
    if run is not None:
        assert run.notebook.suffix == ".ipynb" and run.notebook.is_file()
