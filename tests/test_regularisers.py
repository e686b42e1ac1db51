"""Label smoothing, max-norm, input dropout and the learning-rate schedules, each against an independent computation.

The engine's step is driven for a population of one (conftest.OneMember) and compared with plain autograd on a copy of the model.
"""

import contextlib
import copy
import math

import pytest
import torch
import torch.nn.functional as F
from conftest import OneMember
from plain_torch import make_optimizer

from mnist_lib import MLP, Config, train
from mnist_lib.core.errors import UserError
from mnist_lib.training.train import make_scheduler


@pytest.fixture
def step_for():
    """step_for(model, cfg, **changes): the engine's step for `model` alone, with these config fields changed."""
    return OneMember


@pytest.mark.parametrize("eps", [0.1, 0.3])
def test_label_smoothing_matches_torch_cross_entropy(eps, step_for):
    torch.manual_seed(0)
    cfg = Config(hidden=(64,), dropout=(0.0,))
    model = MLP.from_config(cfg)
    x, y = torch.randn(50, 784), torch.randint(0, 10, (50,))
    ref = copy.deepcopy(model)
    loss = F.cross_entropy(ref(x), y, label_smoothing=eps)
    grads = torch.autograd.grad(loss, list(ref.parameters()))
    loss_sum, _ = step_for(model, cfg, label_smoothing=eps).gradients(x, y)
    assert loss_sum.item() / 50 == pytest.approx(loss.item(), rel=1e-6)
    for p, g in zip(model.parameters(), grads, strict=True):
        torch.testing.assert_close(p.grad, g, rtol=1e-5, atol=1e-7)


def test_input_dropout_matches_autograd_with_the_same_mask(step_for):
    cfg = Config(hidden=(32,), dropout=(0.2,), input_dropout=0.25)
    torch.manual_seed(0)
    model = MLP.from_config(cfg)
    assert [type(m).__name__ for m in model.net][:2] == ["Dropout", "Linear"] and model.dropout_rates() == [0.2]
    x, y = torch.randn(40, 784), torch.randint(0, 10, (40,))
    x_before = x.clone()
    ref = copy.deepcopy(model).train()
    torch.manual_seed(3)
    grads = torch.autograd.grad(F.cross_entropy(ref(x), y), list(ref.parameters()))
    torch.manual_seed(3)
    step_for(model, cfg).gradients(x, y)
    assert torch.equal(x, x_before)  # the caller's batch is not masked in place
    for p, g in zip(model.parameters(), grads, strict=True):
        torch.testing.assert_close(p.grad, g, rtol=1e-5, atol=1e-7)


def test_max_norm_rescales_exactly_the_rows_over_the_cap(step_for):
    cfg = Config(hidden=(64, 32), dropout=(0.0, 0.0), lr=0.005)  # rows end up with norms 0.51-0.63: some over the cap, some under
    torch.manual_seed(0)
    a = MLP.from_config(cfg)
    b = copy.deepcopy(a)
    x, y = torch.randn(32, 784) * 5, torch.randint(0, 10, (32,))
    step_for(a, cfg, max_norm=0.58)(x, y)
    step_for(b, cfg)(x, y)
    with torch.no_grad():  # the reference: scale each over-long hidden row back to norm 0.58
        for lin in b.linears()[:-1]:
            norms = lin.weight.norm(dim=1, keepdim=True)
            assert (norms > 0.58).any() and (norms <= 0.58).any()  # both cases occur
            lin.weight.copy_(torch.where(norms > 0.58, lin.weight * (0.58 / norms), lin.weight))
    for pa, pb in zip(a.parameters(), b.parameters(), strict=True):  # the output layer is not capped
        torch.testing.assert_close(pa, pb, rtol=1e-5, atol=1e-6)
    assert all(lin.weight.norm(dim=1).max() <= 0.58 + 1e-5 for lin in a.linears()[:-1])


@pytest.mark.parametrize("schedule", ["cosine", "onecycle"])
def test_per_step_schedules_follow_their_formula(schedule):
    cfg = Config(lr=1e-3, epochs=2, lr_schedule=schedule)
    model = MLP((8,), (0.0,))
    opt = make_optimizer(model, cfg, torch.device("cpu"))
    plateau, sched = make_scheduler(opt, cfg, steps_per_epoch=5)
    assert plateau is None
    lrs = []
    for _ in range(10):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    if schedule == "cosine":
        assert lrs == pytest.approx([1e-3 * (1 + math.cos(math.pi * t / 10)) / 2 for t in range(10)])
    else:  # starts at lr / 25, peaks at lr after 30 % of the steps, ends near 0
        assert lrs[0] == pytest.approx(1e-3 / 25) and max(lrs) == pytest.approx(1e-3, rel=1e-3) and lrs[-1] < 1e-4
        assert lrs.index(max(lrs)) in (2, 3)


def test_plateau_is_the_default_schedule():
    model = MLP((8,), (0.0,))
    plateau, per_step = make_scheduler(make_optimizer(model, Config(), torch.device("cpu")), Config(), 10)
    assert isinstance(plateau, torch.optim.lr_scheduler.ReduceLROnPlateau) and per_step is None


@pytest.mark.parametrize(
    "changes, message",
    [
        ({"label_smoothing": 1.0}, "label_smoothing must be in"),
        ({"label_smoothing": -0.1}, "label_smoothing must be in"),
        ({"max_norm": -1.0}, "max_norm must be >= 0"),
        ({"max_norm": float("inf")}, "max_norm must be >= 0"),
        ({"input_dropout": 1.0}, "input_dropout must be in"),
        ({"lr_schedule": "step"}, "lr_schedule must be one of plateau, cosine, onecycle"),
    ],
)
def test_new_fields_are_validated(changes, message):
    with pytest.raises(UserError, match=message):
        Config(**changes)


def test_all_options_together_train_and_learn(small_data):
    cfg = Config(epochs=2, batch_size=64, lr=2e-3, hidden=(256, 128), dropout=(0.1, 0.1),
                 label_smoothing=0.1, max_norm=3.0, input_dropout=0.1, lr_schedule="onecycle")  # fmt: skip
    result = train(cfg, small_data, device="cpu", threads=2, progress=False)
    assert result.status == "completed" and result.best_val_acc > 0.90
    assert result.history[1]["lr"] != result.history[0]["lr"]


def test_sweep_files_and_the_cli_accept_the_new_fields(tmp_path, capsys, mnist_dir):
    import json

    import yaml

    from mnist_lib.cli import main
    from mnist_lib.workflows.sweep_spec import load_spec, refine_space

    grid = {"lr_schedule": ["plateau", "onecycle"], "label_smoothing": [0.0, 0.1], "aug_rotate": [0.0, 10.0],
            "activation": ["relu", "gelu"], "norm": ["none", "batch"], "nesterov": [False, True]}  # fmt: skip
    base = {"max_norm": 3.0, "input_dropout": 0.1, "aug_elastic_alpha": 2.0, "optimizer": "sgd", "momentum": 0.9, "dataset": "mnist"}
    path = tmp_path / "s.yaml"
    path.write_text(yaml.safe_dump({"base": base, "grid": grid}))
    spec = load_spec(path)
    configs = [spec.config_for(p) for p in spec.grid_points()]
    assert len(configs) == 64 and {c.lr_schedule for c in configs} == {"plateau", "onecycle"}
    assert {(c.activation, c.norm, c.nesterov) for c in configs} == {
        (a, n, v) for a in ("relu", "gelu") for n in ("none", "batch") for v in (False, True)
    }
    assert all(c.max_norm == 3.0 and c.aug_elastic_alpha == 2.0 and (c.optimizer, c.momentum) == ("sgd", 0.9) for c in configs)
    space = refine_space(spec, spec.grid_points()[:2])
    choice = json.loads(space["_choice"]["choices"][0])
    assert {"lr_schedule", "activation", "norm", "nesterov"} <= set(choice)  # strings and booleans are categorical in refinement
    assert space["label_smoothing"]["type"] == "float"
    for bad_grid, message in [
        ({"lr_schedule": ["plateau", "step"]}, "lr_schedule must be one of plateau, cosine, onecycle"),
        ({"activation": ["relu", "swish"]}, "activation must be one of relu, gelu, silu, tanh, leaky_relu, got 'swish'"),
        ({"norm": ["group"]}, "norm must be one of none, batch, layer"),
        ({"optimizer": ["adam", "rmsprop"]}, "optimizer must be one of adam, adamw, sgd"),
        ({"dataset": ["emnist"]}, "dataset must be one of mnist, fashion-mnist, kmnist"),
        ({"momentum": [0.0, 0.9]}, "momentum and nesterov are sgd's; adam has its own"),
        ({"nesterov": ["yes"]}, "nesterov must be true or false"),
    ]:
        bad = tmp_path / "bad.yaml"
        bad.write_text(yaml.safe_dump({"grid": bad_grid}))
        with pytest.raises(UserError, match=message):
            load_spec(bad)

    run_dir = tmp_path / "run"
    code = main(["train", "--epochs", "1", "--max-train-samples", "500", "--hidden", "32", "--dropout", "0.1", "--lr-schedule", "cosine",
                 "--label-smoothing", "0.1", "--max-norm", "3", "--input-dropout", "0.1", "--aug-rotate", "10", "--aug-elastic-alpha", "2",
                 "--dataset", "mnist", "--optimizer", "sgd", "--lr", "0.05", "--momentum", "0.9", "--nesterov", "--activation", "gelu",
                 "--norm", "layer", "--run-dir", str(run_dir), "--quiet", "--threads", "2"])  # fmt: skip
    assert code == 0
    cfg = json.loads((run_dir / "config.json").read_text())
    assert cfg["lr_schedule"] == "cosine" and cfg["label_smoothing"] == 0.1 and cfg["aug_elastic_alpha"] == 2.0
    assert (cfg["dataset"], cfg["optimizer"], cfg["momentum"], cfg["nesterov"]) == ("mnist", "sgd", 0.9, True)
    assert (cfg["activation"], cfg["norm"]) == ("gelu", "layer")
    for flags, message in [
        (["--momentum", "0.9"], "momentum and nesterov are sgd's; adam has its own"),
        (["--optimizer", "sgd", "--nesterov"], "nesterov needs momentum > 0"),
        (
            ["--activation", "swish"],
            "argument --activation: invalid choice: 'swish' (choose from 'relu', 'gelu', 'silu', 'tanh', 'leaky_relu')",
        ),
        (["--norm", "group"], "invalid choice: 'group'"),
        (["--dataset", "emnist"], "invalid choice: 'emnist' (choose from 'mnist', 'fashion-mnist', 'kmnist')"),
    ]:
        capsys.readouterr()
        with pytest.raises(SystemExit) if "invalid choice" in message else contextlib.nullcontext():
            assert main(["train", *flags, "--run-dir", str(tmp_path / "refused"), "--quiet"]) == 2
        err = capsys.readouterr().err
        assert message in err and err.count("\n") == 1, err
        assert not (tmp_path / "refused").exists()
