"""The training loop on real data: it learns, it is reproducible, it stops on divergence."""

import math

import pytest
import torch

from mnist_lib import Config, evaluate, train
from mnist_lib.train import METRIC_COLUMNS, select_device

QUICK = Config(epochs=2, batch_size=64, lr=2e-3, hidden=(256, 128), dropout=(0.1, 0.1))


def test_short_real_run_exceeds_90_percent(small_data):
    result = train(QUICK, small_data, device="cpu", threads=2, progress=False)
    assert result.status == "completed"
    assert [r["epoch"] for r in result.history] == [1, 2]
    assert all(tuple(r) == METRIC_COLUMNS for r in result.history)
    assert result.best_val_acc > 0.90


def test_same_seed_gives_identical_metrics(small_data):
    a = train(QUICK, small_data, device="cpu", threads=2, progress=False)
    b = train(QUICK, small_data, device="cpu", threads=2, progress=False)
    strip = [{k: v for k, v in r.items() if k != "seconds"} for r in a.history]
    assert strip == [{k: v for k, v in r.items() if k != "seconds"} for r in b.history]
    for pa, pb in zip(a.model.parameters(), b.model.parameters(), strict=True):
        assert torch.equal(pa, pb)


def test_different_seed_gives_different_run(small_data):
    a = train(QUICK.replace(epochs=1), small_data, device="cpu", threads=2, progress=False)
    b = train(QUICK.replace(epochs=1, seed=1), small_data, device="cpu", threads=2, progress=False)
    assert a.history[0]["train_loss"] != b.history[0]["train_loss"]


def test_best_weights_are_kept(small_data):
    result = train(QUICK.replace(epochs=3), small_data, device="cpu", threads=2, progress=False)
    best = max(result.history, key=lambda r: r["val_acc"])
    assert result.best_epoch == best["epoch"]
    assert evaluate(result.model, small_data.x_val, small_data.y_val)["acc"] == pytest.approx(best["val_acc"])


def test_lr_is_halved_on_plateau(small_data):
    # patience 0 and a tiny training set: the val loss stalls quickly and the lr halves
    cfg = QUICK.replace(epochs=6, lr_patience=0, lr=1e-2)
    result = train(cfg, small_data, device="cpu", progress=False)
    lrs = [r["lr"] for r in result.history]
    # independent re-statement of the plateau rule (relative threshold 1e-4, no cooldown)
    expected, lr, best, bad = [], 1e-2, float("inf"), 0
    for r in result.history:
        expected.append(lr)
        if r["val_loss"] < best * (1 - 1e-4):
            best, bad = r["val_loss"], 0
        else:
            bad += 1
        if bad > cfg.lr_patience:
            lr, bad = lr * cfg.lr_factor, 0
    assert lrs == pytest.approx(expected)
    assert lrs[-1] < lrs[0]


def test_non_finite_loss_stops_the_run_as_diverged(small_data):
    result = train(QUICK.replace(epochs=5, lr=1e12), small_data, device="cpu", progress=False)
    assert result.status == "diverged"
    assert 1 <= len(result.history) < 5
    last = result.history[-1]
    assert not (math.isfinite(last["train_loss"]) and math.isfinite(last["val_loss"]))


def test_device_selection():
    assert select_device("auto").type in ("cuda", "mps", "cpu")
    assert select_device("cpu") == torch.device("cpu")
