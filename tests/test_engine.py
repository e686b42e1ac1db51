"""The training engine with every optimizer, activation and norm, against networks and optimizers built by hand with torch.

The reference in each test is written independently of mnist_lib: a torch.nn.Sequential
assembled layer by layer and a torch.optim optimizer constructed directly, started from
the same initial weights. The engine's step (a population of one, conftest.OneMember)
must leave the same parameters (and BatchNorm buffers) after a few steps.
"""

import copy

import pytest
import torch
import torch.nn.functional as F
from conftest import OneMember
from plain_torch import make_optimizer
from torch import nn

from mnist_lib import MLP, Config, train
from mnist_lib.data.splits import Data
from mnist_lib.training.evaluate import evaluate, predict_logits
from mnist_lib.training.train import make_scheduler

CPU = torch.device("cpu")
SMALL = {"hidden": (32, 16), "dropout": (0.0, 0.0)}  # no dropout: the reference draws no masks


def by_hand(cfg: Config, model: nn.Module) -> nn.Sequential:
    """The network cfg describes, assembled with torch.nn alone, holding `model`'s initial weights."""
    make_act = {
        "relu": nn.ReLU,
        "gelu": nn.GELU,
        "silu": nn.SiLU,
        "tanh": nn.Tanh,
        "leaky_relu": lambda: nn.LeakyReLU(negative_slope=0.01),
    }[cfg.activation]
    layers, width = [nn.Flatten()], 784
    for h in cfg.hidden:
        layers.append(nn.Linear(width, h, bias=cfg.norm != "batch"))
        if cfg.norm == "batch":
            layers.append(nn.BatchNorm1d(h))
        elif cfg.norm == "layer":
            layers.append(nn.LayerNorm(h))
        layers.append(make_act())
        width = h
    layers.append(nn.Linear(width, 10))
    ref = nn.Sequential(*layers)
    with torch.no_grad():
        for (name, a), b in zip(ref.named_parameters(), model.parameters(), strict=True):
            assert a.shape == b.shape, name
            a.copy_(b)
    return ref


def optimizer_by_hand(cfg: Config, params) -> torch.optim.Optimizer:
    """torch.optim's own (unfused) implementation of cfg's optimizer."""
    if cfg.optimizer == "adam":
        return torch.optim.Adam(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    if cfg.optimizer == "adamw":
        return torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    return torch.optim.SGD(params, lr=cfg.lr, momentum=cfg.momentum, nesterov=cfg.nesterov, weight_decay=cfg.weight_decay)


def batches(n_steps: int, size: int = 64):
    g = torch.Generator().manual_seed(1)
    return [(torch.randn(size, 784, generator=g), torch.randint(0, 10, (size,), generator=g)) for _ in range(n_steps)]


def run_both(cfg: Config, n_steps: int = 3):
    """(library model after n_steps of the engine, reference after n_steps by hand), from the same initial weights."""
    torch.manual_seed(0)
    model = MLP.from_config(cfg)
    ref = by_hand(cfg, model)
    step = OneMember(model, cfg)
    opt = optimizer_by_hand(cfg, ref.parameters())
    for x, y in batches(n_steps):
        step(x, y)
        opt.zero_grad()
        F.cross_entropy(ref(x), y, label_smoothing=cfg.label_smoothing).backward()
        opt.step()
    return model, ref


def assert_same_state(model: nn.Module, ref: nn.Module, atol: float = 1e-5) -> None:
    mine, theirs = list(model.state_dict().values()), list(ref.state_dict().values())
    assert len(mine) == len(theirs)
    for a, b in zip(mine, theirs, strict=True):
        torch.testing.assert_close(a.float(), b.float(), rtol=1e-5, atol=atol)


@pytest.mark.parametrize(
    "options",
    [
        {"optimizer": "adam"},
        {"optimizer": "adamw", "weight_decay": 0.1, "lr": 1e-2},
        {"optimizer": "sgd", "lr": 0.05},
        {"optimizer": "sgd", "lr": 0.05, "momentum": 0.9},
        {"optimizer": "sgd", "lr": 0.05, "momentum": 0.9, "nesterov": True, "weight_decay": 1e-3},
    ],
    ids=lambda o: "-".join(f"{k}={v}" for k, v in o.items()),
)
def test_each_optimizer_matches_torch_optim(options):
    model, ref = run_both(Config(**SMALL, **options))
    assert_same_state(model, ref)


def test_adamw_decays_decoupled_not_as_l2():
    """AdamW and Adam with the same weight decay end in different places: the decay is applied differently."""
    adamw, _ = run_both(Config(**SMALL, optimizer="adamw", weight_decay=0.1, lr=1e-2))
    adam, _ = run_both(Config(**SMALL, optimizer="adam", weight_decay=0.1, lr=1e-2))
    assert max((a - b).abs().max().item() for a, b in zip(adamw.parameters(), adam.parameters(), strict=True)) > 1e-4


@pytest.mark.parametrize("norm", ["none", "batch", "layer"])
@pytest.mark.parametrize("activation", ["relu", "gelu", "silu", "tanh", "leaky_relu"])
def test_each_activation_and_norm_matches_torch_nn(activation, norm):
    cfg = Config(**SMALL, activation=activation, norm=norm, label_smoothing=0.1)
    model, ref = run_both(cfg)
    assert_same_state(model, ref)  # BatchNorm's running mean, variance and batch count included
    x, _ = batches(1)[0]
    torch.testing.assert_close(predict_logits(model, x), ref.eval()(x), rtol=1e-5, atol=1e-5)  # eval mode: running statistics


def test_layer_order_is_linear_norm_activation_dropout():
    model = MLP((8, 4), (0.4, 0.3), activation="gelu", norm="batch")
    kinds = [type(m).__name__ for m in model.net]
    assert kinds == ["Linear", "BatchNorm1d", "GELU", "Dropout", "Linear", "BatchNorm1d", "GELU", "Dropout", "Linear"]
    assert model.net[0].bias is None and model.net[-1].bias is not None  # BatchNorm cancels a bias before it
    assert [type(m).__name__ for m in MLP((8,), (0.1,), norm="layer").net] == ["Linear", "LayerNorm", "ReLU", "Dropout", "Linear"]


def test_batchnorm_evaluates_on_running_statistics_whatever_the_batch():
    """In eval mode each example's output is independent of the others; evaluated in training mode it is not."""
    cfg = Config(**SMALL, norm="batch")
    model, _ = run_both(cfg, n_steps=5)
    x, y = batches(1, size=200)[0]
    whole = predict_logits(model, x)
    one_by_one = predict_logits(model, x, batch_size=1)
    torch.testing.assert_close(whole, one_by_one, rtol=1e-5, atol=1e-5)
    bn = model.net[1]
    manual = (model.net[0](x) - bn.running_mean) / torch.sqrt(bn.running_var + bn.eps) * bn.weight + bn.bias
    torch.testing.assert_close(model.eval().net[1](model.net[0](x)), manual, rtol=1e-5, atol=1e-5)
    model.train()
    with torch.no_grad():
        train_mode = copy.deepcopy(model)(x)  # a copy: in training mode BatchNorm would also move its running statistics
    assert (train_mode - whole).abs().max() > 1e-3  # batch statistics: what evaluating in training mode would give
    assert evaluate(model, x, y)["loss"] == pytest.approx(F.cross_entropy(whole, y).item(), rel=1e-5)
    assert model.training  # evaluate restores the mode it found


def test_evaluating_in_training_mode_would_be_caught(monkeypatch):
    """The check above fails when predict_logits forgets model.eval(): the same assertion on a broken version."""
    cfg = Config(**SMALL, norm="batch")
    model, _ = run_both(cfg, n_steps=5)
    x, _ = batches(1, size=200)[0]
    monkeypatch.setattr(torch.nn.Module, "eval", lambda self: self)  # a predict_logits that stays in training mode
    with torch.no_grad():
        whole, one_by_one = predict_logits(model, x), predict_logits(model, x, batch_size=2)
    assert (whole - one_by_one).abs().max() > 1e-3


def test_one_cycle_cycles_sgd_momentum_and_adam_beta1():
    def momenta(**changes):
        cfg = Config(**SMALL, lr_schedule="onecycle", epochs=1, **changes)
        opt = make_optimizer(MLP.from_config(cfg), cfg, CPU)
        _, sched = make_scheduler(opt, cfg, steps_per_epoch=20)
        key = "momentum" if cfg.optimizer == "sgd" else "betas"
        out = []
        for _ in range(20):
            m = opt.param_groups[0][key]
            out.append(m if cfg.optimizer == "sgd" else m[0])
            opt.step()
            sched.step()
        return out

    sgd = momenta(optimizer="sgd", momentum=0.9, lr=0.05)
    assert sgd[0] == pytest.approx(0.9) and min(sgd) == pytest.approx(0.9 * 0.85 / 0.95, abs=1e-3)
    assert sgd.index(min(sgd)) in (5, 6)  # the lowest momentum at the lr's peak, 30 % of the way
    adam = momenta()
    assert adam[0] == pytest.approx(0.95) and min(adam) == pytest.approx(0.85, abs=1e-3)
    assert momenta(optimizer="sgd", lr=0.05) == [0.0] * 20  # plain SGD has no momentum to cycle


@pytest.mark.parametrize(
    "options",
    [
        {"activation": "gelu", "norm": "batch", "optimizer": "sgd", "lr": 0.05, "momentum": 0.9, "nesterov": True,
         "lr_schedule": "onecycle", "aug_rotate": 10.0, "aug_translate": 2.0, "input_dropout": 0.1, "label_smoothing": 0.1,
         "max_norm": 3.0, "precision": "bf16"},
        {"activation": "silu", "norm": "layer", "optimizer": "adamw", "weight_decay": 0.01, "lr_schedule": "cosine",
         "aug_elastic_alpha": 2.0, "lr": 2e-3},
        {"activation": "tanh", "precision": "bf16", "lr": 2e-3},
        {"activation": "leaky_relu", "norm": "batch", "optimizer": "sgd", "lr": 0.1, "momentum": 0.5},
    ],
    ids=["gelu-batch-sgd-all-options-bf16", "silu-layer-adamw-cosine-elastic", "tanh-bf16", "leaky-batch-sgd"],
)  # fmt: skip
def test_every_new_option_trains_with_the_existing_ones(small_data, options):
    cfg = Config(epochs=1, hidden=(128, 64), dropout=(0.2, 0.1), **options)
    result = train(cfg, small_data, device="cpu", threads=2, progress=False)
    assert result.status == "completed"
    assert result.best_val_acc > 0.85, result.history
    assert all(p.dtype == torch.float32 for p in result.model.parameters())


def test_an_epoch_syncs_with_the_host_once_not_per_step(monkeypatch):
    """No .item() or .tolist() per step: the loss and accuracy sums come back to the host once, at the epoch's end."""
    from mnist_lib.training.train import population_epoch

    torch.manual_seed(0)
    cfg = Config(hidden=(32,), dropout=(0.2,), activation="gelu", norm="batch")
    step = OneMember(MLP.from_config(cfg), cfg).step
    calls = []
    for name in ("item", "tolist", "__bool__", "__float__", "__int__"):
        real = getattr(torch.Tensor, name)
        monkeypatch.setattr(torch.Tensor, name, lambda self, *a, real=real, name=name: calls.append(name) or real(self, *a))
    gens = [torch.Generator().manual_seed(0)]
    population_epoch(step, torch.randn(640, 784), torch.randint(0, 10, (640,)), 32, gens)
    assert calls == ["tolist", "tolist"]  # the epoch's loss and accuracy sums, 20 steps


def test_batchnorm_skips_a_last_batch_of_one_and_refuses_batch_size_one(small_data):
    from mnist_lib.core.errors import UserError

    cfg = Config(**SMALL, norm="batch", epochs=1, batch_size=64)
    subset = Data(small_data.x_train[:129], small_data.y_train[:129], small_data.x_val, small_data.y_val, 0.0, 1.0, "", None, None)
    result = train(cfg, subset, device="cpu", threads=1, progress=False)  # 64 + 64 + 1: the single example is skipped
    assert result.status == "completed"
    assert 0 <= result.history[0]["train_acc"] <= 1
    for config, min_batch in ((cfg, 2), (Config(), 1)):
        assert OneMember(MLP.from_config(config), config).step.min_batch == min_batch
    with pytest.raises(UserError, match="norm batch needs batch_size >= 2"):
        Config(norm="batch", batch_size=1)


OPS_BUDGET = 100  # top-level ATen ops per training step of the reference config: on a GPU each one is a kernel launch


@pytest.mark.parametrize("members", [1, 64])
def test_a_reference_step_stays_within_its_op_budget(members):
    """benchmarks/ops.py's count, as a guard: the step grows past 100 ops only by a change someone must see."""
    import importlib.util
    from pathlib import Path

    path = Path(__file__).parents[1] / "benchmarks" / "ops.py"
    spec = importlib.util.spec_from_file_location("benchmark_ops", path)
    ops = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(ops)
    count = ops.ops_per_step(Config(), members, steps=2, warmup=2)
    assert 40 < count <= OPS_BUDGET, count  # the lower bound: a count that lost the backward would be wrong, not lean
