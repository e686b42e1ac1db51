"""Compare configs trained over several seeds: a results table and learning curves, from their folders.

    from mnist_lib.records.compare import load_seed_runs, results_table
    folders = {"reference": "results/final", "mlp_aug": "results/configs/mlp_aug"}
    results_table(folders)                      # params, epochs, minutes per seed, val/test mean ± std
    results_table(folders, baseline="reference")   # + difference, its 95 % CI and Welch's p against that row
    load_seed_runs("results/configs/mlp_aug").histories   # {seed: metrics.csv as a DataFrame}

A folder is what experiment.multi_seed (notebook 04) writes: summary.json and
seed_<s>/metrics.csv for every seed it names. Notebook 05 draws the comparison.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from ..core.errors import UserError
from ..core.files import read_json
from . import stats


@dataclass
class SeedRuns:
    summary: dict  # summary.json: config, means and stds, params, hardware, date
    histories: dict[int, pd.DataFrame]  # per seed: one row per epoch (metrics.csv)


def load_seed_runs(folder: str | Path) -> SeedRuns:
    """Read a multi-seed result folder; a clear UserError if it is not one."""
    folder = Path(folder)
    path = folder / "summary.json"
    if not path.is_file():
        raise UserError(f"{folder} has no summary.json: not a multi-seed result folder (notebook 04 writes one)")
    summary = read_json(path)
    if not isinstance(summary, dict) or "seeds" not in summary:
        raise UserError(f"{path} is not a multi-seed summary (no 'seeds' list)")
    histories = {}
    for seed in summary["seeds"]:
        metrics = folder / f"seed_{seed}" / "metrics.csv"
        if not metrics.is_file():
            raise UserError(f"{metrics} is missing: {path} lists seed {seed}")
        histories[seed] = pd.read_csv(metrics)
    return SeedRuns(summary, histories)


def seed_values(folder: str | Path, metric: str) -> list[float]:
    """Per-seed values of `metric` ("test_acc", "val_acc" = each seed's best validation accuracy, "train_seconds") of completed seeds.

    Empty where the folder's seeds never measured it (a folder never evaluated on the test set).
    """
    column = "best_val_acc" if metric == "val_acc" else metric
    path = Path(folder) / "summary.csv"
    try:
        table = pd.read_csv(path)
    except (OSError, ValueError) as e:
        raise UserError(f"{path}: cannot read the per-seed table ({e})") from None
    if "seed" not in table or "status" not in table:
        raise UserError(f"{path}: no seed and status columns: not a multi-seed summary")
    if column not in table:  # e.g. test_acc of seeds never evaluated on the test set: no values, none made up
        return []
    return table.loc[table["status"] == "completed", column].dropna().astype(float).tolist()


def results_table(folders: dict[str, str | Path], baseline: str | None = None, metric: str = "test_acc") -> pd.DataFrame:
    """One row per config: dataset, params, epochs, seeds, training minutes per seed, val and test accuracy (%) mean and std.

    With a `baseline` (one of the labels), each row also gets, for `metric`
    (test_acc or val_acc), its difference from the baseline in points
    (`diff`), the 95 % confidence interval of that difference (`ci95_low`,
    `ci95_high`) and Welch's two-sided p-value (`p_welch`), over the seeds.
    """
    if baseline is not None and baseline not in folders:
        raise UserError(f"baseline {baseline!r} is not one of the configs: {', '.join(folders)}")
    if metric not in ("test_acc", "val_acc"):
        raise UserError(f"metric must be test_acc or val_acc, got {metric!r}")
    base_values = [100 * v for v in seed_values(folders[baseline], metric)] if baseline is not None else []
    rows = []
    for label, folder in folders.items():
        s = load_seed_runs(folder).summary
        dataset = s["config"].get("dataset", "mnist")  # records from before the dataset field are MNIST's
        row = {"config": label, "dataset": dataset, "params": s["params"], "epochs": s["config"]["epochs"], "seeds": s["n_seeds"]}
        row["minutes_per_seed"] = s["train_seconds_mean"] / 60
        for key in ("val_acc", "test_acc"):
            row[f"{key}_mean"] = 100 * s[f"{key}_mean"] if f"{key}_mean" in s else float("nan")
            row[f"{key}_std"] = 100 * s[f"{key}_std"] if f"{key}_std" in s else float("nan")
        if label == baseline:  # no test of the baseline against itself
            row.update(diff=0.0, ci95_low=float("nan"), ci95_high=float("nan"), p_welch=float("nan"))
        elif baseline is not None:
            test = stats.welch([100 * v for v in seed_values(folder, metric)], base_values)
            row.update(diff=test.diff, ci95_low=test.ci95[0], ci95_high=test.ci95[1], p_welch=test.p)
        row.update(hardware=f"{s['cpu']} ({s['device']}), {s['threads']} threads", date=s["date"])
        rows.append(row)
    return pd.DataFrame(rows).set_index("config")
