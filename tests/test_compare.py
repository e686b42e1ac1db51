"""Comparing multi-seed result folders: the table agrees with the per-seed records, bad folders give clear errors."""

from __future__ import annotations

import json
import shutil

import matplotlib
import numpy as np
import pandas as pd
import pytest
import torch

from mnist_lib import MLP, Config, RunOptions, count_params
from mnist_lib.core.errors import UserError
from mnist_lib.records import plots
from mnist_lib.records.compare import load_seed_runs, results_table
from mnist_lib.records.stats import welch
from mnist_lib.training.augment import Augment, augmented_versions
from mnist_lib.workflows.experiment import multi_seed

matplotlib.use("Agg")
TINY = Config(epochs=2, hidden=(32,), dropout=(0.1,), batch_size=256)


@pytest.fixture(scope="module")
def seed_folders(mnist_dir, tmp_path_factory):
    root = tmp_path_factory.mktemp("seeds")
    options = RunOptions(data_dir=mnist_dir, max_train_samples=2000, threads=1, device="cpu", progress=False)
    multi_seed(TINY, [0, 1], root / "a", options)
    multi_seed(TINY.replace(hidden=(16, 16), dropout=(0.0, 0.0)), [3, 4, 5], root / "b", options, evaluate_test=False)
    return root


def test_table_agrees_with_each_seed_record(seed_folders):
    table = results_table({"a": seed_folders / "a", "b": seed_folders / "b"})
    assert list(table.index) == ["a", "b"]
    for label, cfg in (("a", TINY), ("b", TINY.replace(hidden=(16, 16), dropout=(0.0, 0.0)))):
        seeds = pd.read_csv(seed_folders / label / "summary.csv")
        row = table.loc[label]
        assert row["params"] == count_params(MLP(cfg.hidden, cfg.dropout))
        assert row["epochs"] == 2 and row["seeds"] == len(seeds) and row["dataset"] == "mnist"
        assert row["val_acc_mean"] == pytest.approx(100 * seeds["best_val_acc"].mean())
        assert row["val_acc_std"] == pytest.approx(100 * seeds["best_val_acc"].std(ddof=1))
        assert row["minutes_per_seed"] == pytest.approx(seeds["train_seconds"].mean() / 60)
    assert table.loc["a", "test_acc_mean"] == pytest.approx(100 * pd.read_csv(seed_folders / "a" / "summary.csv")["test_acc"].mean())
    assert pd.isna(table.loc["b", "test_acc_mean"])  # never evaluated on test: no number is made up


def test_a_baseline_row_gives_each_config_welchs_test_against_it(seed_folders):
    folders = {"a": seed_folders / "a", "b": seed_folders / "b"}
    table = results_table(folders, baseline="b", metric="val_acc")
    a, b = (100 * pd.read_csv(seed_folders / x / "summary.csv")["best_val_acc"] for x in ("a", "b"))
    expected = welch(a.tolist(), b.tolist())  # records.stats is checked against a hand integration in test_stats.py
    row = table.loc["a"]
    assert row["diff"] == pytest.approx(a.mean() - b.mean()) and row["p_welch"] == pytest.approx(expected.p, nan_ok=True)
    assert (row["ci95_low"], row["ci95_high"]) == pytest.approx(expected.ci95, nan_ok=True)
    assert table.loc["b", "diff"] == 0 and pd.isna(table.loc["b", "p_welch"])  # the baseline against itself: no test
    assert "p_welch" not in results_table(folders).columns
    with pytest.raises(UserError, match="baseline 'c' is not one of the configs: a, b"):
        results_table(folders, baseline="c")
    on_test = results_table(folders, baseline="a")  # b was never evaluated on test: no difference or p-value is made up
    assert on_test.loc["b", ["diff", "ci95_low", "ci95_high", "p_welch"]].isna().all()


def test_histories_are_the_seed_metrics(seed_folders):
    runs = load_seed_runs(seed_folders / "b")
    assert sorted(runs.histories) == [3, 4, 5]
    pd.testing.assert_frame_equal(runs.histories[4], pd.read_csv(seed_folders / "b" / "seed_4" / "metrics.csv"))
    fig = plots.plot_compared_curves({"b": runs.histories, "a": load_seed_runs(seed_folders / "a").histories})
    assert [len(ax.get_lines()) for ax in fig.axes] == [2, 2]


def test_bad_folders_are_clear_errors(seed_folders, tmp_path):
    with pytest.raises(UserError, match="no summary.json"):
        load_seed_runs(tmp_path)
    broken = tmp_path / "broken"
    shutil.copytree(seed_folders / "a", broken)
    shutil.rmtree(broken / "seed_1")
    with pytest.raises(UserError, match="seed_1/metrics.csv is missing"):
        results_table({"x": broken})
    (broken / "summary.json").write_text(json.dumps({"config": {}}))
    with pytest.raises(UserError, match="not a multi-seed summary"):
        load_seed_runs(broken)


def test_augmented_versions_keep_the_original_and_leave_the_rng_alone():
    images = torch.rand(3, 28, 28)
    aug = Augment(rotate=15, elastic_alpha=2)
    torch.manual_seed(7)
    before = torch.rand(4)
    torch.manual_seed(7)
    versions = augmented_versions(images, aug, n=4, seed=1)
    assert torch.equal(torch.rand(4), before)  # the caller's random stream is untouched
    assert versions.shape == (3, 5, 28, 28)
    assert torch.equal(versions[:, 0], images)
    assert torch.equal(versions, augmented_versions(images, aug, n=4, seed=1))
    assert not torch.equal(versions, augmented_versions(images, aug, n=4, seed=2))
    assert not torch.equal(versions[:, 1], versions[:, 2])  # independent draws, not one map repeated
    fig = plots.plot_augmented_samples(versions)
    cell = 28 + plots.GRID_PAD
    assert np.asarray(fig.axes[0].images[0].get_array()).shape == (plots.GRID_PAD + 3 * cell, plots.GRID_PAD + 5 * cell)  # 3 rows of 5
    assert [t.get_text() for t in fig.axes[0].texts] == ["original", "draw 1", "draw 2", "draw 3", "draw 4"]
