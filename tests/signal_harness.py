"""Forks real training processes from one interpreter that imported torch and mnist_lib once, signals each, reports what it left.

    python tests/signal_harness.py PLAN.json      # one JSON line per case on stdout

PLAN: {"argv": [train arguments], "parallel": 3, "cases": [{"dir": ".../r0", "signal": 15, "after": "epoch" or seconds}]}.
Each case forks a child that runs mnist_lib.cli.main(["train", *argv, "--run-dir", dir]), its stderr into dir + ".err",
and exits with main's status. The parent sends `signal` once metrics.csv holds an epoch ("epoch"), or `after` seconds
after the fork (null: never), then reports the exit status (negative: the signal that ended the child), the child's
stderr, the seconds from fork to signal and to exit, and summary.json's status (null: no summary).

Forking spares each case torch's start-up and reading the data (2-4 s on these machines), so a test can afford dozens
of real runs. The parent reads MNIST into the reader's cache on one thread, so the children inherit no thread pool.
"""

from __future__ import annotations

import json
import os
import sys
import time
import traceback
from pathlib import Path

import torch
import torch._dynamo  # noqa: F401 - what constructing a torch optimizer imports (1.7 s here): once, for every child

import mnist_lib.workflows.experiment  # noqa: F401 - the training path, imported before the fork
from mnist_lib import cli
from mnist_lib.data.idx import read_split


def child(argv: list[str], err: Path) -> None:
    """The forked process: the command line's main, its stderr into `err`; never returns."""
    code = 99
    try:
        fd = os.open(err, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        os.dup2(fd, 2)
        os.dup2(os.open(os.devnull, os.O_WRONLY), 1)
        code = cli.main(argv)
    except BaseException:  # a traceback is a finding: the test reads it in the .err file
        traceback.print_exc()
    finally:
        sys.stderr.flush()
        os._exit(code)


def status_of(folder: Path) -> str | None:
    try:
        return json.loads((folder / "summary.json").read_text())["status"]
    except (OSError, ValueError, KeyError):
        return None


def run(plan: dict) -> None:
    pending = list(plan["cases"])
    running: dict[int, dict] = {}
    while pending or running:
        while pending and len(running) < plan.get("parallel", 2):
            case = pending.pop(0)
            folder = Path(case["dir"])
            pid = os.fork()
            if pid == 0:
                child(["train", *plan["argv"], "--run-dir", str(folder)], folder.with_name(folder.name + ".err"))
            running[pid] = {**case, "start": time.monotonic(), "sent_at": None}
        time.sleep(0.002)
        for pid, case in list(running.items()):
            folder, elapsed = Path(case["dir"]), time.monotonic() - case["start"]
            due = case["signal"] is not None and case["sent_at"] is None
            if due and case["after"] == "epoch":
                metrics = folder / "metrics.csv"
                due = metrics.is_file() and len(metrics.read_text().splitlines()) > 1
            elif due:
                due = elapsed >= case["after"]
            if due:
                try:
                    os.kill(pid, case["signal"])
                    case["sent_at"] = elapsed
                except ProcessLookupError:
                    pass
            done, wait_status = os.waitpid(pid, os.WNOHANG)
            if not done:
                continue
            del running[pid]
            err = folder.with_name(folder.name + ".err")
            print(json.dumps({
                "dir": str(folder), "signal": case["signal"], "sent_at": case["sent_at"], "seconds": time.monotonic() - case["start"],
                "exit": os.waitstatus_to_exitcode(wait_status), "err": err.read_text() if err.exists() else "",
                "status": status_of(folder), "files": sorted(p.name for p in folder.iterdir()) if folder.is_dir() else None,
            }), flush=True)  # fmt: skip


if __name__ == "__main__":
    torch.set_num_threads(1)  # one thread: no pool for the children to inherit
    for split in ("train", "test"):
        read_split(split)  # into the reader's cache, which every child inherits
    run(json.loads(Path(sys.argv[1]).read_text()))
