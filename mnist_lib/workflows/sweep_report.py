"""A sweep's outputs: trials.csv, best_config.json and figures, in results/sweeps/<name>/.

table = trials_table(spec)       # one row per trial of both stages (killed-and-retried ones left out)
write_report(spec)               # the files; run_sweep calls it at the end
"""

from __future__ import annotations

import pandas as pd

from ..core.config import Config
from ..core.files import read_json
from ..records import plots
from ..records.runs import atomic_write, write_json
from .sweep_spec import SweepSpec, expand
from .sweep_store import GRID, REFINE, counts, open_study, sweep_dir

STATUS = {"COMPLETE": "completed", "FAIL": "failed", "RUNNING": "running", "WAITING": "waiting", "PRUNED": "skipped"}


def trials_table(spec: SweepSpec) -> pd.DataFrame:
    """stage, trial, every searched parameter, best/final val acc, epochs run, seconds, train seconds, status, error.

    Trials trained in a population add population_size; their seconds are the population's wall time.
    """
    rows = []
    stages = [GRID, REFINE] if spec.refine_trials else [GRID]
    for stage in stages:
        for t in open_study(spec, stage).get_trials(deepcopy=False):
            if not counts(t):
                continue
            point = expand(t.user_attrs.get("point", {}))  # a bundle's fields get their own columns
            train_seconds = t.user_attrs.get("train_seconds")
            record = sweep_dir(spec) / "runs" / f"{stage}-{t.number:04d}" / "summary.json"
            if train_seconds is None and record.is_file():  # sweeps from before this attribute was kept
                train_seconds = read_json(record).get("train_seconds")
            row = {"stage": stage, "trial": t.number}
            row.update({k: (str(list(v)) if isinstance(v, (list, tuple)) else v) for k, v in point.items()})
            row.update(
                best_val_acc=t.value,
                final_val_acc=t.user_attrs.get("final_val_acc"),
                epochs_run=t.user_attrs.get("epochs_run"),
                seconds=t.user_attrs.get("seconds"),  # the whole trial, notebook or library call included
                train_seconds=train_seconds,  # the training loop alone
                status=t.user_attrs.get("status") if t.state.name == "COMPLETE" else STATUS[t.state.name],
                error=t.user_attrs.get("error", ""),
            )
            if t.user_attrs.get("population_size"):  # trained side by side: seconds are the population's
                row["population_size"] = t.user_attrs["population_size"]
            rows.append(row)
    return pd.DataFrame(rows)


def best_config(spec: SweepSpec, table: pd.DataFrame) -> Config | None:
    done = table[table["status"] == "completed"]
    if done.empty:
        return None
    best = done.loc[done["best_val_acc"].idxmax()]
    study = open_study(spec, best["stage"])
    return spec.config_for(study.trials[int(best["trial"])].user_attrs["point"])


def write_report(spec: SweepSpec) -> pd.DataFrame:
    out = sweep_dir(spec)
    table = trials_table(spec)
    atomic_write(out / "trials.csv", table.to_csv(index=False, lineterminator="\n"))
    cfg = best_config(spec, table)
    if cfg is not None:
        atomic_write(out / "best_config.json", cfg.to_json())
        done = table[table["status"] == "completed"]
        write_json(out / "best.json", {"best_val_acc": float(done["best_val_acc"].max()), "n_trials": len(table), "config": cfg.to_dict()})
        figs = out / "figures"
        params = [p for p in spec.grid]
        plots.save_figure(plots.plot_sweep_params(done, params), figs / "accuracy_vs_params.png", close=True)
        plots.save_figure(plots.plot_sweep_progress(table), figs / "best_so_far.png", close=True)
        if len(params) == 2:
            grid = done[done["stage"] == GRID]
            plots.save_figure(plots.plot_sweep_heatmap(grid, *params), figs / "grid_heatmap.png", close=True)
    return table
