"""Two "machines" (coordinators with their own results folders) share one sweep in a real PostgreSQL server on loopback."""

from __future__ import annotations

import glob
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
import yaml
from conftest import skip_or_fail

pytestmark = pytest.mark.slow  # a real PostgreSQL server and two sweep coordinators: make test-fast leaves it out


def postgres_bin() -> str | None:
    """The folder of PostgreSQL's server programs: $MNIST_POSTGRES_BIN, else Debian's /usr/lib/postgresql/*/bin, else initdb's on PATH."""
    on_path = shutil.which("initdb")
    candidates = sorted(glob.glob("/usr/lib/postgresql/*/bin"))[::-1] + ([os.path.dirname(os.path.realpath(on_path))] if on_path else [])
    if "MNIST_POSTGRES_BIN" in os.environ:
        candidates = [os.environ["MNIST_POSTGRES_BIN"]]
    needed = ("initdb", "pg_ctl", "createdb")
    return next((d for d in candidates if all(os.path.isfile(os.path.join(d, p)) for p in needed)), None)


@pytest.fixture
def postgres(tmp_path):
    """A throwaway PostgreSQL server on 127.0.0.1 (run as the postgres user; .ci/run installs the server)."""
    bin_dir = postgres_bin()
    if bin_dir is None or shutil.which("su") is None:
        skip_or_fail("the shared-database sweep test needs a PostgreSQL server (apt-get install postgresql; brew install postgresql)")
    base = Path(tempfile.mkdtemp(prefix="mnist-pg-"))  # outside pytest's private tmp, which postgres cannot enter
    base.chmod(0o755)
    data = base / "pg"
    data.mkdir()
    shutil.chown(data, "postgres")
    port = 55000 + (int(time.time() * 1000) % 900)

    def as_postgres(cmd):
        subprocess.run(["su", "postgres", "-s", "/bin/sh", "-c", cmd], check=True, capture_output=True, timeout=60)

    as_postgres(f"{bin_dir}/initdb -D {data} -A trust -U postgres")
    as_postgres(f"{bin_dir}/pg_ctl -D {data} -o '-p {port} -k {data} -c listen_addresses=127.0.0.1' -l {data}/log -w start")
    try:
        as_postgres(f"{bin_dir}/createdb -h 127.0.0.1 -p {port} -U postgres sweeps")
        yield f"postgresql+psycopg2://postgres@127.0.0.1:{port}/sweeps"
    finally:
        as_postgres(f"{bin_dir}/pg_ctl -D {data} -m immediate stop")
        shutil.rmtree(base, ignore_errors=True)


def test_two_machines_share_one_study_without_duplicates(tmp_path, postgres, mnist_dir):
    sweep = tmp_path / "pg.yaml"
    sweep.write_text(
        yaml.safe_dump(
            {
                "name": "pgshared",
                "base": {"epochs": 1, "hidden": [16], "dropout": [0.0]},
                "grid": {"lr": [1e-3, 2e-3, 4e-3], "seed": [0, 1]},
                "refine": {"trials": 2, "top": 2},
                "trial": {"executor": "library", "max_train_samples": 500},
                "workers": 1,
                "storage": postgres,
            }
        )
    )
    env = {**os.environ, "MNIST_DATA_DIR": str(mnist_dir)}
    procs = []
    for machine in ("a", "b"):
        procs.append(
            subprocess.Popen(
                [sys.executable, "-m", "mnist_lib", "sweep", str(sweep)],
                env={**env, "MNIST_RESULTS_DIR": str(tmp_path / machine)},
                stderr=subprocess.PIPE,
                text=True,
            )
        )
        time.sleep(3)  # start the second machine once the first has queued the grid
    for p in procs:
        _, err = p.communicate(timeout=300)
        assert p.returncode == 0, err
    # each machine wrote trials.csv when it finished, as it saw the study then (the other may still have been
    # training: seen once, a refine trial "running" in b's table); read the shared study once both are done
    from mnist_lib.workflows.sweep_report import trials_table
    from mnist_lib.workflows.sweep_spec import load_spec

    assert all((tmp_path / m / "sweeps" / "pgshared" / "trials.csv").is_file() for m in ("a", "b"))
    table = trials_table(load_spec(sweep))  # the shared study, once both machines are done
    grid = table[table["stage"] == "grid"]
    assert len(grid) == 6 and len(grid[["lr", "seed"]].drop_duplicates()) == 6  # each point once, across both machines
    assert len(table[table["stage"] == "refine"]) == 2
    assert (table["status"] == "completed").all()
