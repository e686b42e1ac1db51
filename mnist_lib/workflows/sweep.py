"""Run a sweep: the grid, then refinement, in parallel worker processes, resumable, on validation only.

    python -m mnist_lib sweep sweeps/smoke.yaml            # run, or resume after a kill
    run_sweep(load_spec("sweeps/smoke.yaml"))              # the same from Python (notebook 03)

Trials live in an Optuna study (SQLite in results/sweeps/<name>/study.db by
default, or the database URL in `storage:`). Each worker process runs one trial
at a time with `threads` torch threads, as a papermill execution of
02_train.ipynb (the default; the executed notebook is the trial's record) or as
a library call. The test set is locked in every worker: reading it raises.

Resuming is safe: the study remembers the sweep file that made it (a different
one is refused), the grid is queued completely before the first trial and the
queueing resumes where a kill cut it, and a trial stopped by Ctrl-C or SIGTERM
is queued again, as one killed outright is. Ctrl-C stops every worker (within a
step of training) and the command exits 130.
"""

from __future__ import annotations

import contextlib
import ctypes
import dataclasses
import fcntl
import json
import multiprocessing as mp
import os
import shutil
import signal
import time
from pathlib import Path

from tqdm.auto import tqdm

from ..core.config import RunOptions
from ..core.errors import UserError
from ..core.paths import NOTEBOOKS_DIR
from ..core.stop import stop_signals
from ..data.idx import TEST_LOCK_ENV
from ..records.runs import read_summary
from .sweep_report import write_report
from .sweep_spec import SweepSpec, decode_choice, refine_space
from .sweep_store import GRID, REFINE, counts, open_study, quiet_optuna, storage, storage_errors, sweep_dir

STOP_WAIT_S = 60  # after Ctrl-C, how long workers get to close their trials' records before they are killed
QUEUE_WAIT_S = 60  # how long a coordinator waits for another one, on shared storage, to finish queueing the grid

__all__ = ["GRID", "REFINE", "open_study", "over_budget", "run_sweep", "sweep_dir"]


def _suggest(trial, spec: SweepSpec, stage: str, space: dict) -> dict:
    if stage == GRID:
        return decode_choice({name: trial.suggest_categorical(name, [json.dumps(v) for v in values]) for name, values in spec.grid.items()})
    params = {}
    for name, dim in space.items():
        if dim["type"] == "categorical":
            params[name] = trial.suggest_categorical(name, dim["choices"])
        elif dim["type"] == "int":
            params[name] = trial.suggest_int(name, dim["low"], dim["high"], log=dim["log"])
        else:
            params[name] = trial.suggest_float(name, dim["low"], dim["high"], log=dim["log"])
    return decode_choice(params)


def trial_device(spec: SweepSpec) -> str:
    """The device trials train on: trial.device, with auto meaning CUDA when torch sees one."""
    if spec.device != "auto":
        return spec.device
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def trial_options(spec: SweepSpec) -> RunOptions:
    """How every trial of the sweep trains: its training subset, threads and device, no progress bars."""
    return RunOptions(max_train_samples=spec.max_train_samples or None, threads=spec.threads, device=trial_device(spec), progress=False)


def run_trial(spec: SweepSpec, config, name: str) -> dict:
    """Train one trial config; returns the run's summary.json. Never touches the test set."""
    out = sweep_dir(spec)
    device = trial_device(spec)
    if spec.executor == "library":
        from .experiment import train_and_record

        _, _, summary = train_and_record(config, trial_options(spec), run_dir=out / "runs" / name, overwrite=True)
        return summary
    import papermill

    from .batch import KERNEL, use_project_kernel

    use_project_kernel()
    os.environ["MNIST_RESULTS_DIR"] = str(out)  # the kernel writes its run record to <sweep>/runs/<name>/
    (out / "notebooks").mkdir(parents=True, exist_ok=True)
    params = {**config.to_dict(), "run_name": name, "max_train_samples": spec.max_train_samples, "threads": spec.threads}
    papermill.execute_notebook(
        str(NOTEBOOKS_DIR / "02_train.ipynb"), str(out / "notebooks" / f"{name}.ipynb"),
        parameters={**params, "device": device, "overwrite": True}, kernel_name=KERNEL, cwd=str(NOTEBOOKS_DIR), progress_bar=False,
    )  # fmt: skip
    return read_summary(out / "runs" / name)


def _objective(spec: SweepSpec, stage: str, space: dict):
    optuna = quiet_optuna()

    def objective(trial) -> float:
        start = time.perf_counter()
        lost = _lost_race(trial, spec, stage)
        if lost:
            raise optuna.TrialPruned(lost)
        try:
            point = _suggest(trial, spec, stage, space)
            trial.set_user_attr("point", point)
            summary = run_trial(spec, spec.config_for(point), f"{stage}-{trial.number:04d}")
        except KeyboardInterrupt:
            _requeue_interrupted(trial.study, trial)
            raise
        except Exception as e:
            _record_failure(trial, e, time.perf_counter() - start)
            raise
        if summary.get("status") == "interrupted":  # the library executor's train() caught the Ctrl-C itself
            _requeue_interrupted(trial.study, trial)
            raise KeyboardInterrupt
        return _outcome(trial, summary, time.perf_counter() - start)

    return objective


def _lost_race(trial, spec: SweepSpec, stage: str) -> str:
    """Why a just-created trial must give way ("" if it need not): another worker, here or elsewhere, took the last slot."""
    if stage == GRID and "fixed_params" not in trial.study._storage.get_trial_system_attrs(trial._trial_id):
        return "no grid point left to claim"
    if stage == REFINE and over_budget(trial, spec.refine_trials):
        return "refinement budget already claimed"
    return ""


def _record_failure(trial, error: Exception, seconds: float | None = None) -> None:
    """A trial that failed before training finished: status and error (and time spent) in its user attributes."""
    trial.set_user_attr("status", "failed")
    trial.set_user_attr("error", f"{type(error).__name__}: {error}"[:2000])
    if seconds is not None:
        trial.set_user_attr("seconds", seconds)


def _requeue_interrupted(study, trial) -> None:
    """A trial stopped by Ctrl-C or SIGTERM: it does not count (as a killed one) and its point is queued again."""
    trial.set_user_attr("status", "interrupted")
    trial.set_user_attr("killed", True)
    study.enqueue_trial(trial.params, user_attrs={"retry_of": trial.number}, skip_if_exists=False)


def _outcome(trial, summary: dict, seconds: float) -> float:
    """Copy a finished trial's summary into its user attributes; its value, or RuntimeError if it did not complete."""
    for key in ("status", "final_val_acc", "epochs_run", "best_epoch", "train_seconds", "split_hash", "population_size"):
        trial.set_user_attr(key, summary.get(key))
    trial.set_user_attr("seconds", seconds)
    value = summary.get("best_val_acc")
    if summary.get("status") != "completed" or value is None or value != value:
        trial.set_user_attr("error", f"training {summary.get('status')}")
        raise RuntimeError(f"training {summary.get('status')}")  # recorded as failed, the sweep goes on
    return float(value)


def _ask_batch(spec: SweepSpec, study, stage: str, space: dict, size: int) -> list:
    """Claim up to `size` trials of `stage` at once (Optuna's ask): [(trial, config)], the points set as user attributes.

    Grid: as many queued points as are waiting. Refinement: TPE's suggestions, within
    the budget (a trial created past it, by a worker elsewhere, gives way as in _objective).
    """
    from optuna.trial import TrialState

    if stage == GRID:
        n = min(size, len(study.get_trials(deepcopy=False, states=(TrialState.WAITING,))))
    else:
        running = study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))
        n = min(size, spec.refine_trials - len(_finished(study)) - len(running))
    batch = []
    for _ in range(n):
        trial = study.ask()
        if _lost_race(trial, spec, stage):
            study.tell(trial, state=TrialState.PRUNED)
            break
        try:
            point = _suggest(trial, spec, stage, space)
            trial.set_user_attr("point", point)
            batch.append((trial, spec.config_for(point)))
        except Exception as e:  # a point that makes no valid Config: failed and recorded, as _objective does
            _record_failure(trial, e)
            study.tell(trial, state=TrialState.FAIL)
    return batch


def run_population_batch(spec: SweepSpec, study, stage: str, batch: list) -> None:
    """Train a batch of claimed trials as populations (one per group of compatible configs) and tell Optuna each result.

    A kill during training leaves every member RUNNING, so a resumed sweep re-queues
    each of them (requeue_killed): none is lost, none runs twice.
    """
    from optuna.trial import TrialState

    from ..training.train import group_configs
    from .experiment import train_population_and_record

    out = sweep_dir(spec)
    configs = [config for _, config in batch]
    told: set[int] = set()
    try:
        for group in group_configs(configs):
            trials = [batch[i][0] for i in group]
            start = time.perf_counter()
            try:
                runs = train_population_and_record(
                    [configs[i] for i in group],
                    [out / "runs" / f"{stage}-{t.number:04d}" for t in trials],
                    trial_options(spec),
                    overwrite=True,
                )
            except Exception as e:
                for t in trials:
                    _record_failure(t, e, time.perf_counter() - start)
                    study.tell(t, state=TrialState.FAIL)
                    told.add(t.number)
                continue
            if any(summary["status"] == "interrupted" for _, _, summary in runs):
                raise KeyboardInterrupt  # the population caught the Ctrl-C itself
            for t, (_, _, summary) in zip(trials, runs, strict=True):
                try:
                    study.tell(t, _outcome(t, summary, time.perf_counter() - start))
                except RuntimeError:
                    study.tell(t, state=TrialState.FAIL)
                told.add(t.number)
    except KeyboardInterrupt:  # every trial of the batch not yet told goes back in the queue
        for t, _ in batch:
            if t.number not in told:
                _requeue_interrupted(study, t)
                study.tell(t, state=TrialState.FAIL)
        raise


def _die_with_parent() -> None:
    """Linux: end this worker when the coordinator dies (SIGKILL included), so no orphan keeps training."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6").prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG


def _finished(study) -> list:
    """Trials that count: complete or failed, not the ones killed and re-queued."""
    from optuna.trial import TrialState

    return [t for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.FAIL)) if counts(t)]


def over_budget(trial, budget: int) -> bool:
    """Whether `budget` trials that count (not pruned, not killed) were created before `trial`.

    Workers on several machines can each see one free slot and start a trial at
    once; trial numbers are unique in the storage, so the later ones give way.
    """
    earlier = [t for t in trial.study.get_trials(deepcopy=False) if t.number < trial.number and counts(t)]
    return len(earlier) >= budget


def _has_work(spec: SweepSpec, study, stage: str) -> bool:
    from optuna.trial import TrialState

    waiting = study.get_trials(deepcopy=False, states=(TrialState.WAITING,))
    if stage == GRID or waiting:
        return bool(waiting)
    running = study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))
    return len(_finished(study)) + len(running) < spec.refine_trials


def worker(spec: SweepSpec, stage: str, index: int = 0) -> None:
    """One worker process: claim and run trials of `stage`, one at a time, until none is left."""
    _die_with_parent()
    # its stderr (warnings, tracebacks), and its kernels', is its log file (worker_log), set by _run_stage when it started it
    os.environ[TEST_LOCK_ENV] = "1"  # selection is on validation only; kernels inherit the lock
    import torch

    torch.set_num_threads(spec.threads)
    size = spec.population_size(trial_device(spec))
    study = open_study(spec, stage, index)
    space = study.user_attrs.get("space", {})
    # Ctrl-C, the coordinator's SIGINT, or a stop signal (SIGHUP: a dropped SSH session reaches the workers too):
    # the trial was queued again; claim no other
    with contextlib.suppress(KeyboardInterrupt), stop_signals():
        if size > 1:  # trials side by side: claim a batch, train it as populations, report each
            while _has_work(spec, study, stage):
                batch = _ask_batch(spec, study, stage, space, size)
                if not batch:
                    break
                run_population_batch(spec, study, stage, batch)
            return
        objective = _objective(spec, stage, space)
        while _has_work(spec, study, stage):
            study.optimize(objective, n_trials=1, catch=(Exception,))


def requeue_killed(study) -> int:
    """Mark trials left RUNNING by a killed sweep as failed ('killed') and queue their points again."""
    from optuna.trial import TrialState

    n = 0
    for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        study._storage.set_trial_user_attr(t._trial_id, "killed", True)
        study._storage.set_trial_state_values(t._trial_id, TrialState.FAIL)
        # a grid trial's point is what was queued for it: a kill can land after the trial was taken and before its
        # parameters were suggested (a population takes its batch first), when t.params is still empty
        point = {**t.system_attrs.get("fixed_params", {}), **t.params}
        study.enqueue_trial(point, user_attrs={"retry_of": t.number}, skip_if_exists=False)
        n += 1
    return n


def _run_stage(spec: SweepSpec, stage: str, workers: int) -> None:
    ctx = mp.get_context("spawn")  # fresh interpreters: no torch thread pools or locks inherited
    spec = dataclasses.replace(spec, workers=workers)
    (sweep_dir(spec) / "logs").mkdir(parents=True, exist_ok=True)
    procs = [ctx.Process(target=worker, args=(spec, stage, i), name=f"sweep-{stage}-{i}") for i in range(workers)]
    try:
        for i, p in enumerate(procs):
            with open(worker_log(spec, stage, i), "a") as log:
                saved = os.dup(2)
                os.dup2(log.fileno(), 2)  # the worker's stderr is its log from its first line, start-up failures included
                try:
                    p.start()
                finally:
                    os.dup2(saved, 2)
                    os.close(saved)
        for p in procs:
            p.join()
        check_workers(spec, stage, [p.exitcode for p in procs])
    except KeyboardInterrupt:  # Ctrl-C reaches the workers too; SIGTERM, or kill -INT, reaches only this process
        for p in procs:
            if p.is_alive():
                with contextlib.suppress(OSError):
                    os.kill(p.pid, signal.SIGINT)
        deadline = time.monotonic() + STOP_WAIT_S
        for p in procs:
            p.join(max(0.0, deadline - time.monotonic()))
            if p.is_alive():  # still not done: its trial stays RUNNING and is re-queued on resume, as a killed one
                p.kill()
                p.join()
        raise


def worker_log(spec: SweepSpec, stage: str, index: int) -> Path:
    """Where worker `index` of `stage` writes its stderr."""
    return sweep_dir(spec) / "logs" / f"worker-{stage}-{index}.log"


def check_workers(spec: SweepSpec, stage: str, exit_codes: list[int | None]) -> None:
    """A UserError naming the first worker that exited with a non-zero status, with that status and its stderr's last lines."""
    for index, code in enumerate(exit_codes):
        if code:
            log = worker_log(spec, stage, index)
            lines = [line.strip() for line in log.read_text(errors="replace").splitlines() if line.strip()] if log.is_file() else []
            how = f"was killed by signal {-code}" if code < 0 else f"exited with status {code}"
            tail = " | ".join(lines[-3:]) if lines else "(empty)"
            raise UserError(
                f"sweep {spec.name}: worker {index} of the {stage} stage {how} ({sum(1 for c in exit_codes if c)} of "
                f"{len(exit_codes)} workers did); last lines of {log}: {tail[-400:]}"
            )


# what a sweep writes in its folder (sweep_report, the workers, SQLite's own files); --overwrite deletes these and nothing else
SWEEP_OUTPUTS = frozenset(
    {"study.db", "study.db-journal", "study.db-wal", "study.db-shm", "trials.csv", "best.json", "best_config.json", "figures", "runs",
     "notebooks", "logs", ".lock", "study.db.ask.lock"}
)  # fmt: skip


def _delete_sweep(spec: SweepSpec, keep) -> None:
    """Remove both stages' studies, the queueing claim, and the sweep's outputs; refused, untouched, if the folder holds anything else."""
    from ..records.claim import TEMP_FILE

    foreign = sorted(p.name for p in sweep_dir(spec).iterdir() if p.name not in SWEEP_OUTPUTS and not TEMP_FILE.fullmatch(p.name))
    if foreign:
        raise UserError(
            f"refusing to overwrite sweep folder {sweep_dir(spec)}: it holds {', '.join(foreign[:3])}, which the sweep did not write; "
            "nothing was touched"
        )
    optuna = quiet_optuna()
    store = storage(spec)
    for stage in (GRID, REFINE, QUEUE):
        with contextlib.suppress(KeyError), storage_errors(spec):
            optuna.delete_study(study_name=f"{spec.name}:{stage}", storage=store)
    for path in sweep_dir(spec).iterdir():
        if path.name != Path(keep.name).name:
            shutil.rmtree(path) if path.is_dir() else path.unlink()


def run_sweep(spec: SweepSpec, workers: int | None = None, recover: bool | None = None, overwrite: bool = False) -> Path:
    """Run (or resume) both stages, then write trials.csv, best_config.json and the figures.

    With the default SQLite store a lock file shows whether another sweep on it
    is alive; if none is, trials left RUNNING by a killed run are re-queued. With
    a shared database the coordinator cannot know that, so pass recover=True
    (--recover) only when no worker runs anywhere. `overwrite` deletes the
    sweep's earlier trials and outputs first, to start afresh. A study made by a
    different sweep file is refused (`check_same_sweep`); the trials' device is
    checked before any trial starts. Ctrl-C stops the workers and raises
    KeyboardInterrupt once their trials are queued again.
    """
    from ..training.device import select_device

    try:
        select_device(trial_device(spec))
    except UserError as e:
        raise UserError(f"sweep {spec.name}: trial.device {spec.device}: {e}") from None
    out = sweep_dir(spec)
    out.mkdir(parents=True, exist_ok=True)
    workers = workers or spec.workers
    lock = open(out / ".lock", "w")  # noqa: SIM115 - held for the whole sweep
    try:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        lock.close()
        raise UserError(f"another sweep is running on {out}") from None
    try:
        if overwrite:
            _delete_sweep(spec, keep=lock)
        if recover is None:
            recover = not spec.storage
        grid = open_study(spec, GRID)
        check_same_sweep(spec, grid)
        queue_grid(spec, grid, recover)
        if recover:
            requeue_killed(grid)
        _run_stage(spec, GRID, workers)
        if spec.refine_trials:
            refine = open_study(spec, REFINE)
            if "space" not in refine.user_attrs:
                done = sorted((t for t in _finished(grid) if t.value is not None), key=lambda t: -t.value)
                if not done:
                    raise UserError(f"sweep {spec.name}: no grid trial completed, nothing to refine around")
                best = [t.user_attrs["point"] for t in done[: spec.refine_top]]
                refine.set_user_attr("space", refine_space(spec, best))
            if recover:
                requeue_killed(refine)
            _run_stage(spec, REFINE, workers)
        write_report(spec)
    finally:
        lock.close()
    return out


# --- the grid's queue: complete before any trial, resumable, linear --------------------------------

QUEUE = "queue"  # an empty study whose creation (atomic in any storage) makes one coordinator the one that queues


def _encoded(point: dict) -> dict:
    """A grid point as the study stores it: each value JSON-encoded (a categorical choice)."""
    return {k: json.dumps(v) for k, v in point.items()}


def _key(encoded: dict) -> str:
    return json.dumps(encoded, sort_keys=True)


def queued_points(study) -> set[str]:
    """The grid points the study holds (waiting, claimed or done, retries counted once), as _key strings; one read."""
    return {_key(t.system_attrs.get("fixed_params") or t.params) for t in study.get_trials(deepcopy=False)}


def check_same_sweep(spec: SweepSpec, grid) -> None:
    """A UserError if the study was made by another sweep file (a changed grid, base, refinement or trial setting).

    The study keeps the fingerprint of the file that made it; a study from before
    fingerprints is accepted only if it holds exactly this file's grid points.
    """
    stored = grid.user_attrs.get("fingerprint")
    if stored == spec.fingerprint():
        return
    if stored is None:
        if not grid.get_trials(deepcopy=False) or queued_points(grid) == {_key(_encoded(p)) for p in spec.iter_grid_points()}:
            return
        changed = "its grid"
    else:
        was, now = grid.user_attrs.get("defining", {}), json.loads(json.dumps(spec.defining()))
        changed = ", ".join(sorted(k for k in set(was) | set(now) if was.get(k) != now.get(k))) or "its contents"
    raise UserError(
        f"sweep {spec.name}: {spec.path or 'this sweep'} differs from the file that made the study in {sweep_dir(spec)} "
        f"(changed: {changed}); pass --overwrite to start afresh, or give the sweep another name"
    )


def queue_grid(spec: SweepSpec, grid, recover: bool) -> None:
    """Queue every grid point once, before any trial starts; resume a queueing a kill cut short.

    One coordinator queues: the one that creates the study "<name>:queue" (atomic
    in every storage). The others wait for its "queued" mark (QUEUE_WAIT_S). A
    cut-short queueing is completed where no other coordinator can be alive: with
    the default SQLite store (the lock says so) or with `recover`. Existing points
    are read once, so queueing is linear in the grid's size, with a progress bar.
    """
    if grid.user_attrs.get("queued") is not None:
        return
    if grid.user_attrs.get("fingerprint") is None and grid.get_trials(deepcopy=False):
        return  # a study from before queue marks, holding this file's whole grid (check_same_sweep)
    optuna = quiet_optuna()
    try:
        with storage_errors(spec):
            optuna.create_study(storage=storage(spec), study_name=f"{spec.name}:{QUEUE}")
    except optuna.exceptions.DuplicatedStudyError:
        if not recover:
            _wait_for_queue(spec, grid)
            return
    grid.set_user_attr("fingerprint", spec.fingerprint())
    grid.set_user_attr("defining", json.loads(json.dumps(spec.defining())))
    existing = queued_points(grid)
    points = spec.iter_grid_points()
    if spec.population_size(trial_device(spec)) > 1:  # compatible points side by side in the queue: whole populations
        from ..training.train import group_configs

        listed = spec.grid_points()
        points = (listed[i] for group in group_configs([spec.config_for(p) for p in listed]) for i in group)
    size = spec.grid_size()
    with tqdm(total=size, initial=len(existing), desc="queueing grid points", unit="pt", disable=size < 1000) as bar:
        for point in points:
            encoded = _encoded(point)
            if _key(encoded) not in existing:
                grid.enqueue_trial(encoded, skip_if_exists=False)
                bar.update()
    grid.set_user_attr("queued", size)


def _wait_for_queue(spec: SweepSpec, grid) -> None:
    """Another coordinator claimed the queueing: wait for its mark, or say why not."""
    deadline = time.monotonic() + QUEUE_WAIT_S
    while time.monotonic() < deadline:
        if grid.user_attrs.get("queued") is not None:
            return
        time.sleep(1)
        grid = open_study(spec, GRID)  # user attributes are read at load
    raise UserError(
        f"sweep {spec.name}: its grid is not fully queued after {QUEUE_WAIT_S} s: another coordinator is still queueing, or one was "
        "killed while queueing; run again later, or pass --recover if no other coordinator runs"
    )
