"""The training loop on real data: it learns, it is reproducible, it stops on divergence."""

import importlib
import math
import os

import pytest
import torch

from mnist_lib import MLP, Config, evaluate, train
from mnist_lib.training.device import select_device
from mnist_lib.training.train import METRIC_COLUMNS

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


def test_the_best_epochs_weights_are_kept_when_it_is_not_the_last(small_data, monkeypatch):
    """Validation accuracy scripted to peak at epoch 2 of 4: the model must end with epoch 2's weights."""
    train_mod = importlib.import_module("mnist_lib.training.train")  # the package exports a function of the same name

    scripted = iter([0.50, 0.90, 0.70, 0.80])
    snapshots = []

    def fake_evaluate(model, x, y):
        snapshots.append(model.member(0).state_dict())
        return [1.0], [next(scripted)]

    monkeypatch.setattr(train_mod, "evaluate_members", fake_evaluate)
    result = train(QUICK.replace(epochs=4), small_data, device="cpu", threads=2, progress=False)
    assert result.best_epoch == 2 and result.best_val_acc == 0.90 and result.final_val_acc == 0.80
    final = result.model.state_dict()
    assert all(torch.equal(final[k], snapshots[1][k]) for k in final)  # epoch 2's weights
    assert not all(torch.equal(final[k], snapshots[3][k]) for k in final)  # not the last epoch's


def test_ctrl_c_ends_the_run_as_interrupted_with_the_best_weights(small_data, monkeypatch):
    from conftest import ctrl_c_in_epoch

    ctrl_c_in_epoch(monkeypatch, 3)
    result = train(QUICK.replace(epochs=5), small_data, device="cpu", threads=2, progress=False)
    assert result.status == "interrupted" and [r["epoch"] for r in result.history] == [1, 2]
    assert evaluate(result.model, small_data.x_val, small_data.y_val)["acc"] == pytest.approx(result.best_val_acc)


def test_bf16_precision_really_runs_in_bf16(small_data, monkeypatch):
    """The same seed in fp32 and bf16: the step's dtype is bfloat16, its matmuls see bf16 operands, and the metrics differ."""
    from conftest import OneMember

    cfg = QUICK.replace(precision="bf16")
    step = OneMember(MLP.from_config(cfg), cfg)
    assert step.step.dtype == torch.bfloat16
    with torch.profiler.profile(record_shapes=True) as prof:
        step(small_data.x_train[:64], small_data.y_train[:64])
    seen = [e.input_dtypes[:3] for e in prof.events() if e.name == "aten::addmm"]  # a population of one: 2-D layers
    # each layer's matmul runs on bfloat16 operands (autocast's cast of the fp32 call, which the profiler lists too)
    assert sum(types == ["c10::BFloat16"] * 3 for types in seen) == len(cfg.hidden) + 1, seen
    fp32 = train(QUICK.replace(epochs=1), small_data, device="cpu", threads=2, progress=False)
    bf16 = train(cfg.replace(epochs=1), small_data, device="cpu", threads=2, progress=False)
    assert fp32.history[0]["train_loss"] != bf16.history[0]["train_loss"]
    assert bf16.best_val_acc > 0.85  # and it still learns


def test_the_step_takes_every_option_of_the_config(small_data):
    """The config's regularisers, schedule and augmentation reach the step (the step itself is tested in test_regularisers)."""
    from mnist_lib.training.stacked import StackedMLP
    from mnist_lib.training.train import PopulationStep

    cfg = QUICK.replace(label_smoothing=0.1, max_norm=3.0, aug_rotate=10, lr_schedule="cosine")
    step = PopulationStep([cfg], StackedMLP([MLP.from_config(cfg)]), small_data, 10)
    assert (step.label_smoothing.tolist(), step.max_norm.tolist()) == ([pytest.approx(0.1)], [3.0]) and not step.plateaus
    assert step.lr_table[0] == 1.0 and step.lr_table[-1] == pytest.approx(0.0, abs=1e-9)  # cosine, over every step
    assert step.augment.rotate.tolist() == [[10.0]] and step.augment.background.item() == pytest.approx(-small_data.mean / small_data.std)
    assert len(PopulationStep([QUICK], StackedMLP([MLP.from_config(QUICK)]), small_data, 10).plateaus) == 1


def test_epoch_metrics_are_the_mean_loss_and_accuracy_over_the_training_split(small_data):
    """With a learning rate of 1e-12 the weights stay put during the epoch, so the epoch's train_loss and
    train_acc must equal one evaluation of the initial model on the whole training split (independently computed)."""
    cfg = QUICK.replace(epochs=1, lr=1e-12, dropout=tuple(0.0 for _ in QUICK.dropout), weight_decay=0.0)
    torch.manual_seed(cfg.seed)
    initial = MLP.from_config(cfg)  # train() builds the same weights from the same seed
    with torch.no_grad():
        logits = initial(small_data.x_train)
    expected_loss = torch.nn.functional.cross_entropy(logits, small_data.y_train).item()
    expected_acc = (logits.argmax(1) == small_data.y_train).float().mean().item()
    row = train(cfg, small_data, device="cpu", threads=2, progress=False).history[0]
    assert row["train_loss"] == pytest.approx(expected_loss, rel=1e-4)
    assert row["train_acc"] == pytest.approx(expected_acc, abs=1e-9)
    assert 0 < row["seconds"] < 600


def test_run_time_is_a_duration(small_data):
    result = train(QUICK.replace(epochs=2), small_data, device="cpu", threads=2, progress=False)
    assert 0 < sum(r["seconds"] for r in result.history) <= result.train_seconds < 600


def test_a_tie_keeps_the_earlier_epoch(small_data, monkeypatch):
    """Equal validation accuracy later is not an improvement: the first epoch to reach the best is kept."""
    train_mod = importlib.import_module("mnist_lib.training.train")
    scripted = iter([0.80, 0.90, 0.90])
    monkeypatch.setattr(train_mod, "evaluate_members", lambda model, x, y: ([1.0], [next(scripted)]))
    assert train(QUICK.replace(epochs=3), small_data, device="cpu", threads=2, progress=False).best_epoch == 2


def test_only_a_non_finite_validation_loss_also_stops_the_run(small_data, monkeypatch):
    train_mod = importlib.import_module("mnist_lib.training.train")
    losses = iter([1.0, float("nan"), 1.0])
    monkeypatch.setattr(train_mod, "evaluate_members", lambda model, x, y: ([next(losses)], [0.5]))
    result = train(QUICK.replace(epochs=3), small_data, device="cpu", threads=2, progress=False)
    assert result.status == "diverged" and len(result.history) == 2


def test_unavailable_devices_and_bad_thread_counts_are_one_clear_line(monkeypatch):
    from mnist_lib.core.errors import UserError
    from mnist_lib.training.device import set_threads

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: False)
    with pytest.raises(UserError, match="^device cuda requested but torch sees no CUDA GPU$"):
        select_device("cuda")
    with pytest.raises(UserError, match="^device mps requested but it is not available$"):
        select_device("mps")
    with pytest.raises(UserError, match="^unknown device 'tpu'; use auto, cpu, cuda, cuda:N or mps$"):
        select_device("tpu")
    assert select_device("auto") == torch.device("cpu")
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: True)
    assert select_device("auto") == torch.device("mps") and select_device("mps") == torch.device("mps")
    for name in ("meta", "xpu", "hpu", "cpu:1", "", "cuda:x"):  # torch knows most of these; this code trains on none
        with pytest.raises(UserError, match=f"^unknown device {name!r}; use auto, cpu, cuda, cuda:N or mps$"):
            select_device(name)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    assert select_device("auto") == torch.device("cuda") and select_device("cuda:1") == torch.device("cuda", 1)
    with pytest.raises(UserError, match=r"^device cuda:2 requested but torch sees 2 CUDA GPU\(s\), cuda:0 to cuda:1$"):
        select_device("cuda:2")
    cap = 4 * os.cpu_count()
    for bad in (0, -1, cap + 1, 1000, True):
        with pytest.raises(UserError, match=rf"^threads must be an integer in \[1, {cap}\] \(4 per core here\), got {bad}$"):
            set_threads(bad)
    assert set_threads(1) == 1


def test_without_a_validation_split_nothing_is_chosen_and_the_final_weights_are_kept(small_data):
    """The same trajectory as with validation (evaluating draws no random numbers), no val metrics, the last epoch's weights."""
    import dataclasses

    from mnist_lib.core.errors import UserError

    no_val = dataclasses.replace(small_data, x_val=small_data.x_val[:0], y_val=small_data.y_val[:0])
    with pytest.raises(UserError, match="lr_schedule plateau steps on the validation loss, and this data has no validation split"):
        train(QUICK, no_val, device="cpu", threads=2, progress=False)
    cfg = QUICK.replace(epochs=3, lr_schedule="cosine")
    seen = train(cfg, small_data, device="cpu", threads=2, progress=False)
    blind = train(cfg, no_val, device="cpu", threads=2, progress=False)
    assert [r["train_loss"] for r in blind.history] == [r["train_loss"] for r in seen.history]
    assert all(math.isnan(r["val_acc"]) and math.isnan(r["val_loss"]) for r in blind.history)
    assert (blind.status, blind.best_epoch, blind.validated) == ("completed", 3, False) and math.isnan(blind.best_val_acc)
    # the kept model is the last epoch's: on the validation images it scores what the validated run measured after epoch 3
    assert evaluate(blind.model, small_data.x_val, small_data.y_val)["acc"] == pytest.approx(seen.history[-1]["val_acc"])
