"""Run records: files and columns, atomic writes, no silent overwrite, safetensors round trip."""

import csv
import json
import re
from pathlib import Path

import pytest
import torch

from mnist_lib import MLP, Config, RunOptions, load_model, train_and_record
from mnist_lib.core.errors import UserError
from mnist_lib.records.claim import claim_run_dir
from mnist_lib.records.runs import atomic_write, save_model
from mnist_lib.records.seal import SEAL_KEY, is_sealed, write_sealed

TINY = Config(epochs=1, hidden=(32,), dropout=(0.1,))


@pytest.fixture(scope="module")
def run(tmp_path_factory, mnist_dir):
    run_dir = tmp_path_factory.mktemp("runs") / "tiny"
    figs = tmp_path_factory.mktemp("figs")
    out = train_and_record(
        TINY,
        RunOptions(data_dir=mnist_dir, max_train_samples=2000, threads=2, device="cpu", progress=False),
        run_dir=run_dir,
        figures_dir=figs,
    )
    return out, figs


def test_run_directory_has_every_file(run):
    (run_dir, result, summary), figs = run
    assert {p.name for p in run_dir.iterdir()} == {"config.json", "metrics.csv", "summary.json", "model.safetensors"}
    assert {p.name for p in figs.iterdir()} == {"loss_curves.png", "accuracy_curves.png"}
    assert Config.load(run_dir / "config.json") == TINY


def test_metrics_csv_has_exactly_the_columns(run):
    (run_dir, result, _), _ = run
    with open(run_dir / "metrics.csv") as f:
        rows = list(csv.reader(f))
    assert rows[0] == ["epoch", "train_loss", "train_acc", "val_loss", "val_acc", "lr", "seconds"]
    assert len(rows) == 1 + len(result.history)
    assert float(rows[1][4]) == result.history[0]["val_acc"]


def test_summary_fields(run):
    (run_dir, result, summary), _ = run
    on_disk = json.loads((run_dir / "summary.json").read_text())
    assert is_sealed(on_disk) and {k: v for k, v in on_disk.items() if k != SEAL_KEY} == summary
    for key in ("status", "best_val_acc", "final_val_acc", "params", "train_seconds", "device", "torch_version", "split_hash"):
        assert key in on_disk, key
    assert on_disk["status"] == "completed"
    assert on_disk["params"] == 784 * 32 + 32 + 32 * 10 + 10
    assert on_disk["best_val_acc"] == result.best_val_acc
    assert on_disk["torch_version"] == torch.__version__


def test_existing_run_directory_is_not_overwritten(run, mnist_dir):
    (run_dir, _, _), _ = run
    before = (run_dir / "summary.json").read_bytes()
    with pytest.raises(UserError, match="already exists"):
        train_and_record(TINY, RunOptions(data_dir=mnist_dir, max_train_samples=500, progress=False), run_dir=run_dir)
    assert (run_dir / "summary.json").read_bytes() == before


def test_safetensors_round_trip(run, small_data):
    (run_dir, result, summary), _ = run
    model, config, mean, std = load_model(run_dir)
    assert config == TINY and mean == summary["norm_mean"] and std == summary["norm_std"]
    result.model.eval()
    with torch.no_grad():
        assert torch.equal(model(small_data.x_val[:100]), result.model(small_data.x_val[:100]))
    assert (run_dir / "model.safetensors").read_bytes()[:8] != b"\x80\x02\x8a\x0a"  # not a pickle


def test_save_model_carries_config(tmp_path):
    cfg = Config(hidden=(8,), dropout=(0.0,))
    model = MLP.from_config(cfg)
    save_model(tmp_path / "m.safetensors", model, cfg, 0.5, 0.25)
    loaded, cfg2, mean, std = load_model(tmp_path / "m.safetensors")
    assert cfg2 == cfg and (mean, std) == (0.5, 0.25)
    for a, b in zip(model.parameters(), loaded.parameters(), strict=True):
        assert torch.equal(a, b)


def test_load_model_errors(tmp_path):
    with pytest.raises(UserError, match="no model"):
        load_model(tmp_path)
    (tmp_path / "model.safetensors").write_bytes(b"garbage")
    with pytest.raises(UserError, match="not a model file"):
        load_model(tmp_path / "model.safetensors")
    with pytest.raises(UserError, match="holds model.safetensors but no summary.json: not a run record; load the file"):
        load_model(tmp_path)


def test_atomic_write_leaves_old_file_on_failure(tmp_path, monkeypatch):
    path = tmp_path / "f.txt"
    atomic_write(path, "old")

    def boom(*a):
        raise OSError("disk full")

    monkeypatch.setattr("os.replace", boom)
    with pytest.raises(UserError, match=r"^cannot write .*f\.txt: disk full$"):
        atomic_write(path, "new")
    assert path.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["f.txt"]


def test_failed_run_is_marked_failed_not_running(tmp_path, mnist_dir, monkeypatch):
    import mnist_lib.workflows.experiment as exp

    def broken_train(*a, **k):
        raise RuntimeError("boom")

    monkeypatch.setattr(exp, "train", broken_train)
    with pytest.raises(RuntimeError):
        exp.train_and_record(TINY, RunOptions(data_dir=mnist_dir, max_train_samples=500, progress=False), run_dir=tmp_path / "r")
    summary = json.loads((tmp_path / "r" / "summary.json").read_text())
    assert summary["status"] == "failed" and "boom" in summary["error"]
    assert not (tmp_path / "r" / "model.safetensors").exists()


def test_a_model_with_input_dropout_records_and_evaluates(tmp_path, mnist_dir):
    from mnist_lib import evaluate_run, train_and_record

    cfg = Config(epochs=1, hidden=(16,), dropout=(0.0,), input_dropout=0.2)
    run_dir, _, _ = train_and_record(
        cfg, RunOptions(max_train_samples=500, threads=2, device="cpu", progress=False), run_dir=tmp_path / "r"
    )
    report = evaluate_run(run_dir, device="cpu")
    assert 0.1 < report.acc <= 1.0


# --- model files are untrusted input ---------------------------------------------------------


def rewrite_model(src, dst, tensors=None, **meta_changes):
    """Copy a model file with some metadata fields or tensors replaced (what a tampered or foreign file looks like)."""
    import safetensors
    import safetensors.torch

    with safetensors.safe_open(str(src), framework="pt") as f:
        meta = dict(f.metadata())
    original = safetensors.torch.load_file(str(src))
    meta.update({k: v for k, v in meta_changes.items() if v is not None})
    for k in [k for k, v in meta_changes.items() if v is None]:
        meta.pop(k)
    dst.write_bytes(safetensors.torch.save(original if tensors is None else tensors(original), metadata=meta))
    return dst


def with_config(src, **changes):
    cfg = json.loads(src)
    cfg.update(changes)
    return json.dumps(cfg)


@pytest.fixture
def model_file(tmp_path):
    cfg = Config(hidden=(8, 4), dropout=(0.0, 0.0))
    save_model(tmp_path / "m.safetensors", MLP.from_config(cfg), cfg, 0.1307, 0.3081)
    return tmp_path / "m.safetensors"


def tampered_cases():
    return {
        # a config that asks for 627 GB of weights, with the original tensors: refused before anything is allocated
        "huge-config": lambda m: {"config": with_config(m["config"], hidden=[200_000_000, 4], dropout=[0.0, 0.0])},
        "other-widths": lambda m: {"config": with_config(m["config"], hidden=[4, 8])},
        "more-layers": lambda m: {"config": with_config(m["config"], hidden=[8] * 50, dropout=[0.0] * 50)},
        "invalid-config": lambda m: {"config": with_config(m["config"], lr=-1)},
        "config-not-json": lambda m: {"config": "{not json"},
        "no-config": lambda m: {"config": None},
        "std-zero": lambda m: {"std": "0"},
        "mean-nan": lambda m: {"mean": "nan"},
        "mean-text": lambda m: {"mean": "a lot"},
    }


@pytest.mark.parametrize("case", list(tampered_cases()))
def test_tampered_metadata_is_refused_before_allocation(model_file, case, monkeypatch):
    import safetensors

    with safetensors.safe_open(str(model_file), framework="pt") as f:
        changes = tampered_cases()[case](f.metadata())
    bad = rewrite_model(model_file, model_file.with_name("bad.safetensors"), **changes)
    loads = []
    monkeypatch.setattr("safetensors.torch.load_file", lambda *a, **k: loads.append(a))
    with pytest.raises(UserError, match=r"bad\.safetensors: not a model file of this project"):
        load_model(bad)
    assert loads == []  # no weight was read


@pytest.mark.parametrize(
    "edit",
    [
        lambda t: {k: v for k, v in t.items() if k != "net.3.bias"},  # a tensor missing
        lambda t: {**t, "extra": torch.zeros(3)},  # a tensor too many
        lambda t: {**t, "net.0.weight": t["net.0.weight"].double()},  # another dtype
        lambda t: {**t, "net.0.weight": t["net.0.weight"][:, :100].contiguous()},  # another shape
        lambda t: {"a": torch.zeros(2)},  # a foreign file with our metadata
    ],
    ids=["missing", "extra", "dtype", "shape", "foreign"],
)
def test_tensors_that_do_not_match_the_config_are_refused(model_file, edit):
    bad = rewrite_model(model_file, model_file.with_name("bad.safetensors"), tensors=edit)
    with pytest.raises(UserError, match=r"bad\.safetensors: not a model file"):
        load_model(bad)


def test_a_safetensors_file_without_our_metadata_is_refused(tmp_path):
    import safetensors.torch

    (tmp_path / "f.safetensors").write_bytes(safetensors.torch.save({"w": torch.zeros(2)}))
    with pytest.raises(UserError, match="metadata lacks config, mean, std"):
        load_model(tmp_path / "f.safetensors")


def test_loaded_model_holds_the_files_weights_in_eval_mode(model_file):
    import safetensors.torch

    model, *_ = load_model(model_file)
    assert not model.training and all(p.device.type == "cpu" and p.requires_grad for p in model.parameters())
    stored = safetensors.torch.load_file(str(model_file))
    assert all(torch.equal(v, stored[k]) for k, v in model.state_dict().items())


@pytest.mark.parametrize("status", ["failed", "diverged", "interrupted", "running"])
def test_evaluate_refuses_a_run_that_did_not_complete(run, tmp_path, status, monkeypatch):
    """Choice: refuse (not evaluate and record the status): a test number must come from a finished run's best weights."""
    import shutil

    from mnist_lib import evaluate_run

    (run_dir, _, _), _ = run
    copy = tmp_path / "r"
    shutil.copytree(run_dir, copy)
    summary = json.loads((copy / "summary.json").read_text())
    (copy / "summary.json").write_text(json.dumps({**summary, "status": status}))
    reads = []
    monkeypatch.setattr("mnist_lib.workflows.experiment.load_test", lambda *a, **k: reads.append(a))
    why = "says 'running' but no process writes it" if status == "running" else f"has status '{status}'"  # its writer is gone
    with pytest.raises(UserError, match=f"{why}.*; only completed runs are evaluated"):
        evaluate_run(copy, device="cpu")
    assert reads == [] and "test_acc" not in json.loads((copy / "summary.json").read_text())


def test_atomic_write_uses_a_hidden_temporary_beside_the_target(tmp_path, monkeypatch):
    import os

    renames = []
    real = os.replace
    monkeypatch.setattr("os.replace", lambda src, dst: renames.append((src, dst)) or real(src, dst))
    atomic_write(tmp_path / "a" / "b" / "f.txt", "x")  # missing folders are created
    ((src, dst),) = renames
    src = Path(src)
    assert src.parent == tmp_path / "a" / "b" and src.name.startswith(".f.txt.") and src.name.endswith(".tmp")
    assert Path(dst).read_text() == "x" and not src.exists()


def test_json_and_csv_records_are_formatted_for_diffs(tmp_path):
    from mnist_lib.records.runs import write_json, write_metrics_csv

    write_json(tmp_path / "s.json", {"b": 1, "a": [1, 2]})
    assert (tmp_path / "s.json").read_text() == '{\n  "b": 1,\n  "a": [\n    1,\n    2\n  ]\n}\n'  # key order kept, indent 2
    write_metrics_csv(
        tmp_path / "m.csv", [dict(epoch=1, train_loss=0.5, train_acc=0.9, val_loss=0.4, val_acc=0.91, lr=1e-3, seconds=2.0, extra=0)]
    )
    assert (tmp_path / "m.csv").read_bytes() == b"epoch,train_loss,train_acc,val_loss,val_acc,lr,seconds\n1,0.5,0.9,0.4,0.91,0.001,2.0\n"


def test_environment_records_the_machine():
    import platform
    import sys

    from mnist_lib.records.runs import environment

    env = environment("cpu", 2)
    lines = Path("/proc/cpuinfo").read_text().splitlines()
    model = next(line.split(":", 1)[1].strip() for line in lines if line.startswith("model name"))
    assert env["cpu"] == model and env["threads"] == 2 and env["device"] == "cpu" and env["gpu"] is None
    assert env["python_version"] == platform.python_version() == sys.version.split()[0]
    assert set(env) == {"device", "threads", "cpu", "cpu_count", "gpu", "torch_version", "numpy_version", "python_version", "platform"}
    assert env["cpu_count"] >= 1 and env["platform"] == platform.platform()


def test_run_folders_are_named_by_timestamp_and_an_empty_folder_is_taken(tmp_path, monkeypatch):
    import re

    monkeypatch.setattr("mnist_lib.records.claim.RUNS_DIR", tmp_path / "runs")
    made = claim_run_dir().path
    assert made.parent == tmp_path / "runs" and re.fullmatch(r"\d{8}-\d{6}", made.name) and made.is_dir()
    (tmp_path / "empty").mkdir()
    assert claim_run_dir(tmp_path / "empty").path == tmp_path / "empty"  # an empty folder is no run to protect
    assert claim_run_dir(tmp_path / "x" / "y").path.is_dir()


def test_a_new_record_says_running_until_it_ends(tmp_path):
    from mnist_lib.records.runs import RunRecorder

    rec = RunRecorder(claim_run_dir(tmp_path / "r"), TINY, {"params": 1})
    d = tmp_path / "r"
    assert strict_json(d / "summary.json") == {"status": "running", "params": 1}
    assert (d / "metrics.csv").read_text() == "epoch,train_loss,train_acc,val_loss,val_acc,lr,seconds\n"
    rec.fail("RuntimeError: boom")
    assert strict_json(d / "summary.json") == {"status": "failed", "params": 1, "error": "RuntimeError: boom"}
    rec.fail(KeyboardInterrupt())
    assert json.loads((d / "summary.json").read_text())["status"] == "interrupted"
    assert (d / ".lock").exists()
    rec.close()
    assert not (d / ".lock").exists()


def test_model_file_messages_say_what_is_wrong(model_file):
    def refused(match, **kw):
        bad = rewrite_model(model_file, model_file.with_name("bad.safetensors"), **kw)
        with pytest.raises(UserError, match=match):
            load_model(bad)

    keep = {"net.0.weight", "net.0.bias", "net.3.weight"}  # 3 tensors for the config's 3 layers: the names decide
    refused(r"tensors \[\] not in the config's model, \['net.3.bias', 'net.6.bias', 'net.6.weight'\] missing",
            tensors=lambda t: {k: v for k, v in t.items() if k in keep})  # fmt: skip
    refused(r"its config has 3 layers but the file holds 2 tensors", tensors=lambda t: {k: t[k] for k in ("net.0.weight", "net.0.bias")})
    refused(
        r"tensor net.0.weight is F64 \[8, 784\], its config needs F32 \[8, 784\]",
        tensors=lambda t: {**t, "net.0.weight": t["net.0.weight"].double()},
    )
    refused(r"metadata mean 'x' and std '0.3081' must be numbers", mean="x")
    refused(
        r"metadata config: invalid config: lr must be > 0", config=json.dumps({**Config(hidden=(8, 4), dropout=(0, 0)).to_dict(), "lr": -1})
    )


def test_bf16_support_is_false_where_there_is_no_bf16_matmul():
    from mnist_lib.training.device import bf16_supported

    assert bf16_supported("meta") is False
    assert bf16_supported("cpu") == bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())


# --- every end of a run leaves a record that tells the truth ---------------------------------

DIVERGES = Config(epochs=2, hidden=(16,), dropout=(0.0,), optimizer="sgd", lr=1e30)  # NaN in the first epoch


def strict_json(path):
    """A JSON file of ours, with no NaN; a summary's seal checked and left out (the other fields are compared)."""
    data = json.loads(path.read_text(), parse_constant=lambda c: pytest.fail(f"{c} written into {path}"))
    if path.name == "summary.json":
        assert is_sealed(data), f"{path} is not sealed"
        del data[SEAL_KEY]
    return data


def test_a_run_that_diverges_at_once_saves_no_weights_and_writes_no_nan(tmp_path, mnist_dir):
    run_dir, result, summary = train_and_record(
        DIVERGES, RunOptions(max_train_samples=300, threads=1, device="cpu", progress=False), run_dir=tmp_path / "r"
    )
    on_disk = strict_json(run_dir / "summary.json")
    assert result.status == on_disk["status"] == "diverged" and on_disk["best_epoch"] == 0
    assert on_disk["weights_epoch"] is None and on_disk["best_val_acc"] is None and on_disk["epochs_run"] == 1
    assert not (run_dir / "model.safetensors").exists()  # NaN weights are not a model
    with pytest.raises(UserError, match="no model at"):
        load_model(run_dir)


def test_nan_weights_are_never_saved(tmp_path):
    from mnist_lib.records.runs import RunRecorder

    rec = RunRecorder(claim_run_dir(tmp_path / "r"), TINY, {})
    model = MLP.from_config(TINY)
    assert rec.save_model(model, 0.13, 0.31) and (tmp_path / "r" / "model.safetensors").is_file()
    with torch.no_grad():
        model.net[0].weight[0, 0] = float("inf")
    (tmp_path / "r" / "model.safetensors").unlink()
    assert not rec.save_model(model, 0.13, 0.31) and not (tmp_path / "r" / "model.safetensors").exists()
    rec.close()


def test_a_figure_that_cannot_be_written_leaves_the_run_failed_not_completed(tmp_path, mnist_dir, monkeypatch):
    import mnist_lib.workflows.experiment as exp

    def no_figures(fig, path, close=False):
        raise UserError(f"cannot write {path}: read-only file system")

    monkeypatch.setattr(exp.plots, "save_figure", no_figures)
    with pytest.raises(UserError, match="loss_curves.png: read-only file system"):
        exp.train_and_record(TINY, RunOptions(max_train_samples=300, threads=1, device="cpu", progress=False), run_dir=tmp_path / "r")
    summary = strict_json(tmp_path / "r" / "summary.json")
    assert summary["status"] == "failed" and "loss_curves.png: read-only file system" in summary["error"]
    assert summary["best_val_acc"] > 0.1 and summary["weights_epoch"] == 1  # what was done is recorded; completed it is not


@pytest.mark.parametrize("population", ["off", "on"])
def test_every_seed_diverging_is_one_clear_line(tmp_path, capsys, mnist_dir, population):
    from mnist_lib.cli import main

    code = main(["train", "--seeds", "0", "1", "--population", population, "--optimizer", "sgd", "--lr", "1e30", "--hidden", "16", "--dropout", "0",
                 "--epochs", "2", "--max-train-samples", "300", "--threads", "1", "--device", "cpu", "--quiet", "--run-dir", str(tmp_path / "s")])  # fmt: skip
    out, err = capsys.readouterr()
    assert code == 2 and "no seed completed (seed 0 diverged, seed 1 diverged)" in out
    assert err == f"mnist-lib: error: 2 of 2 seeds did not complete (seed 0 diverged, seed 1 diverged); see {tmp_path / 's'}\n"
    aggregate = strict_json(tmp_path / "s" / "summary.json")
    assert aggregate["status"] == "failed" and aggregate["n_seeds"] == 0 and "val_acc_mean" not in aggregate
    assert aggregate["error"] == "2 of 2 seeds did not complete (seed 0 diverged, seed 1 diverged)"


def test_fail_records_the_reason_as_the_user_would_read_it_and_never_raises(tmp_path, monkeypatch):
    from mnist_lib.records import runs
    from mnist_lib.records.runs import RunRecorder

    rec = RunRecorder(claim_run_dir(tmp_path / "r"), TINY, {})
    rec.fail(UserError("cannot write x/model.safetensors: no space left on the device"))
    assert strict_json(tmp_path / "r" / "summary.json") == {
        "status": "failed",
        "error": "cannot write x/model.safetensors: no space left on the device",
    }
    rec.fail(RuntimeError("boom"))
    assert strict_json(tmp_path / "r" / "summary.json")["error"] == "RuntimeError: boom"
    rec.summary.pop("error")
    rec.fail(KeyboardInterrupt())
    assert strict_json(tmp_path / "r" / "summary.json") == {"status": "interrupted"}  # an interrupt is no error
    for error in (UserError("disk still full"), OSError(28, "No space left on device")):

        def full(*a, error=error):
            raise error

        monkeypatch.setattr(runs, "write_json", full)
        rec.fail(RuntimeError("the first error"))  # called while an error is on its way out: it must not raise another
    rec.close()


def test_read_summary_messages_are_exact(tmp_path):
    from mnist_lib.records.runs import read_summary

    def refused(folder):
        with pytest.raises(UserError) as e:
            read_summary(folder)
        return str(e.value)

    assert refused(tmp_path / "nope") == f"run directory {tmp_path / 'nope'} does not exist"
    (tmp_path / "f").write_text("x")
    assert refused(tmp_path / "f") == f"{tmp_path / 'f'} is not a run directory"
    run = tmp_path / "r"
    run.mkdir()
    path = run / "summary.json"
    cases = {
        "[1]": f"run summary {path}: expected a JSON object, got list",
        '{"status": "completed", "epochs_run": "3"}': f'run summary {path}: epochs_run must be an integer, got "3"',
        '{"status": "completed", "split_hash": 7}': f"run summary {path}: split_hash must be a string, got 7",
        '{"status": "completed", "best_epoch": 1.5}': f"run summary {path}: best_epoch must be an integer or null, got 1.5",
        '{"status": "completed", "test_acc": true}': f"run summary {path}: test_acc must be a number or null, got true",
        '{"status": "completed", "test_acc": "'
        + "x" * 100
        + '"}': f'run summary {path}: test_acc must be a number or null, got "{"x" * 59}',
        '{"status": "done"}': f'run summary {path}: status must be one of running, completed, failed, interrupted, diverged, got "done"',
    }
    for text, message in cases.items():
        path.write_text(text)
        assert refused(run) == message
    path.write_text('{"status": "completed", "best_epoch": null, "epochs_run": 3, "unknown": [1]}')
    assert read_summary(run) == {"status": "completed", "best_epoch": None, "epochs_run": 3, "unknown": [1]}


def test_normalization_statistics_have_inclusive_ranges_and_exact_messages():
    from mnist_lib.records.runs import check_norm_stats

    assert [check_norm_stats(m, s) for m, s in ((0.0, 0.001), (1.0, 1.0), (0.13, 0.31))] == ["", "", ""]
    assert check_norm_stats(-0.1, 0.3) == "mean -0.1 must be a finite number in [0.0, 1.0] (pixels on the [0, 1] scale)"
    assert check_norm_stats(0.1, 1e-300) == "std 1e-300 must be a finite number in [0.001, 1.0] (pixels on the [0, 1] scale)"
    assert check_norm_stats(0.1, float("inf")).startswith("std inf must be") and check_norm_stats(float("nan"), 0.3).startswith("mean nan")


def test_non_finite_weights_are_named(model_file):
    import safetensors.torch

    def poisoned(t):
        t["net.0.weight"][0, 0] = float("nan")
        t["net.0.bias"][0] = float("inf")
        return t

    bad = rewrite_model(model_file, model_file.with_name("bad.safetensors"), tensors=poisoned)
    with pytest.raises(UserError) as e:
        load_model(bad)
    assert (
        str(e.value)
        == f"{bad}: tensor(s) net.0.bias, net.0.weight hold NaN or infinity; a diverged run or a damaged file, not a usable model"
    )
    assert safetensors.torch.load_file(str(bad))["net.0.weight"].isnan().any()


def test_a_record_binds_its_weights(run, tmp_path, mnist_dir, capsys):
    """Weights copied in from another run (same names, shapes, dtypes) are refused by every load from the folder."""
    import hashlib
    import shutil

    from mnist_lib.cli import main

    (run_dir, _, summary), _ = run
    assert summary["model_sha256"] == "sha256:" + hashlib.sha256((run_dir / "model.safetensors").read_bytes()).hexdigest()
    other, _, _ = train_and_record(
        TINY.replace(seed=1), RunOptions(data_dir=mnist_dir, max_train_samples=500, threads=2, device="cpu", progress=False),
        run_dir=tmp_path / "other",
    )  # fmt: skip
    mixed = tmp_path / "mixed"
    shutil.copytree(run_dir, mixed)
    shutil.copy(other / "model.safetensors", mixed / "model.safetensors")
    before = (mixed / "summary.json").read_bytes()
    message = f"run {mixed}: model.safetensors is not the file this run saved (its SHA-256 differs from summary.json's model_sha256)"
    with pytest.raises(UserError, match=re.escape(message)):
        load_model(mixed)
    assert main(["evaluate", str(mixed)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and message in err and (mixed / "summary.json").read_bytes() == before  # no test_acc of another run
    load_model(mixed / "model.safetensors")  # the file alone is just a file: taken as it is
    old = json.loads((run_dir / "summary.json").read_text())
    del old["model_sha256"]
    write_sealed(mixed / "summary.json", old)
    with pytest.raises(UserError, match="names no digest of its weights .* load the file .*model.safetensors itself"):
        load_model(mixed)
