"""Every end of a run leaves a record that tells the truth: signals, a full disk, read-only folders, two writers. Real processes.

- SIGTERM during training is Ctrl-C: the record says interrupted, keeps its best
  weights, the command says so in one line and exits 143; a second writer into
  the same folder meanwhile is refused (the folder's lock).
- Ctrl-C during `--seeds` stops every seed (one after another, or a population),
  every record says interrupted, and the command exits 130.
- A full disk while the weights are saved (RLIMIT_FSIZE, SIGXFSZ ignored, so the
  write fails with EFBIG as it would with ENOSPC) marks the run failed with the
  reason; during `evaluate` it leaves the summary as it was.
- A read-only run folder (permissions; as root, with the capabilities that bypass
  them dropped from the child) is one line for `evaluate` and `train`.

Every process starts at once (the module fixture); each test then drives and
checks its own, so the suite waits for torch's start-up once, not eight times.
"""

from __future__ import annotations

import ctypes
import json
import os
import resource
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import safetensors.torch
from conftest import skip_or_fail

from mnist_lib import Config, RunOptions, train_and_record

pytestmark = pytest.mark.slow  # real processes sent SIGTERM and Ctrl-C: make test-fast leaves it out

# long enough that nothing ends before its test signals it: 5,000 epochs of 8 batches
LONG = [
    "--epochs",
    "5000",
    "--hidden",
    "32",
    "--dropout",
    "0",
    "--max-train-samples",
    "1000",
    "--threads",
    "1",
    "--device",
    "cpu",
    "--quiet",
]
SHORT = ["--epochs", "1", "--hidden", "64", "--dropout", "0", "--max-train-samples", "500", "--threads", "1", "--device", "cpu", "--quiet"]


def cli(*argv, preexec=None) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "mnist_lib", *map(str, argv)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        preexec_fn=preexec,
    )  # fmt: skip


def finish(proc: subprocess.Popen, timeout: float = 180) -> tuple[int, str, str]:
    out, err = proc.communicate(timeout=timeout)
    return proc.returncode, out, err


def wait_for_epochs(metrics: Path, n: int, proc: subprocess.Popen, timeout: float = 180) -> None:
    """Poll until `metrics` holds n epoch rows (the process is then inside its training loop)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if metrics.is_file() and len(metrics.read_text().splitlines()) > n:
            return
        if proc.poll() is not None:
            pytest.fail(f"ended before epoch {n}: {proc.communicate()}")
        time.sleep(0.05)
    proc.kill()
    pytest.fail(f"no epoch {n} in {metrics} after {timeout} s")


def summary(folder: Path) -> dict:
    return json.loads((folder / "summary.json").read_text(), parse_constant=lambda c: pytest.fail(f"{c} in {folder}/summary.json"))


def one_line(err: str, phrase: str) -> None:
    assert err.count("\n") == 1 and err.startswith("mnist-lib: ") and "Traceback" not in err and phrase in err, err


def no_bigger_than(n_bytes: int):
    """preexec_fn: files this process writes stop at n_bytes, and a write past it fails (EFBIG) instead of killing it."""

    def limit():
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (n_bytes, n_bytes))

    return limit


def without_permission_bypass():
    """preexec_fn: as root, drop the capabilities that ignore file permissions (CAP_DAC_OVERRIDE, CAP_DAC_READ_SEARCH, CAP_FOWNER)."""
    if os.geteuid() != 0:
        return None
    libc = ctypes.CDLL("libc.so.6", use_errno=True)

    def drop():
        for cap in (1, 2, 3):
            if libc.prctl(24, cap, 0, 0, 0) != 0:  # PR_CAPBSET_DROP: gone from the bounding set, so from the exec'd process
                raise OSError(ctypes.get_errno(), "prctl(PR_CAPBSET_DROP)")

    return drop


@pytest.fixture(scope="module")
def started(tmp_path_factory, mnist_dir):
    """(folder, {case: process}): every case's process, started at once; the read-only ones already finished."""
    base = tmp_path_factory.mktemp("signals")
    trained, _, _ = train_and_record(
        Config(epochs=1, hidden=(16,), dropout=(0.0,)),
        RunOptions(max_train_samples=500, threads=2, device="cpu", progress=False),
        run_dir=base / "trained",
    )
    shutil.copytree(trained, base / "evaluate-full")
    shutil.copytree(trained, base / "ro" / "run")
    procs = {
        "writer": cli("train", "--run-dir", base / "run", *LONG),
        "seeds-off": cli("train", "--seeds", "0", "1", "2", "--population", "off", "--run-dir", base / "seeds-off", *LONG),
        "seeds-on": cli("train", "--seeds", "0", "1", "2", "--population", "on", "--run-dir", base / "seeds-on", *LONG),
        "full-disk": cli("train", "--run-dir", base / "full-disk", *SHORT, preexec=no_bigger_than(100_000)),  # the model is 200 kB
        "evaluate-full": cli("evaluate", base / "evaluate-full", preexec=no_bigger_than(20_000)),
    }
    ro = base / "ro"
    (ro / "run").chmod(0o555)
    ro.chmod(0o555)
    try:
        read_only = {
            "ro-evaluate": cli("evaluate", ro / "run", preexec=without_permission_bypass()),
            "ro-train": cli("train", "--run-dir", ro / "new", *SHORT, preexec=without_permission_bypass()),
            "ro-figures": cli(
                "train", "--run-dir", base / "ro-run", "--figures-dir", ro / "figs", *SHORT, preexec=without_permission_bypass()
            ),
        }
        results = {name: finish(p) for name, p in read_only.items()}
    finally:
        ro.chmod(0o755)
        (ro / "run").chmod(0o755)
    yield base, procs, results
    for p in procs.values():
        if p.poll() is None:
            p.kill()
            p.wait()


def test_sigterm_is_ctrl_c_and_a_second_writer_is_refused(started):
    base, procs, _ = started
    run, writer = base / "run", procs["writer"]
    wait_for_epochs(run / "metrics.csv", 2, writer)
    code, _, err = finish(cli("train", "--run-dir", run, "--overwrite", *LONG[:2], "--hidden", "64", *LONG[4:]))
    assert code == 2
    one_line(err, "is in use by another process")
    writer.send_signal(signal.SIGTERM)
    code, out, err = finish(writer)
    assert code == 143, err
    one_line(err, "terminated (SIGTERM)")
    s = summary(run)
    assert s["status"] == "interrupted" and s["weights_epoch"] == s["best_epoch"] >= 1 and "interrupted" in out
    assert json.loads((run / "config.json").read_text())["hidden"] == [32]  # one writer's record, not a mix
    assert list(safetensors.torch.load_file(str(run / "model.safetensors"))["net.0.weight"].shape) == [32, 784]
    kept = sorted(p.name for p in run.iterdir() if p.suffix != ".png")
    assert kept == ["config.json", "metrics.csv", "model.safetensors", "summary.json"]  # and no lock left


@pytest.mark.parametrize("population", ["off", "on"])
def test_ctrl_c_stops_every_seed_and_exits_130(started, population):
    base, procs, _ = started
    out_dir, proc = base / f"seeds-{population}", procs[f"seeds-{population}"]
    wait_for_epochs(out_dir / "seed_0" / "metrics.csv", 1, proc)
    proc.send_signal(signal.SIGINT)
    code, _, err = finish(proc)
    assert code == 130, err
    one_line(err, "interrupted")
    statuses = {p.name: summary(p)["status"] for p in out_dir.glob("seed_*")}
    # one after another, the seeds after the interrupted one never start; side by side, all three stop together
    assert statuses == ({"seed_0": "interrupted"} if population == "off" else dict.fromkeys(("seed_0", "seed_1", "seed_2"), "interrupted"))
    assert summary(out_dir)["status"] == "interrupted" and summary(out_dir)["n_seeds"] == 0


def test_a_full_disk_while_the_model_is_saved_marks_the_run_failed(started):
    base, procs, _ = started
    code, _, err = finish(procs["full-disk"])
    assert code == 2
    one_line(err, "model.safetensors: file too large")
    run = base / "full-disk"
    s = summary(run)
    assert s["status"] == "failed" and "model.safetensors" in s["error"] and "file too large" in s["error"]
    assert sorted(p.name for p in run.iterdir()) == ["config.json", "metrics.csv", "summary.json"]  # no model, no temporary


def test_a_full_disk_during_evaluate_leaves_the_summary_as_it_was(started):
    base, procs, _ = started
    code, _, err = finish(procs["evaluate-full"])
    assert code == 2
    one_line(err, "file too large")
    run = base / "evaluate-full"
    assert (run / "summary.json").read_bytes() == (base / "trained" / "summary.json").read_bytes() and not list(run.glob(".*"))


def test_read_only_folders_are_one_line_and_the_record_stays_true(started):
    base, _, results = started
    for name, (code, _, err) in results.items():
        if "prctl" in err:
            skip_or_fail(f"cannot drop root's permission bypass here: {err.strip()[-80:]}")
        assert code == 2, (name, err)
        one_line(err, "permission denied")
    assert "cannot lock the run directory" in results["ro-evaluate"][2]
    assert "cannot write to the figures folder" in results["ro-figures"][2]
    run = base / "ro" / "run"
    assert (run / "summary.json").read_bytes() == (base / "trained" / "summary.json").read_bytes()
    assert not (base / "ro" / "new").exists() and not (base / "ro-run").exists()


# --- every stop signal, and SIGTERM at random instants: children forked by tests/signal_harness.py ---------------------
TINY_RUN = ["--epochs", "3", "--hidden", "16", "--dropout", "0", "--max-train-samples", "1000", "--threads", "1", "--device", "cpu",
            "--quiet"]  # fmt: skip
RANDOM_KILLS = 30


def harness(plan: dict, folder: Path) -> list[dict]:
    """Run a plan of tests/signal_harness.py; its reports, one per case."""
    path = folder / "plan.json"
    path.write_text(json.dumps(plan))
    script = Path(__file__).with_name("signal_harness.py")
    done = subprocess.run([sys.executable, str(script), str(path)], capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    return [json.loads(line) for line in done.stdout.splitlines()]


@pytest.fixture(scope="module")
def every_stop_signal(tmp_path_factory, mnist_dir):
    from mnist_lib.core.stop import STOP_SIGNALS

    base = tmp_path_factory.mktemp("stop-signals")
    cases = [{"dir": str(base / f"sig{s}"), "signal": s, "after": "epoch"} for s in STOP_SIGNALS]
    return {r["signal"]: r for r in harness({"argv": LONG, "parallel": 3, "cases": cases}, base)}


def test_every_stop_signal_ends_a_run_truthfully(every_stop_signal):
    """SIGHUP (a dropped SSH session), SIGTERM, SIGQUIT, ..., the real-time signals: each is Ctrl-C, exit 128 + its number."""
    from mnist_lib.core.stop import STOP_SIGNALS, signal_name

    assert {signal.SIGHUP, signal.SIGTERM, signal.SIGQUIT, signal.SIGUSR1, signal.SIGXCPU} <= set(STOP_SIGNALS)
    assert not {signal.SIGINT, signal.SIGKILL, signal.SIGSEGV, signal.SIGPIPE, signal.SIGXFSZ} & set(STOP_SIGNALS)
    assert sorted(every_stop_signal) == sorted(STOP_SIGNALS)
    for sig, r in every_stop_signal.items():
        assert r["sent_at"] is not None, r
        assert (r["exit"], r["err"], r["status"]) == (128 + sig, f"mnist-lib: terminated ({signal_name(sig)})\n", "interrupted"), r
        saved = summary(Path(r["dir"]))["weights_epoch"]  # the best weights so far, if an epoch had ended before the signal
        assert ("model.safetensors" in r["files"]) == (saved is not None) and ".lock" not in r["files"], r  # the lock released


def test_sigterm_at_random_instants_always_leaves_a_true_status(tmp_path, mnist_dir):
    """From the fork (start-up: parsing, data, the claim, the first files) to after the end: never "running"."""
    import random

    [alone] = harness({"argv": TINY_RUN, "cases": [{"dir": str(tmp_path / "alone"), "signal": None, "after": None}]}, tmp_path)
    assert alone["exit"] == 0 and alone["status"] == "completed", alone
    rng = random.Random(29)
    instants = sorted(rng.uniform(0, 1.2 * alone["seconds"]) for _ in range(RANDOM_KILLS))
    cases = [{"dir": str(tmp_path / f"k{i}"), "signal": signal.SIGTERM, "after": t} for i, t in enumerate(instants)]
    reports = harness({"argv": TINY_RUN, "parallel": 2, "cases": cases}, tmp_path)
    assert len(reports) == RANDOM_KILLS
    for r in reports:
        if r["exit"] == -signal.SIGTERM:  # before main() took the signal: killed while parsing, nothing written yet
            assert r["files"] is None, r
        elif r["exit"] == 0:  # the run ended before the signal came
            assert r["status"] == "completed", r
        else:
            assert (r["exit"], r["err"]) == (143, "mnist-lib: terminated (SIGTERM)\n"), r
            # no folder yet, or one that says what happened: interrupted, or completed when the signal came after its last write
            assert r["files"] is None or r["status"] in ("interrupted", "completed"), r
            assert r["status"] != "completed" or {"model.safetensors", "loss_curves.png"} <= set(r["files"]), r
            assert r["files"] is None or ".lock" not in r["files"], r
    stopped = [r for r in reports if r["exit"] == 143]
    assert len(stopped) >= RANDOM_KILLS // 2, [r["sent_at"] for r in reports]  # most instants fell inside the run's life
