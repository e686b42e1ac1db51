"""The MLP: parameter count, shapes, configurable depth, dropout, and one step of learning."""

import pytest
import torch
import torch.nn.functional as F
from plain_torch import make_optimizer

from mnist_lib import MLP, Config, count_params
from mnist_lib.training.model import Dropout


def test_reference_parameter_count():
    assert count_params(MLP.from_config(Config())) == 567_434


@pytest.mark.parametrize("hidden", [(), (32,), (64, 32, 16, 8)])
def test_parameter_count_matches_formula(hidden):
    widths = [784, *hidden, 10]
    expected = sum(a * b + b for a, b in zip(widths[:-1], widths[1:], strict=True))
    model = MLP(hidden, [0.1] * len(hidden))
    assert count_params(model) == expected
    assert sum(isinstance(m, torch.nn.Linear) for m in model.modules()) == len(hidden) + 1


def test_forward_shapes_flat_and_image_input():
    model = MLP()
    assert model(torch.randn(7, 784)).shape == (7, 10)
    assert model(torch.randn(3, 28, 28)).shape == (3, 10)


def test_layer_order_is_linear_relu_dropout():
    kinds = [type(m).__name__ for m in MLP((8, 4), (0.4, 0.3)).net]
    assert kinds == ["Linear", "ReLU", "Dropout", "Linear", "ReLU", "Dropout", "Linear"]
    rates = [m.p for m in MLP((8, 4), (0.4, 0.3)).net if isinstance(m, Dropout)]
    assert rates == [0.4, 0.3]


def test_mismatched_dropout_is_refused():
    with pytest.raises(ValueError):
        MLP((8, 4), (0.1,))


@pytest.mark.parametrize("p", [0.1, 0.4, 0.7])
def test_dropout_keep_rate_and_scale(p):
    torch.manual_seed(0)
    drop = Dropout(p).train()
    out = drop(torch.ones(400, 1000))
    kept = out != 0
    assert abs(kept.float().mean().item() - (1 - p)) < 0.005  # 400k draws: std ~0.0008
    assert torch.allclose(out[kept], torch.tensor(1 / (1 - p)))
    assert abs(out.mean().item() - 1.0) < 0.01  # expectation preserved


def test_dropout_is_identity_in_eval_mode_and_backprops_through_mask():
    drop = Dropout(0.5)
    x = torch.randn(5, 6)
    assert torch.equal(drop.eval()(x), x)
    x = torch.randn(50, 60, requires_grad=True)
    out = drop.train()(x)
    out.sum().backward()
    assert torch.allclose(x.grad, (out.detach() != 0).float() * 2.0)


def test_one_optimizer_step_lowers_the_loss_on_a_fixed_batch():
    torch.manual_seed(0)
    cfg = Config(dropout=(0.0, 0.0, 0.0), lr=1e-3)
    model = MLP.from_config(cfg)
    x, y = torch.randn(64, 784), torch.randint(0, 10, (64,))
    opt = make_optimizer(model, cfg, torch.device("cpu"))
    before = F.cross_entropy(model(x), y)
    before.backward()
    opt.step()
    after = F.cross_entropy(model(x), y)
    assert after.item() < before.item() - 1e-3
