"""Every run record under a results folder as one table: single runs, seeds of multi-seed runs and sweep trials alike.

    table = runs_table("results")                  # a row per run record; unreadable ones flagged, never fatal
    table.query("dataset == 'mnist' and norm == 'batch'")
    config_diff(table.loc["configs/mlp_noaug/seed_0"], table.loc["configs/mlp_noaug_v2/seed_0"])   # only what differs
    history("results/runs/reference")              # its metrics.csv as a DataFrame

A run record is a folder holding summary.json with a `status` (runs.py). The
aggregate summary.json of a multi-seed folder (it has `n_seeds`, or
`seeds_requested` while it runs) is not a run; its seeds are. A record whose files cannot be read (bad JSON, an unknown config
field, a missing config.json) becomes a row with status "unreadable" and the
reason in `error`: browsing a folder of results never stops at one bad record. A
record that says "running" while no process holds its lock (its writer was
killed: SIGKILL, the OOM killer) is shown as "killed".
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from pathlib import Path

import pandas as pd

from ..core.config import Config
from ..core.errors import UserError
from ..core.files import read_json
from .claim import writer_alive
from .runs import CONFIG_FILE, METRICS_FILE, MODEL_FILE, SUMMARY_FILE, read_summary

# summary.json fields shown beside the config, in this order
SUMMARY_COLUMNS = ("status", "best_val_acc", "final_val_acc", "test_acc", "best_epoch", "epochs_run", "train_seconds", "device", "threads")
KINDS = ("run", "seed", "sweep trial")  # a single run, one seed of a multi-seed folder, a trial of a sweep


def runs_table(root: str | Path, folders: Sequence[str] = ()) -> pd.DataFrame:
    """One row per run record under `root` (or only under its subfolders `folders`), indexed by its path relative to `root`.

    Columns: kind, status, every Config field, best/final validation accuracy, test
    accuracy (NaN unless evaluated), best epoch, epochs run, train seconds, device,
    threads, date (when it started), has_weights, error ("" unless unreadable).
    """
    root = Path(root)
    if not root.is_dir():
        raise UserError(f"no results folder at {root}")
    tops = [root / f for f in folders] or [root]
    summaries = sorted({s for top in tops if top.is_dir() for s in top.rglob(SUMMARY_FILE)})
    rows = [_row(root, summary.parent) for summary in summaries if _is_run(summary)]
    columns = ["kind", *SUMMARY_COLUMNS[:1], *Config.field_names(), *SUMMARY_COLUMNS[1:], "date", "has_weights", "error"]
    table = pd.DataFrame(rows, columns=["name", *columns])
    return table.set_index("name")


def _is_run(summary: Path) -> bool:
    """A run's summary (status, config beside it) rather than a multi-seed aggregate (n_seeds, seeds_requested) or a sweep's best.json."""
    if (summary.parent / CONFIG_FILE).is_file() or (summary.parent / METRICS_FILE).is_file():
        return True
    try:
        data = read_json(summary, "run summary")
    except UserError:
        return True  # unreadable: listed, so the user sees it
    return not isinstance(data, dict) or ("status" in data and not {"n_seeds", "seeds_requested"} & set(data))


def _kind(root: Path, folder: Path) -> str:
    parts = folder.relative_to(root).parts
    if "sweeps" in parts and "runs" in parts:
        return "sweep trial"
    return "seed" if folder.name.startswith("seed_") else "run"


def _row(root: Path, folder: Path) -> dict:
    row = {"name": str(folder.relative_to(root)), "kind": _kind(root, folder), "has_weights": (folder / MODEL_FILE).is_file(), "error": ""}
    try:
        summary = read_summary(folder)  # types checked: a record is untrusted input too
        config = Config.load(folder / CONFIG_FILE)
    except UserError as e:
        return {**row, "status": "unreadable", "error": str(e)}
    row.update(dataclasses.asdict(config))
    row["hidden"], row["dropout"] = str(list(config.hidden)), str(list(config.dropout))  # hashable, filterable
    row.update({k: summary.get(k) for k in SUMMARY_COLUMNS})
    if row["status"] == "running" and not writer_alive(folder):  # SIGKILL, the OOM killer, a power cut: nobody will close it
        row.update(status="killed", error="the record says running, but no process writes it: its writer was killed")
    row["date"] = str(summary.get("started_at", ""))[:10]
    return row


def config_diff(a: pd.Series, b: pd.Series) -> pd.DataFrame:
    """The Config fields on which two rows of runs_table differ: one row per field, a column per run."""
    fields = [f for f in Config.field_names() if f in a.index and str(a[f]) != str(b[f])]
    return pd.DataFrame({a.name: [a[f] for f in fields], b.name: [b[f] for f in fields]}, index=pd.Index(fields, name="field"))


def history(run_dir: str | Path) -> pd.DataFrame:
    """A run's per-epoch metrics (metrics.csv) as a DataFrame; a UserError naming the file if it cannot be read."""
    path = Path(run_dir) / METRICS_FILE
    try:
        return pd.read_csv(path)
    except (OSError, ValueError, pd.errors.ParserError) as e:
        raise UserError(f"cannot read {path}: {e}") from None
