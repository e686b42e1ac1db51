"""Where a sweep's Optuna studies live and how to open them: shared by the runner (sweep.py) and the report (sweep_report.py).

    study = open_study(spec, GRID)      # created on first use, in results/sweeps/<name>/study.db unless spec.storage
    [t for t in study.get_trials() if counts(t)]   # the trials that count (not pruned, not killed and re-queued)

Imports point one way: sweep -> sweep_report -> sweep_store -> sweep_spec.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import socket
from pathlib import Path

from ..core.errors import UserError
from ..core.paths import RESULTS_DIR
from .sweep_spec import SweepSpec

GRID, REFINE = "grid", "refine"
STORAGE_TIMEOUT_S = 10  # a database server that accepts connections and never answers is given up on after this
CONNECT_TIMEOUT_ARG = {"postgresql": "connect_timeout", "mysql": "connect_timeout"}  # each driver's name for it


def sweep_dir(spec: SweepSpec) -> Path:
    return RESULTS_DIR / "sweeps" / spec.name


def storage_url(spec: SweepSpec) -> str:
    """spec.storage, else SQLite in the sweep's folder: a URL built by SQLAlchemy, so a folder name holding '?', '#', '%' or
    '@' is quoted and the database (and its lock beside it) stays in the folder the user named."""
    if spec.storage:
        return spec.storage
    from sqlalchemy.engine import URL

    return URL.create("sqlite", database=str(sweep_dir(spec) / "study.db")).render_as_string(hide_password=False)


def quiet_optuna():
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    return optuna


def storage(spec: SweepSpec):
    """The Optuna storage of the sweep: SQLite in its folder, or spec.storage with a connect timeout (STORAGE_TIMEOUT_S)."""
    optuna = quiet_optuna()
    url = storage_url(spec)
    dialect = url.split(":", 1)[0].split("+", 1)[0]
    timeout = {CONNECT_TIMEOUT_ARG[dialect]: STORAGE_TIMEOUT_S} if dialect in CONNECT_TIMEOUT_ARG else {"timeout": STORAGE_TIMEOUT_S}
    with storage_errors(spec):
        return optuna.storages.RDBStorage(url, engine_kwargs={"connect_args": timeout})


@contextlib.contextmanager
def storage_errors(spec: SweepSpec):
    """A storage that cannot be reached, refused us, or has no driver here: one UserError naming it."""
    try:
        yield
    except ImportError as e:
        raise UserError(
            f"storage {spec.storage}: no database driver for it ({e.__cause__ or e}); e.g. pip install psycopg2-binary"
        ) from None
    except Exception as e:  # sqlalchemy's OperationalError, ArgumentError and friends: malformed, unreachable or refused
        if type(e).__module__.startswith("sqlalchemy"):
            raise UserError(f"storage {storage_url(spec)}: {' '.join(str(e).split())[:300]}") from None
        raise


def open_study(spec: SweepSpec, stage: str, worker_index: int = 0):
    """The study of one stage (created on first use); grid values are JSON-encoded categoricals.

    Refinement uses TPE with its constant liar: trials still running (in other workers,
    or asked together as one population) count as poor results, so a batch spreads out.
    With one worker asking one trial at a time it changes nothing.
    """
    optuna = quiet_optuna()
    if stage == GRID:  # grid points are enqueued by the coordinator; workers only claim them
        sampler = optuna.samplers.RandomSampler(seed=spec.seed)
    else:
        # one worker on one machine: reproducible; otherwise each process draws its own stream, or
        # parallel workers (here or on other machines) would propose the same first points
        alone = spec.workers == 1 and not spec.storage
        seed = spec.seed if alone else hash((spec.seed, worker_index, os.getpid(), socket.gethostname())) % 2**31
        startup = min(5, max(1, spec.refine_trials // 3))
        sampler = optuna.samplers.TPESampler(seed=seed, n_startup_trials=startup, constant_liar=True)
    with storage_errors(spec):
        study = optuna.create_study(
            storage=storage(spec), study_name=f"{spec.name}:{stage}", sampler=sampler, direction="maximize", load_if_exists=True
        )
    url = storage_url(spec)
    if url.startswith("sqlite"):
        from sqlalchemy.engine import make_url

        _one_ask_at_a_time(study, Path(f"{make_url(url).database}{ASK_LOCK_SUFFIX}"))
    return study


ASK_LOCK_SUFFIX = ".ask.lock"  # beside a SQLite database, as SQLite's own -journal: its workers take queued trials one at a time


def _one_ask_at_a_time(study, lock_path: Path) -> None:
    """Make study.ask (which study.optimize calls too) hold an exclusive file lock while it takes a trial.

    Optuna takes a queued trial with SELECT ... FOR UPDATE, which SQLite ignores: two
    worker processes could take the same queued trial and train it twice (seen: both
    wrote runs/grid-0005 at once, and the second failed on its lock). A server
    database (PostgreSQL, MySQL) honours FOR UPDATE, so only SQLite needs this.
    """
    ask = study.ask

    def locked_ask(*args, **kwargs):
        with open(lock_path, "a") as f:  # noqa: PTH123 - the file only carries the lock
            fcntl.flock(f, fcntl.LOCK_EX)  # released when the file closes
            return ask(*args, **kwargs)

    study.ask = locked_ask


def counts(trial) -> bool:
    """Whether a trial counts: not pruned (it lost a race for a slot) and not killed (its point was re-queued)."""
    return trial.state.name != "PRUNED" and not trial.user_attrs.get("killed")
