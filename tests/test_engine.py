"""The autograd engine with every optimizer, activation and norm, against networks and optimizers built by hand with torch.

The reference in each test is written independently of mnist_lib: a torch.nn.Sequential
assembled layer by layer and a torch.optim optimizer constructed directly, started from
the same initial weights. The library's step must leave the same parameters (and
BatchNorm buffers) after a few steps.
"""

import copy

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from mnist_lib import MLP, Config, train
from mnist_lib.data.splits import Data
from mnist_lib.training.backprop import ReluTrainStep
from mnist_lib.training.engine import TrainStep, bf16_supported
from mnist_lib.training.evaluate import evaluate, predict_logits
from mnist_lib.training.train import build_step, make_optimizer, make_scheduler

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


def run_both(cfg: Config, n_steps: int = 3, step_class=TrainStep):
    """(library model after n_steps of step_class, reference after n_steps by hand), from the same initial weights."""
    torch.manual_seed(0)
    model = MLP.from_config(cfg)
    ref = by_hand(cfg, model)
    step = step_class(model, make_optimizer(model, cfg, CPU), label_smoothing=cfg.label_smoothing)
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
@pytest.mark.parametrize("step_class", [ReluTrainStep, TrainStep], ids=["hand-written", "autograd"])
def test_each_optimizer_matches_torch_optim(options, step_class):
    model, ref = run_both(Config(**SMALL, **options), step_class=step_class)
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


def test_build_step_takes_the_hand_written_path_only_for_plain_relu():
    def step_type(**changes):
        cfg = Config(**SMALL, **changes)
        data = Data(torch.zeros(10, 784), torch.zeros(10, dtype=torch.long), None, None, 0.1, 0.3, "", None, None)
        return type(build_step(MLP.from_config(cfg), cfg, data, CPU)[0])

    assert step_type() is ReluTrainStep
    assert step_type(optimizer="sgd", momentum=0.9, input_dropout=0.1, max_norm=2.0, label_smoothing=0.1) is ReluTrainStep
    assert step_type(activation="gelu") is TrainStep
    assert step_type(norm="layer") is TrainStep
    assert step_type(activation="leaky_relu", norm="batch") is TrainStep
    with pytest.raises(ValueError, match="relu activations and no norm"):
        ReluTrainStep(MLP(activation="tanh"), torch.optim.SGD(MLP().parameters(), lr=0.1))


@pytest.mark.parametrize("options", [{}, {"input_dropout": 0.2, "label_smoothing": 0.1, "max_norm": 1.0, "aug_rotate": 10.0}])
def test_the_hand_written_step_equals_the_general_engine(options):
    """Same seed, same masks and augmentation draws: the fast path and autograd agree to 1e-5 over several steps."""
    cfg = Config(hidden=(64, 32), dropout=(0.3, 0.2), **options)
    data = Data(torch.zeros(10, 784), torch.zeros(10, dtype=torch.long), None, None, 0.1307, 0.3081, "", None, None)
    models = []
    for engine in ("manual", "autograd"):
        torch.manual_seed(0)
        model = MLP.from_config(cfg)
        step, _ = build_step(model, cfg, data, CPU, engine)
        torch.manual_seed(5)
        for x, y in batches(4):
            step(x, y)
        models.append(model)
    assert_same_state(*models)


def test_the_hand_written_step_equals_the_general_engine_in_bf16():
    """In bf16 the two paths share every rounding, so weight gradients agree far inside bf16's 0.4 % step.

    A backward that scaled by the exact 1 / (1 - p) instead of keep_mask's bf16-rounded
    scale would be off by 0.08-0.27 % per dropped layer (caught at rtol 1e-4). The bias
    gradients differ by one bf16 rounding: autograd sums them in bf16, the fast path in fp32.
    """
    if not bf16_supported("cpu"):
        pytest.fail("this CPU has no native bf16 matmul (AVX-512-BF16 or AMX); the bf16 tests need one")
    cfg = Config(dropout=(0.4, 0.3, 0.15), input_dropout=0.2)
    torch.manual_seed(0)
    model = MLP.from_config(cfg)
    x, y = batches(1, 128)[0]
    grads, losses = [], []
    for step_class in (ReluTrainStep, TrainStep):
        m = copy.deepcopy(model)
        for p in m.parameters():
            p.grad = torch.zeros_like(p)
        step = step_class(m, make_optimizer(m, cfg, CPU), "bf16")
        torch.manual_seed(3)
        losses.append(step.gradients(x, y)[0])
        grads.append({name: p.grad for name, p in m.named_parameters()})
    torch.testing.assert_close(losses[0], losses[1], rtol=1e-4, atol=0)  # summation order only
    for name, grad in grads[0].items():
        if name.endswith("weight"):
            torch.testing.assert_close(grad, grads[1][name], rtol=1e-4, atol=1e-9, msg=name)
        else:
            torch.testing.assert_close(grad, grads[1][name], rtol=1e-2, atol=1e-4, msg=name)


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


def test_epoch_of_the_autograd_engine_syncs_once(monkeypatch):
    from mnist_lib.training.train import train_epoch

    torch.manual_seed(0)
    cfg = Config(hidden=(32,), dropout=(0.2,), activation="gelu", norm="batch")
    model = MLP.from_config(cfg)
    step = TrainStep(model, make_optimizer(model, cfg, CPU))
    calls = []
    real_item = torch.Tensor.item
    monkeypatch.setattr(torch.Tensor, "item", lambda self: calls.append(1) or real_item(self))
    train_epoch(step, torch.randn(640, 784), torch.randint(0, 10, (640,)), 32, torch.Generator().manual_seed(0))
    assert len(calls) == 2  # the epoch's loss and accuracy sums


def test_the_engine_trains_any_module_not_only_an_mlp():
    """Nothing in the step knows the network: a model the library never built trains as well."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(784, 16), nn.Hardswish(), nn.Linear(16, 10))
    ref = copy.deepcopy(model)
    step = TrainStep(model, torch.optim.SGD(model.parameters(), lr=0.1))
    opt = torch.optim.SGD(ref.parameters(), lr=0.1)
    for x, y in batches(3):
        step(x, y)
        opt.zero_grad()
        F.cross_entropy(ref(x), y).backward()
        opt.step()
    assert_same_state(model, ref)


def test_batchnorm_skips_a_last_batch_of_one_and_refuses_batch_size_one(small_data):
    from mnist_lib.core.errors import UserError

    cfg = Config(**SMALL, norm="batch", epochs=1, batch_size=64)
    subset = Data(small_data.x_train[:129], small_data.y_train[:129], small_data.x_val, small_data.y_val, 0.0, 1.0, "", None, None)
    result = train(cfg, subset, device="cpu", threads=1, progress=False)  # 64 + 64 + 1: the single example is skipped
    assert result.status == "completed"
    assert 0 <= result.history[0]["train_acc"] <= 1
    for model, min_batch in ((MLP.from_config(cfg), 2), (MLP(), 1)):
        assert TrainStep(model, torch.optim.SGD(model.parameters(), lr=0.1)).min_batch == min_batch
    with pytest.raises(UserError, match="norm batch needs batch_size >= 2"):
        Config(norm="batch", batch_size=1)
