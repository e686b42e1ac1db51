"""Sweeps: file validation, grid expansion, refinement ranges, parallel and resumable runs, validation-only selection."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
import yaml

from mnist_lib.core.datasets import DATASETS
from mnist_lib.core.errors import UserError
from mnist_lib.data.idx import TEST_LOCK_ENV, find_file, read_split
from mnist_lib.workflows.sweep_spec import decode_choice, expand, load_spec, refine_space

pytestmark = pytest.mark.slow  # sweeps: worker processes, studies, real trials: make test-fast leaves it out

FILES = DATASETS["mnist"].files  # MNIST's four IDX files

TINY_BASE = {"epochs": 1, "hidden": [16], "dropout": [0.0], "batch_size": 64}


def write_sweep(path, **spec):
    path.write_text(yaml.safe_dump(spec))
    return path


@pytest.fixture
def train_only_data(tmp_path_factory, mnist_dir):
    """A data folder holding only the training files: reading the test set there fails."""
    folder = tmp_path_factory.mktemp("train_only")
    for name in FILES:
        if name.startswith("train"):
            src = find_file(mnist_dir, name)
            os.symlink(src, folder / src.name)
    return folder


@pytest.fixture
def sweep_env(tmp_path, monkeypatch, train_only_data):
    monkeypatch.setenv("MNIST_RESULTS_DIR", str(tmp_path / "results"))
    monkeypatch.setenv("MNIST_DATA_DIR", str(train_only_data))
    monkeypatch.setenv("MNIST_MIRRORS", "http://127.0.0.1:9/")  # a test-set read could not even download
    return tmp_path


def run_cli(*args, timeout=300):
    return subprocess.run([sys.executable, "-m", "mnist_lib", *args], capture_output=True, text=True, timeout=timeout)


def trials(tmp_path, name):
    return pd.read_csv(tmp_path / "results" / "sweeps" / name / "trials.csv")


# --- files -----------------------------------------------------------------------------------


def test_grid_expansion(tmp_path):
    spec = load_spec(write_sweep(tmp_path / "g.yaml", base=TINY_BASE, grid={"lr": [1e-3, 2e-3, 4e-3], "seed": [0, 1]}))
    points = spec.grid_points()
    assert len(points) == 6
    assert {(p["lr"], p["seed"]) for p in points} == {(lr, s) for lr in (1e-3, 2e-3, 4e-3) for s in (0, 1)}
    assert spec.config_for(points[0]).hidden == (16,) and spec.name == "g"


def test_a_bundle_sets_its_field_and_companions_together(tmp_path):
    """A mapping grid value: an optimizer with its own lr and momentum, over base's lr; its fields become trials.csv columns."""
    bundles = [{"optimizer": "adam"}, {"optimizer": "sgd", "lr": 0.05, "momentum": 0.9, "nesterov": True}]
    spec = load_spec(
        write_sweep(tmp_path / "b.yaml", base={**TINY_BASE, "lr": 1e-3}, grid={"optimizer": bundles, "activation": ["relu", "gelu"]})
    )
    configs = [spec.config_for(p) for p in spec.grid_points()]
    assert sorted((c.optimizer, c.lr, c.momentum, c.nesterov, c.activation) for c in configs) == [
        ("adam", 1e-3, 0.0, False, "gelu"), ("adam", 1e-3, 0.0, False, "relu"),
        ("sgd", 0.05, 0.9, True, "gelu"), ("sgd", 0.05, 0.9, True, "relu"),
    ]  # fmt: skip
    assert expand({"optimizer": bundles[1], "norm": "batch"}) == {**bundles[1], "norm": "batch"}
    best = [p for p in spec.grid_points() if p["optimizer"] == bundles[1]]
    space = refine_space(spec, best)
    assert [decode_choice({"_choice": c}) for c in space["_choice"]["choices"]] == best


@pytest.mark.parametrize(
    "spec, message",
    [
        ({"grid": {"optimizer": [{"lr": 0.1}]}}, "a mapping value must set optimizer itself"),
        ({"grid": {"optimizer": [{"optimizer": "sgd", "speed": 1}]}}, "grid.optimizer: unknown field"),
        ({"grid": {"optimizer": [{"optimizer": "sgd", "lr": 0.1}], "lr": [0.1, 0.2]}}, "lr also searched by their own grid key"),
        ({"grid": {"optimizer": [{"optimizer": "adam", "momentum": 0.9}]}}, "momentum and nesterov are sgd's"),
        ({"grid": {"learning_rate": [1e-3]}}, "unknown field"),
        ({"grid": {}}, "'grid' must map"),
        ({"grid": {"lr": []}}, "non-empty list"),
        ({"grid": {"lr": [1e-3, -1.0]}}, "lr must be > 0"),
        ({"grid": {"lr": [1e-3, float("inf")]}}, "grid.lr holds inf, which is not a finite number"),
        ({"grid": {"hidden": [[8, 8]]}}, "one dropout per hidden layer"),
        ({"grid": {"lr": [1e-3]}, "refine": {"trials": 0}}, "refine.trials must be an integer >= 1"),
        ({"grid": {"lr": [1e-3]}, "workers": 0}, "workers must be an integer >= 1"),
        ({"grid": {"lr": [1e-3]}, "trial": {"executor": "slurm"}}, "executor must be one of"),
        ({"grid": {"lr": [1e-3]}, "trial": {"device": "tpu"}}, "trial.device must be one of auto, cpu, cuda"),
        ({"grid": {"lr": [1e-3]}, "trial": {"population": -2}}, "trial.population must be an integer >= 0"),
        ({"grid": {"lr": [1e-3]}, "trial": {"members": 8}}, "'trial' takes 'device', 'executor'"),
        ({"grid": {"lr": [1e-3]}, "colour": "blue"}, "unknown key"),
        ({"grid": {"lr": [1e-3]}, "base": {"lr": 1e-3}}, "both fixed and searched"),
    ],
)
def test_invalid_sweep_files_are_refused(tmp_path, spec, message):
    with pytest.raises(UserError, match=message):
        load_spec(write_sweep(tmp_path / "bad.yaml", **spec))


def test_invalid_sweep_file_is_exit_2_before_anything_runs(tmp_path):
    path = write_sweep(tmp_path / "bad.yaml", name="bad", grid={"lr": [0.0]})
    proc = run_cli("sweep", str(path), timeout=60)
    assert proc.returncode == 2 and "lr must be > 0" in proc.stderr and len(proc.stderr.strip().splitlines()) == 1


def test_refinement_searches_around_the_best_grid_points(tmp_path):
    spec = load_spec(
        write_sweep(
            tmp_path / "r.yaml",
            base={"epochs": 1, "dropout": [0.0]},
            grid={"lr": [1e-4, 1e-3, 1e-2, 1e-1], "weight_decay": [0.0, 1e-5, 1e-4], "hidden": [[16], [32]]},
            refine={"trials": 3, "top": 2},
        )
    )
    best = [{"lr": 1e-3, "weight_decay": 1e-5, "hidden": [32]}, {"lr": 1e-2, "weight_decay": 1e-5, "hidden": [16]}]
    space = refine_space(spec, best)
    assert space["lr"] == {"type": "float", "low": 1e-4, "high": 1e-1, "log": True}  # one grid step around 1e-3..1e-2
    assert space["weight_decay"]["low"] == 0.0 and space["weight_decay"]["high"] == 1e-4 and not space["weight_decay"]["log"]
    assert len(space["_choice"]["choices"]) == 2  # the architectures of the best points only
    edge = refine_space(spec, [{"lr": 1e-1, "weight_decay": 1e-4, "hidden": [16]}])
    assert edge["lr"]["high"] == pytest.approx(1.0) and edge["lr"]["low"] == 1e-2  # past the edge: one more step


def test_a_refinement_range_is_what_the_field_accepts(tmp_path):
    """Past the grid's edge, one more step can leave a field's range (momentum >= 1) or a log scale's (an integer below 1)."""
    import optuna

    spec = load_spec(write_sweep(tmp_path / "m.yaml", base={"optimizer": "sgd", "dropout": [0.0], "hidden": [8]},
                                 grid={"momentum": [0.5, 0.9], "epochs": [1, 3], "lr": [1e-3, 1e-1]}))  # fmt: skip
    space = refine_space(spec, [{"momentum": 0.9, "epochs": 1, "lr": 1e-3}])
    assert 0.9 < space["momentum"]["high"] < 1 and space["momentum"]["log"]  # 0.9 ** 2 / 0.5 = 1.62 clipped below 1
    assert spec.config_for({"momentum": space["momentum"]["high"], "epochs": 1, "lr": 1e-3}).momentum < 1
    assert space["epochs"]["low"] == 1 and space["epochs"]["log"]  # 1 ** 2 / 3 rounds to 0: a log scale starts at 1
    assert space["lr"]["low"] == pytest.approx(1e-5)
    trial = optuna.create_study().ask()
    for name, dim in space.items():  # every range is one Optuna takes
        suggest = trial.suggest_int if dim["type"] == "int" else trial.suggest_float
        suggest(name, dim["low"], dim["high"], log=dim["log"])


# --- running ---------------------------------------------------------------------------------


def test_workers_that_die_at_start_are_reported_with_their_status_and_stderr(sweep_env, monkeypatch):
    """A sitecustomize that ends every spawned worker (never the coordinator) with status 3 before it does anything."""
    site = sweep_env / "site"
    site.mkdir()
    (site / "sitecustomize.py").write_text(
        "import sys\nif '--multiprocessing-fork' in sys.argv:\n    sys.stderr.write('worker start-up broke\\n')\n    sys.exit(3)\n"
    )
    monkeypatch.setenv("PYTHONPATH", f"{site}{os.pathsep}{os.environ.get('PYTHONPATH', '')}")
    path = write_sweep(sweep_env / "dead.yaml", name="dead", workers=2, base=TINY_BASE, grid={"lr": [1e-3]},
                       trial={"executor": "library", "max_train_samples": 600})  # fmt: skip
    proc = run_cli("sweep", str(path), timeout=120)
    assert proc.returncode == 2 and proc.stderr.count("mnist-lib: error:") == 1, proc.stderr
    assert "sweep dead: worker 0 of the grid stage exited with status 1 (2 of 2 workers did)" in proc.stderr
    assert proc.stderr.rstrip().endswith("| sys.exit(3) | SystemExit: 3")  # its stderr's last lines, from its log
    assert (sweep_env / "results" / "sweeps" / "dead" / "logs").is_dir() and "Traceback" not in proc.stderr.splitlines()[-1]


def test_parallel_workers_give_the_same_trials_as_one_and_failures_are_recorded(sweep_env):
    grid = {"lr": [1e-3, 3e-3, 1e30], "seed": [0, 1]}  # lr 1e30 diverges: recorded, not fatal
    common = {"base": TINY_BASE, "grid": grid, "trial": {"executor": "library", "max_train_samples": 600}}
    one = write_sweep(sweep_env / "one.yaml", name="one", workers=1, **common)
    two = write_sweep(sweep_env / "two.yaml", name="two", workers=2, **common)
    for path in (one, two):
        proc = run_cli("sweep", str(path))
        assert proc.returncode == 0, proc.stderr
    a, b = trials(sweep_env, "one"), trials(sweep_env, "two")
    assert len(a) == len(b) == 6
    key = ["lr", "seed"]
    merged = a.sort_values(key).reset_index(drop=True).compare(b.sort_values(key).reset_index(drop=True)[a.columns])
    assert set(merged.columns.get_level_values(0)) <= {"trial", "seconds", "train_seconds"}  # same points, same accuracies
    failed = a[a["lr"] == 1e30]
    assert (failed["status"] == "failed").all() and failed["error"].str.contains("diverged").all()
    assert (a[a["lr"] < 1]["status"] == "completed").all()  # every other trial ran: the test set was never needed
    best = (sweep_env / "results" / "sweeps" / "one" / "best_config.json").read_text()
    assert '"lr": 0.003' in best or '"lr": 0.001' in best


def test_resume_after_sigkill_runs_each_point_once(sweep_env):
    path = write_sweep(
        sweep_env / "k.yaml",
        name="k",
        workers=1,
        base={**TINY_BASE, "epochs": 3},
        grid={"lr": [1e-3, 2e-3, 3e-3, 4e-3, 5e-3]},
        refine={"trials": 2, "top": 2},
        trial={"executor": "library", "max_train_samples": 3000},
    )
    db = sweep_env / "results" / "sweeps" / "k" / "study.db"
    proc = subprocess.Popen([sys.executable, "-m", "mnist_lib", "sweep", str(path)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    done = 0
    while time.time() < deadline and done < 2:
        time.sleep(0.2)
        if db.exists():
            with sqlite3.connect(db) as con, contextlib.suppress(sqlite3.OperationalError):  # the file exists before its tables
                done = con.execute("select count(*) from trials where state = 'COMPLETE'").fetchone()[0]
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert 2 <= done < 5, "the kill should land in the middle of the grid"
    resumed = run_cli("sweep", str(path))
    assert resumed.returncode == 0, resumed.stderr
    t = trials(sweep_env, "k")
    grid_rows = t[t["stage"] == "grid"]
    assert sorted(grid_rows["lr"]) == [1e-3, 2e-3, 3e-3, 4e-3, 5e-3]  # every point once: none lost, none duplicated
    assert (t["status"] == "completed").all() and len(t[t["stage"] == "refine"]) == 2


def test_test_set_is_locked_in_sweep_workers(mnist_dir, monkeypatch):
    monkeypatch.setenv(TEST_LOCK_ENV, "1")
    with pytest.raises(UserError, match="locked"):
        read_split("test", mnist_dir)
    assert len(read_split("train", mnist_dir)[1]) == 60000


@pytest.mark.parametrize("path", sorted((Path(__file__).parent.parent / "sweeps").glob("*.yaml")), ids=lambda p: p.name)
def test_committed_sweep_files_are_valid(path):
    spec = load_spec(path)
    assert spec.name == path.stem and spec.grid_points()


def test_refinement_trials_beyond_the_budget_give_way():
    import optuna

    from mnist_lib.workflows.sweep import over_budget

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(direction="maximize")
    first = study.ask()
    study.tell(first, 0.9)
    killed = study.ask()  # a killed trial does not count against the budget
    study._storage.set_trial_user_attr(killed._trial_id, "killed", True)
    study.tell(killed, state=optuna.trial.TrialState.FAIL)
    pruned = study.ask()
    study.tell(pruned, state=optuna.trial.TrialState.PRUNED)
    racing = [study.ask(), study.ask()]  # two machines each saw one free slot of a budget of 2
    assert [over_budget(t, 2) for t in racing] == [False, True]
    assert [over_budget(t, 3) for t in racing] == [False, False]
    assert not over_budget(first, 1)


# --- the default executor, the best pick, the lock, --overwrite and --recover ------------------


def test_papermill_sweep_picks_the_best_trial_by_validation(sweep_env):
    """Two trials through the default executor (02_train.ipynb under papermill): lr 1e-7 barely moves, lr 3e-3 learns."""
    path = write_sweep(sweep_env / "pm.yaml", name="pm", workers=2, base=TINY_BASE, grid={"lr": [1e-7, 3e-3]},
                       trial={"max_train_samples": 2000})  # fmt: skip
    proc = run_cli("sweep", str(path))
    assert proc.returncode == 0, proc.stderr
    out = sweep_env / "results" / "sweeps" / "pm"
    t = trials(sweep_env, "pm")
    assert len(t) == 2 and (t["status"] == "completed").all()
    assert {p.name for p in (out / "notebooks").iterdir()} == {"grid-0000.ipynb", "grid-0001.ipynb"}  # each trial's executed notebook
    best_lr = t.loc[t["best_val_acc"].idxmax(), "lr"]  # independent of sweep_report
    assert best_lr == 3e-3 and t["best_val_acc"].max() > t["best_val_acc"].min() + 0.3
    assert '"lr": 0.003' in (out / "best_config.json").read_text()
    import json

    assert json.loads((out / "best.json").read_text())["best_val_acc"] == t["best_val_acc"].max()


def test_a_second_sweep_on_the_same_folder_is_refused_then_overwrite_starts_afresh(sweep_env, monkeypatch):
    import fcntl

    from mnist_lib.workflows.sweep import run_sweep

    monkeypatch.setattr(
        "mnist_lib.workflows.sweep_store.RESULTS_DIR", sweep_env / "results"
    )  # paths are read at import; this process's too

    common = {"name": "ow", "workers": 1, "base": TINY_BASE, "trial": {"executor": "library", "max_train_samples": 500}}
    first = write_sweep(sweep_env / "ow.yaml", grid={"lr": [1e-3]}, **common)
    assert run_cli("sweep", str(first)).returncode == 0
    out = sweep_env / "results" / "sweeps" / "ow"
    with open(out / ".lock", "w") as held:  # a sweep that is running holds this lock
        fcntl.flock(held, fcntl.LOCK_EX | fcntl.LOCK_NB)
        with pytest.raises(UserError, match=f"another sweep is running on {out}"):
            run_sweep(load_spec(first))
        proc = run_cli("sweep", str(first), "--overwrite", timeout=60)
        assert proc.returncode == 2 and "another sweep is running" in proc.stderr  # --overwrite does not break a held lock
    second = write_sweep(sweep_env / "ow.yaml", grid={"lr": [2e-3, 4e-3]}, **common)
    resumed = run_cli("sweep", str(second))  # an edited file is not resumed as the old one: refused, the old trials stay
    assert resumed.returncode == 2 and resumed.stderr.count("\n") == 1, resumed.stderr
    assert "differs from the file that made the study" in resumed.stderr and "(changed: grid)" in resumed.stderr
    assert "--overwrite" in resumed.stderr and sorted(trials(sweep_env, "ow")["lr"]) == [1e-3]
    proc = run_cli("sweep", str(second), "--overwrite")
    assert proc.returncode == 0, proc.stderr
    assert sorted(trials(sweep_env, "ow")["lr"]) == [2e-3, 4e-3]  # the earlier trial is gone


def test_recover_requeues_a_trial_left_running_on_shared_storage(sweep_env):
    """With a database URL the coordinator cannot tell a dead worker from a live one: only --recover re-queues."""
    from mnist_lib.workflows.sweep import GRID, _suggest, open_study

    db = sweep_env / "shared.db"
    path = write_sweep(sweep_env / "rc.yaml", name="rc", workers=1, base=TINY_BASE, grid={"lr": [1e-3, 2e-3, 3e-3]},
                       trial={"executor": "library", "max_train_samples": 500}, storage=f"sqlite:///{db}")  # fmt: skip
    spec = load_spec(path)
    study = open_study(spec, GRID)
    for point in spec.grid_points():
        study.enqueue_trial({k: json.dumps(v) for k, v in point.items()})
    killed = study.ask()  # a worker on another machine claimed a point, then died
    _suggest(killed, spec, GRID, {})
    proc = run_cli("sweep", str(path))
    assert proc.returncode == 0, proc.stderr
    t = trials(sweep_env, "rc")
    assert sorted(t["status"]) == ["completed", "completed", "running"]  # left alone: it might still be alive
    proc = run_cli("sweep", str(path), "--recover")
    assert proc.returncode == 0, proc.stderr
    t = trials(sweep_env, "rc")
    assert (t["status"] == "completed").all() and sorted(t["lr"]) == [1e-3, 2e-3, 3e-3]  # each point once, none lost


# --- populations: trials side by side --------------------------------------------------------


def test_a_population_sweep_groups_trials_and_finds_what_one_at_a_time_finds(sweep_env):
    """Population 3 on the CPU: grid points queued by norm and trained as two populations, a diverging member failed alone,
    TPE asked in batches; without dropout every trial's accuracy equals the one-at-a-time sweep's."""
    grid = {"lr": [1e-3, 3e-3, 1e30], "norm": ["none", "batch"]}  # lr 1e30 diverges inside its population
    common = {"base": TINY_BASE, "grid": grid, "workers": 1}
    side = write_sweep(sweep_env / "side.yaml", name="side", refine={"trials": 3, "top": 2},
                       trial={"executor": "library", "max_train_samples": 600, "device": "cpu", "population": 3}, **common)  # fmt: skip
    alone = write_sweep(
        sweep_env / "alone.yaml", name="alone", trial={"executor": "library", "max_train_samples": 600, "device": "cpu"}, **common
    )
    for path in (side, alone):
        proc = run_cli("sweep", str(path))
        assert proc.returncode == 0, proc.stderr
    a, b = trials(sweep_env, "side"), trials(sweep_env, "alone")
    grid_a = a[a["stage"] == "grid"].sort_values(["lr", "norm"]).reset_index(drop=True)
    grid_b = b.sort_values(["lr", "norm"]).reset_index(drop=True)
    assert len(grid_a) == len(grid_b) == 6
    assert list(grid_a["status"]) == list(grid_b["status"])
    assert (grid_a[grid_a["lr"] == 1e30]["status"] == "failed").all()
    done = grid_a["status"] == "completed"
    # to a few validation images of 6,000: the stacked BatchNorm sums its statistics in another order than torch's
    assert (grid_a[done]["best_val_acc"] - grid_b[done]["best_val_acc"]).abs().max() <= 5e-4
    assert (grid_a["population_size"] == 3).all()  # each grid trial trained beside the two others of its norm
    refine = a[a["stage"] == "refine"]  # TPE asked for all three at once and they trained in populations of their norm
    assert len(refine) == 3 and refine["population_size"].notna().all()
    assert sorted(refine.groupby("norm")["population_size"].first()) == sorted(refine.groupby("norm").size())
    runs = sweep_env / "results" / "sweeps" / "side" / "runs"
    assert len(list(runs.glob("grid-*/summary.json"))) == 6


def test_a_killed_population_is_requeued_whole_and_no_point_runs_twice(sweep_env):
    path = write_sweep(
        sweep_env / "kp.yaml",
        name="kp",
        workers=1,
        base={**TINY_BASE, "epochs": 10},  # long enough for the poll below to see the second population running
        grid={"lr": [1e-3, 2e-3, 3e-3, 4e-3, 5e-3, 6e-3]},
        trial={"executor": "library", "max_train_samples": 3000, "device": "cpu", "population": 3},
    )
    db = sweep_env / "results" / "sweeps" / "kp" / "study.db"
    proc = subprocess.Popen([sys.executable, "-m", "mnist_lib", "sweep", str(path)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    done = running = 0
    while time.time() < deadline and not (done == 3 and running == 3):
        time.sleep(0.1)
        if db.exists():
            with sqlite3.connect(db) as con, contextlib.suppress(sqlite3.OperationalError):
                done = con.execute("select count(*) from trials where state = 'COMPLETE'").fetchone()[0]
                running = con.execute("select count(*) from trials where state = 'RUNNING'").fetchone()[0]
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert done == 3 and running == 3, "the kill should land while the second population trains"
    resumed = run_cli("sweep", str(path))
    assert resumed.returncode == 0, resumed.stderr
    t = trials(sweep_env, "kp")
    assert sorted(t["lr"]) == [1e-3, 2e-3, 3e-3, 4e-3, 5e-3, 6e-3]  # each point once: the killed three re-queued, none lost
    assert (t["status"] == "completed").all()


def test_a_batch_claims_waiting_grid_points_and_fails_a_point_that_makes_no_config(sweep_env, monkeypatch):
    from optuna.trial import TrialState

    from mnist_lib.workflows import sweep
    from mnist_lib.workflows.sweep_spec import SweepSpec

    storage = f"sqlite:///{sweep_env / 'b.db'}"  # in-process: nothing under the repository's results/
    spec = load_spec(write_sweep(sweep_env / "b.yaml", name="b", base=TINY_BASE, grid={"lr": [1e-3, 2e-3, 3e-3]}, storage=storage))
    study = sweep.open_study(spec, sweep.GRID)
    for point in spec.grid_points():
        study.enqueue_trial({k: json.dumps(v) for k, v in point.items()})
    real = SweepSpec.config_for

    def config_for(self, point):
        if point["lr"] == 2e-3:
            raise UserError("lr 2e-3 is cursed")
        return real(self, point)

    monkeypatch.setattr(SweepSpec, "config_for", config_for)
    batch = sweep._ask_batch(spec, study, sweep.GRID, {}, 8)  # asks for 8, three are waiting
    assert sorted(config.lr for _, config in batch) == [1e-3, 3e-3]
    failed = study.get_trials(deepcopy=False, states=(TrialState.FAIL,))
    assert len(failed) == 1 and "cursed" in failed[0].user_attrs["error"]
    assert not study.get_trials(deepcopy=False, states=(TrialState.WAITING,))
    assert sweep._ask_batch(spec, study, sweep.GRID, {}, 8) == []  # nothing left: no stray trial created
    assert len(study.get_trials(deepcopy=False)) == 3


def test_a_results_folder_named_like_a_url_keeps_the_study_and_its_lock_inside_it(tmp_path, monkeypatch):
    from sqlalchemy.engine import make_url

    from mnist_lib.workflows import sweep_store

    odd = tmp_path / "a?b#c%20d@e"
    monkeypatch.setattr(sweep_store, "RESULTS_DIR", odd)
    spec = load_spec(write_sweep(tmp_path / "u.yaml", name="u", base=TINY_BASE, grid={"lr": [1e-3]}))
    url = sweep_store.storage_url(spec)
    assert make_url(url).database == str(odd / "sweeps" / "u" / "study.db")
    sweep_store.sweep_dir(spec).mkdir(parents=True)
    study = sweep_store.open_study(spec, sweep_store.GRID)
    study.ask()  # takes the ask lock beside the database
    assert sorted(p.name for p in sweep_store.sweep_dir(spec).iterdir()) == ["study.db", "study.db.ask.lock"]
    assert sorted(p.name for p in tmp_path.iterdir()) == [odd.name, "u.yaml"]  # nothing at "a" (where '?' cut the path)
