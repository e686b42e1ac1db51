"""Sweeps resume the right thing: the file that made the study, the whole grid, interrupted trials; and they stop when told.

Issue 19's sweep causes, each with a test that failed before: an edited file
resumed as the old one (or a KeyError for an added key), a grid killed while
queued resumed as part of itself, queueing quadratic in the grid's size, a
10**10-point grid ending in MemoryError, Ctrl-C failing the current trial and
then running all the others, trials on a CUDA device that is not there, a sweep
of failed trials exiting 0, a database that never answers, an in-memory SQLite
store and a malformed URL.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time

import pandas as pd
import pytest
import yaml

from mnist_lib.cli import main
from mnist_lib.core.errors import UserError
from mnist_lib.workflows import sweep
from mnist_lib.workflows.sweep_spec import load_spec

pytestmark = pytest.mark.slow  # sweeps killed and resumed in real processes: make test-fast leaves it out

TINY_BASE = {"epochs": 1, "hidden": [16], "dropout": [0.0], "batch_size": 64}


def write_sweep(path, **spec):
    path.write_text(yaml.safe_dump(spec))
    return path


@pytest.fixture
def env(tmp_path, monkeypatch, mnist_dir):
    monkeypatch.setenv("MNIST_RESULTS_DIR", str(tmp_path / "results"))  # spawned workers read it at import
    monkeypatch.setattr("mnist_lib.workflows.sweep_store.RESULTS_DIR", tmp_path / "results")  # this process read it already
    return tmp_path


def spec_at(env, name="s", grid=None, **extra):
    storage = f"sqlite:///{env / (name + '.db')}"
    return load_spec(
        write_sweep(env / f"{name}.yaml", name=name, base=TINY_BASE, grid=grid or {"lr": [1e-3, 2e-3]}, storage=storage, **extra)
    )


def test_a_study_refuses_another_sweep_file_and_accepts_the_same_one_with_other_workers(env):
    spec = spec_at(env)
    grid = sweep.open_study(spec, sweep.GRID)
    sweep.queue_grid(spec, grid, recover=True)
    sweep.check_same_sweep(spec_at(env, workers=7), grid)  # how many processes is not what the sweep is
    for edited, changed in (({"lr": [1e-3, 5e-3]}, "grid"), ({"lr": [1e-3, 2e-3], "seed": [0, 1]}, "grid")):  # a value, an added key
        with pytest.raises(UserError, match=rf"differs from the file that made the study .*\(changed: {changed}\); pass --overwrite"):
            sweep.check_same_sweep(spec_at(env, grid=edited), grid)
    with pytest.raises(UserError, match=r"\(changed: max_train_samples\)"):
        sweep.check_same_sweep(spec_at(env, trial={"max_train_samples": 100}), grid)


def test_a_queue_cut_short_is_completed_once_and_queueing_reads_the_study_once(env, monkeypatch):
    spec = spec_at(env, grid={"lr": [round(1e-4 * (i + 1), 6) for i in range(20)], "seed": list(range(10))})  # 200 points
    grid = sweep.open_study(spec, sweep.GRID)
    points = spec.grid_points()
    sweep.quiet_optuna().create_study(storage=sweep.storage(spec), study_name=f"{spec.name}:queue")  # the killed coordinator's claim
    grid.set_user_attr("fingerprint", spec.fingerprint())
    for point in points[:109]:  # ... and the 109 points it queued before the kill
        grid.enqueue_trial({k: json.dumps(v) for k, v in point.items()})
    reads = []
    real = type(grid).get_trials
    monkeypatch.setattr(type(grid), "get_trials", lambda self, *a, **k: reads.append(1) or real(self, *a, **k))
    with pytest.raises(UserError, match="not fully queued after 0.2 s: another coordinator is still queueing"):
        monkeypatch.setattr(sweep, "QUEUE_WAIT_S", 0.2)
        sweep.queue_grid(spec, grid, recover=False)  # shared storage, no --recover: it cannot know the other is dead
    reads.clear()
    sweep.queue_grid(spec, grid, recover=True)
    assert len(reads) <= 2  # existing points read once, not once per point: linear in the grid's size
    trials = real(grid, deepcopy=False)
    assert len(trials) == 200 and sweep.queued_points(grid) == {sweep._key(sweep._encoded(p)) for p in points}
    assert grid.user_attrs["queued"] == 200
    sweep.queue_grid(spec, grid, recover=True)  # marked complete: nothing more
    assert len(real(grid, deepcopy=False)) == 200


def test_a_grid_too_large_is_refused_before_it_is_built(tmp_path):
    path = write_sweep(tmp_path / "huge.yaml", grid={f"aug_{k}": [0.0, 1.0, 2.0, 3.0, 4.0] for k in ("rotate", "shear", "translate")}
                       | {"lr": [1e-3 * (i + 1) for i in range(100)], "seed": list(range(100)), "split_seed": list(range(100))})  # fmt: skip
    with pytest.raises(UserError, match=r"the grid has 125,000,000 points; at most 1,000,000"):
        load_spec(path)
    fields = [
        "lr",
        "weight_decay",
        "seed",
        "split_seed",
        "aug_rotate",
        "aug_scale",
        "aug_shear",
        "aug_translate",
        "label_smoothing",
        "max_norm",
    ]
    path = write_sweep(
        tmp_path / "huger.yaml", grid={f: [0.01 * (i + 1) if f != "seed" and "seed" not in f else i for i in range(10)] for f in fields}
    )
    with pytest.raises(UserError, match=r"the grid has 10,000,000,000 points"):  # 10**10: refused, not a MemoryError
        load_spec(path)


@pytest.mark.parametrize(
    "storage, message",
    [
        ("sqlite:///:memory:", "an in-memory SQLite database lives in one process"),
        ("sqlite://", "an in-memory SQLite database"),
        ("not a url", "not a database URL"),
        ("postgresql://u@[::1", "not a database URL"),
    ],
)
@pytest.mark.parametrize("overwrite", [False, True])
def test_storage_that_cannot_hold_a_study_is_one_line(tmp_path, capsys, storage, message, overwrite):
    path = write_sweep(tmp_path / "m.yaml", grid={"lr": [1e-3]}, storage=storage)
    assert main(["sweep", str(path), *(["--overwrite"] if overwrite else [])]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and message in err, err


def test_a_database_that_never_answers_is_given_up_on(env, monkeypatch):
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen()
    held = []
    threading.Thread(target=lambda: held.append(server.accept()), daemon=True).start()  # accepts, never speaks
    monkeypatch.setattr("mnist_lib.workflows.sweep_store.STORAGE_TIMEOUT_S", 2)
    spec = load_spec(
        write_sweep(env / "pg.yaml", grid={"lr": [1e-3]}, storage=f"postgresql+psycopg2://u@127.0.0.1:{server.getsockname()[1]}/db")
    )
    start = time.monotonic()
    with pytest.raises(UserError, match=r"^storage postgresql\+psycopg2://u@127\.0\.0\.1:\d+/db: .*timeout"):
        sweep.run_sweep(spec, workers=1)
    assert time.monotonic() - start < 30
    server.close()


def test_trials_on_a_missing_cuda_device_are_refused_before_any_trial(env, capsys):
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA: nothing to refuse")
    path = write_sweep(env / "c.yaml", name="c", base=TINY_BASE, grid={"lr": [1e-3]}, trial={"device": "cuda", "executor": "library"})
    assert main(["sweep", str(path)]) == 2
    err = capsys.readouterr().err
    assert err == "mnist-lib: error: sweep c: trial.device cuda: device cuda requested but torch sees no CUDA GPU\n"
    assert not (env / "results" / "sweeps" / "c").exists()


def test_a_sweep_whose_trials_all_fail_exits_2(env, capsys):
    path = write_sweep(env / "f.yaml", name="f", workers=1, base=TINY_BASE, grid={"lr": [1e30]},
                       trial={"executor": "library", "max_train_samples": 300, "device": "cpu"})  # fmt: skip
    assert main(["sweep", str(path)]) == 2
    err = capsys.readouterr().err
    assert (
        err.startswith("mnist-lib: error: sweep f: none of its 1 trials completed (first error: training diverged)")
        and err.count("\n") == 1
    )


def test_ctrl_c_stops_the_workers_requeues_the_trial_and_a_resume_runs_each_point_once(env):
    path = write_sweep(env / "i.yaml", name="i", workers=1, base={**TINY_BASE, "epochs": 25}, grid={"lr": [1e-3, 2e-3, 3e-3]},
                       trial={"executor": "library", "max_train_samples": 500, "device": "cpu"})  # fmt: skip
    runs = env / "results" / "sweeps" / "i" / "runs"
    proc = subprocess.Popen(
        [sys.executable, "-m", "mnist_lib", "sweep", str(path)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    deadline = time.monotonic() + 120
    while not any(len(m.read_text().splitlines()) > 2 for m in runs.glob("*/metrics.csv")) and time.monotonic() < deadline:
        time.sleep(0.05)
    os.kill(proc.pid, signal.SIGINT)  # the coordinator only, as `kill -INT` does: it must stop its workers itself
    start = time.monotonic()
    _, err = proc.communicate(timeout=90)
    assert proc.returncode == 130 and err.strip().endswith("mnist-lib: interrupted"), err
    assert time.monotonic() - start < 30
    assert [json.loads((p / "summary.json").read_text())["status"] for p in sorted(runs.iterdir())] == ["interrupted"]  # no other ran
    grid = sweep.open_study(load_spec(path), sweep.GRID)
    states = sorted(t.state.name for t in grid.get_trials(deepcopy=False))
    assert states == ["FAIL", "WAITING", "WAITING", "WAITING"]  # the interrupted trial failed and its point queued again
    resumed = subprocess.run([sys.executable, "-m", "mnist_lib", "sweep", str(path)], capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stderr
    t = pd.read_csv(env / "results" / "sweeps" / "i" / "trials.csv")
    assert sorted(t["lr"]) == [1e-3, 2e-3, 3e-3] and (t["status"] == "completed").all()  # each point once, the interrupted one too


def test_overwrite_deletes_only_what_the_sweep_wrote(env):
    spec = spec_at(env, name="o")
    out = env / "results" / "sweeps" / "o"
    (out / "figures").mkdir(parents=True)
    (out / "trials.csv").write_text("old")
    (out / "my_notes.md").write_text("mine")
    with pytest.raises(UserError, match=r"refusing to overwrite sweep folder .*o: it holds my_notes.md, which the sweep did not write"):
        sweep.run_sweep(spec, workers=1, overwrite=True)
    assert (out / "my_notes.md").read_text() == "mine" and (out / "trials.csv").read_text() == "old"


def test_a_trial_killed_before_its_parameters_were_set_is_requeued_at_its_own_point(env):
    """A population takes its batch first and sets each trial's parameters after: a kill in between leaves a RUNNING
    trial with no parameters. Its point is the one queued for it, not an empty one a sampler would fill at random."""
    spec = spec_at(env, grid={"lr": [1e-3, 2e-3, 3e-3]})
    study = sweep.open_study(spec, sweep.GRID)
    sweep.queue_grid(spec, study, recover=True)
    taken = study.ask()  # taken from the queue (RUNNING), killed before any suggest_*: no params
    assert taken.params == {}
    queued = study.get_trials(deepcopy=False)[taken.number].system_attrs["fixed_params"]
    assert sweep.requeue_killed(study) == 1
    retry = [t for t in study.get_trials(deepcopy=False) if t.user_attrs.get("retry_of") == taken.number]
    assert len(retry) == 1 and retry[0].system_attrs["fixed_params"] == queued != {}


def test_sqlite_workers_take_queued_trials_one_at_a_time(env):
    """SQLite ignores SELECT ... FOR UPDATE, so asks hold a file lock in the sweep folder: an ask waits while another holds it."""
    import fcntl

    spec = spec_at(env)
    study = sweep.open_study(spec, sweep.GRID)
    sweep.queue_grid(spec, study, recover=True)
    lock = env / "s.db.ask.lock"  # beside the study's database (spec_at's storage)
    assert lock.parent.is_dir()
    taken = []
    with open(lock, "a") as held:
        fcntl.flock(held, fcntl.LOCK_EX)  # another worker's ask, in the middle of taking a trial
        asker = threading.Thread(target=lambda: taken.append(study.ask()))
        asker.start()
        asker.join(0.5)
        assert asker.is_alive() and not taken  # waits for the lock
    asker.join(10)
    assert len(taken) == 1 and taken[0].params == {}  # then takes the next queued trial
    assert "study.db.ask.lock" in sweep.SWEEP_OUTPUTS  # the default database's lock: --overwrite may delete it, the sweep wrote it
    assert not (sweep.sweep_dir(spec) / "study.db.ask.lock").exists()  # nothing beside a database the sweep does not use
