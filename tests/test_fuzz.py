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

from mnist_lib import MLP, Config, RunOptions
from mnist_lib.core.errors import UserError
from mnist_lib.data.idx import load_idx, parse_idx
from mnist_lib.data.images import load_digit
from mnist_lib.records.runs import STATUSES, SUMMARY_TYPES, load_model, read_summary, save_model
from mnist_lib.workflows.batch import _has_type, load_run, notebook_parameters
from mnist_lib.workflows.sweep_spec import TOP_KEYS, TRIAL_KEYS, load_spec

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
    # the nested sections with their own keys and values of the wrong type, seeds and storage URLs of every kind
    sections = {
        "trial": st.dictionaries(st.sampled_from(sorted(TRIAL_KEYS)), st.one_of(yaml_scalars, st.integers(-2, 10**12)), max_size=3),
        "refine": st.dictionaries(st.sampled_from(["trials", "top", "x"]), yaml_scalars, max_size=2),
        "seed": st.one_of(st.integers(-1, 2**70), yaml_scalars),
        "storage": st.one_of(st.sampled_from(["sqlite:///:memory:", "sqlite://", "nope", "postgresql://u@[::1", ""]), st.text(max_size=12)),
    }
    for key, strategy in sections.items():
        if draw(st.booleans()):
            extra[key] = draw(strategy)
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
            st.sampled_from(["02_train.ipynb", "04_final_evaluation.ipynb", "01_explore_data.ipynb", "nope.ipynb", "../README.md", ""]),
            yaml_scalars,
        )
    )
    # Config fields and the notebooks' own parameters (names, paths, threads, devices, seeds), with values of every type
    names = ["epochs", "lr", "hidden", "run_name", "threads", "device", "overwrite", "figures_subdir", "seeds", "output_name"]
    names += ["config_file", "max_train_samples", "n_samples"]
    tricky = st.sampled_from(["..", "../../x", "a/b", "", ".hidden", "tpu", "meta", "cpu", "configs/mlp_aug.json", "ok"])
    values = st.one_of(yaml_values, tricky, st.integers(-5, 2**40), st.lists(st.integers(-1, 2**33), max_size=3))
    params = draw(st.one_of(st.dictionaries(st.one_of(st.sampled_from(names), st.text(max_size=6)), values, max_size=3), yaml_values))
    doc = {"notebook": notebook, "parameters": params}
    doc.update(draw(st.dictionaries(st.text(max_size=6), yaml_values, max_size=1)))
    return doc


@fuzz_settings(0.5)  # each example that names a real notebook reads and parses it
@given(text=st.one_of(run_documents().map(yaml.safe_dump), st.text(max_size=60), st.sampled_from(YAML_TRAPS)))
@example(text="notebook: 02_train.ipynb\nparameters: {epochs: 1}\n")
def test_run_file_loader(files, text):
    run = parse_or_refuse("run-file", files.write(text, ".yaml"), load_run)
    if run is not None:  # every parameter has the type its notebook declares, and passes its rule
        assert run.notebook.suffix == ".ipynb" and run.notebook.is_file()
        declared = notebook_parameters(run.notebook)
        for name, value in run.parameters.items():
            assert _has_type(value, declared[name]["inferred_type_name"]) or name in Config.field_names(), (name, value)
            if name in ("run_name", "figures_subdir", "output_name") and value:
                assert ".." not in value.split("/") and not value.startswith("/"), (name, value)


# --- run records (summary.json) ------------------------------------------------------------------

SUMMARY_KEYS = ["status", "best_val_acc", "final_val_acc", "test_acc", "test_loss", "best_epoch", "epochs_run", "weights_epoch",
                "train_seconds", "params", "split_hash", "threads", "norm_mean", "error"]  # fmt: skip


@fuzz_settings()
@given(
    text=st.one_of(
        st.dictionaries(
            st.sampled_from(SUMMARY_KEYS), st.one_of(json_values(3), st.sampled_from(["completed", "running"])), max_size=6
        ).map(json.dumps),
        json_values().map(json.dumps),
        st.sampled_from(['{"status": "completed", "test_acc": NaN}', '{"status": "completed", "best_val_acc": Infinity}']),
        st.text(max_size=40),
    )
)
@example(text='{"status": "completed", "test_acc": "high"}')
def test_run_summary_reader(files, text):
    """summary.json is read as untrusted input: a summary whose known fields have their types, or one line naming the file."""
    folder = files.write("", ".d")
    folder.unlink()
    folder.mkdir()
    (folder / "summary.json").write_text(text)
    summary = parse_or_refuse("summary", folder, read_summary)
    if summary is not None:
        assert summary["status"] in STATUSES
        for key, types in SUMMARY_TYPES.items():
            if key in summary:
                assert isinstance(summary[key], types) and not isinstance(summary[key], bool), (key, summary[key])
                if isinstance(summary[key], float):
                    f"{summary[key]:.4f}"  # what the CLI prints of it works


# --- a config that validates trains, or fails with one line ----------------------------------------


def edge_floats(lo: float, hi: float, lo_open: bool = False, hi_open: bool = False):
    """Values of a float field at and near the edges of its valid range, and some between."""
    edges = [v for v in (lo, hi, lo + 1e-300, hi * (1 - 1e-9) if hi else 0.0) if (v > lo or not lo_open) and (v < hi or not hi_open)]
    return st.one_of(st.sampled_from(edges), st.floats(lo, hi, exclude_min=lo_open, exclude_max=hi_open, allow_nan=False))


@st.composite
def extreme_configs(draw):
    """Valid Configs at the edges of every range, small enough to train in a fraction of a second."""
    width = draw(st.integers(1, 8))
    layers = draw(st.integers(0, 2))
    fields = {
        "epochs": 1,
        "hidden": [width] * layers,
        "dropout": [draw(edge_floats(0.0, 1.0, hi_open=True)) for _ in range(layers)],
        "batch_size": draw(st.sampled_from([1, 2, 3, 64, 10**9])),
        "lr": draw(st.sampled_from([1e-320, 1e-3, 1.0, 1e300])),
        "weight_decay": draw(st.sampled_from([0.0, 1e-300, 1e300])),
        "optimizer": draw(st.sampled_from(["adam", "adamw", "sgd"])),
        "activation": draw(st.sampled_from(["relu", "gelu", "silu", "tanh", "leaky_relu"])),
        "norm": draw(st.sampled_from(["none", "batch", "layer"])),
        "lr_schedule": draw(st.sampled_from(["plateau", "cosine", "onecycle"])),
        "lr_factor": draw(edge_floats(0.0, 1.0, lo_open=True, hi_open=True)),
        "lr_patience": draw(st.sampled_from([0, 10**18])),
        "val_size": draw(st.sampled_from([10, 6000, 59990])),
        "split_seed": draw(st.sampled_from([0, 2**32 - 1])),
        "seed": draw(st.sampled_from([0, 2**32 - 1])),
        "label_smoothing": draw(edge_floats(0.0, 1.0, hi_open=True)),
        "max_norm": draw(st.sampled_from([0.0, 1e-300, 1e300])),
        "input_dropout": draw(edge_floats(0.0, 1.0, hi_open=True)),
        "aug_rotate": draw(edge_floats(0.0, 180.0)),
        "aug_scale": draw(edge_floats(0.0, 1.0, hi_open=True)),
        "aug_shear": draw(edge_floats(0.0, 90.0, hi_open=True)),
        "aug_translate": draw(edge_floats(0.0, 14.0)),
        "aug_elastic_alpha": draw(edge_floats(0.0, 14.0)),
        "aug_elastic_sigma": draw(edge_floats(0.1, 14.0)),
        "precision": draw(st.sampled_from(["fp32", "bf16"])),
    }
    if fields["optimizer"] == "sgd" and draw(st.booleans()):
        fields["momentum"] = draw(edge_floats(0.0, 1.0, hi_open=True))
        fields["nesterov"] = fields["momentum"] > 0 and draw(st.booleans())
    try:
        return Config(**fields), draw(st.sampled_from([1, 2, 3, 300]))
    except UserError:
        return None, 0  # Config refused it: nothing to train


@settings(
    max_examples=max(10, settings.default.max_examples // 6),
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(case=extreme_configs())
def test_a_config_that_validates_trains_or_fails_with_one_line(tmp_path_factory, mnist_dir, case):
    """The rule of issue 19: a value Config accepts trains (completed or diverged), or is refused with one UserError line."""
    from mnist_lib import train_and_record

    config, n_train = case
    if config is None:
        return
    FUZZ_EXAMPLES["trainable-config"] += 1
    try:
        _, result, summary = train_and_record(
            config,
            RunOptions(max_train_samples=n_train, threads=1, device="cpu", progress=False),
            run_dir=tmp_path_factory.mktemp("c") / "r",
        )
    except UserError as e:
        assert "\n" not in str(e), e
        return
    assert result.status in ("completed", "diverged") and summary["status"] == result.status
