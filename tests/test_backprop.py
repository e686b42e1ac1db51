"""The hand-written ReLU step against autograd (the independent reference) and against the general engine, and bf16 training."""

import copy

import pytest
import torch
import torch.nn.functional as F

from mnist_lib import MLP, Config, train
from mnist_lib.training.backprop import ReluTrainStep as TrainStep
from mnist_lib.training.engine import bf16_supported
from mnist_lib.training.model import dropout_scale, keep_mask
from mnist_lib.training.train import make_optimizer, train_epoch


def autograd_grads(model, x, y, seed):
    """Gradients of the mean cross-entropy by autograd, dropout drawn after torch.manual_seed(seed)."""
    torch.manual_seed(seed)
    model.train()
    loss = F.cross_entropy(model(x), y)
    grads = torch.autograd.grad(loss, list(model.parameters()))
    return loss, grads


@pytest.mark.parametrize(
    "hidden, dropout",
    [((512, 256, 128), (0.4, 0.3, 0.3)), ((64,), (0.0,)), ((), ()), ((32, 16), (0.5, 0.0))],
)
def test_gradients_match_autograd(hidden, dropout):
    torch.manual_seed(0)
    model = MLP(hidden, dropout)
    x, y = torch.randn(96, 784), torch.randint(0, 10, (96,))
    ref_loss, ref_grads = autograd_grads(copy.deepcopy(model), x, y, seed=7)

    step = TrainStep(model, make_optimizer(model, Config(hidden=hidden, dropout=dropout), torch.device("cpu")))
    torch.manual_seed(7)  # the same dropout draws, in the same order
    loss_sum, correct = step.gradients(x, y)
    assert loss_sum.item() / len(y) == pytest.approx(ref_loss.item(), rel=1e-6)
    with torch.no_grad():
        torch.manual_seed(7)
        assert correct.item() == (model.train()(x).argmax(1) == y).sum().item()
    for p, ref in zip(model.parameters(), ref_grads, strict=True):
        torch.testing.assert_close(p.grad, ref, rtol=1e-5, atol=1e-7)


def test_step_updates_parameters_as_autograd_plus_adam():
    cfg = Config(hidden=(64, 32), dropout=(0.3, 0.2), lr=1e-3)
    torch.manual_seed(0)
    a = MLP.from_config(cfg)
    b = copy.deepcopy(a)
    x, y = torch.randn(64, 784), torch.randint(0, 10, (64,))
    opt_a = make_optimizer(a, cfg, torch.device("cpu"))
    step = TrainStep(b, make_optimizer(b, cfg, torch.device("cpu")))
    for i in range(3):
        _, grads = autograd_grads(a, x, y, seed=i)
        for p, g in zip(a.parameters(), grads, strict=True):
            p.grad = g
        opt_a.step()
        torch.manual_seed(i)
        step(x, y)
    for pa, pb in zip(a.parameters(), b.parameters(), strict=True):
        torch.testing.assert_close(pa, pb, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("p", [0.05, 0.3, 0.4, 0.9])
def test_keep_mask_drops_at_rate_p_and_scales_the_rest(p):
    torch.manual_seed(0)
    n = 2_000_000
    mask = keep_mask((n,), p)
    rate = (mask == 0).float().mean().item()
    assert abs(rate - p) < 5 * (p * (1 - p) / n) ** 0.5  # five standard errors
    assert torch.all(mask[mask != 0] == torch.tensor(1 / (1 - p)))
    assert dropout_scale(p) == mask.max().item()
    # bf16 rounds the factor to 8 bits; dropout_scale, which the hand-written backward uses, must agree
    assert keep_mask((1000,), p, torch.bfloat16).max().item() == dropout_scale(p, torch.bfloat16)
    assert dropout_scale(0.4, torch.bfloat16) == 1.6640625  # 1/0.6 = 1.6667 is not a bf16 number


def test_step_keeps_units_at_rate_one_minus_p_and_scales_them():
    torch.manual_seed(0)
    model = MLP((1000,), (0.4,))
    with torch.no_grad():  # every unit's pre-activation is 1, so only dropout zeroes it
        model.net[0].weight.zero_()
        model.net[0].bias.fill_(1.0)
    step = TrainStep(model, make_optimizer(model, Config(hidden=(1000,), dropout=(0.4,)), torch.device("cpu")))
    torch.manual_seed(1)
    step.gradients(torch.zeros(400, 784), torch.zeros(400, dtype=torch.long))
    grad_w = model.net[-1].weight.grad  # dW = g.T @ h: column j is zero exactly where unit j was dropped in every row
    assert grad_w.shape == (10, 1000)
    torch.manual_seed(1)
    h = torch.ones(400, 1000) * keep_mask((400, 1000), 0.4)
    assert abs((h != 0).float().mean().item() - 0.6) < 0.005
    logits = h @ model.net[-1].weight.t() + model.net[-1].bias
    g = (logits.softmax(1) - F.one_hot(torch.zeros(400, dtype=torch.long), 10)) / 400
    torch.testing.assert_close(grad_w, g.t() @ h, rtol=1e-5, atol=1e-7)


def test_epoch_syncs_with_the_host_once_not_per_step(monkeypatch):
    torch.manual_seed(0)
    model = MLP((32,), (0.2,))
    step = TrainStep(model, make_optimizer(model, Config(hidden=(32,), dropout=(0.2,)), torch.device("cpu")))
    calls = []
    real_item = torch.Tensor.item
    monkeypatch.setattr(torch.Tensor, "item", lambda self: calls.append(1) or real_item(self))
    x, y = torch.randn(640, 784), torch.randint(0, 10, (640,))
    train_epoch(step, x, y, 32, torch.Generator().manual_seed(0))  # 20 steps
    assert len(calls) == 2  # the loss and the accuracy sums, after the last step


def test_bf16_gradients_are_close_to_fp32():
    if not bf16_supported("cpu"):
        pytest.fail("this CPU has no native bf16 matmul (AVX-512-BF16 or AMX); the bf16 tests need one")
    torch.manual_seed(0)
    model = MLP()
    x, y = torch.randn(128, 784), torch.randint(0, 10, (128,))
    _, ref = autograd_grads(copy.deepcopy(model), x, y, seed=3)
    step = TrainStep(model, make_optimizer(model, Config(), torch.device("cpu")), "bf16")
    torch.manual_seed(3)
    step.gradients(x, y)
    for p, r in zip(model.parameters(), ref, strict=True):
        assert p.grad.dtype == torch.float32
        cos = F.cosine_similarity(p.grad.flatten(), r.flatten(), dim=0).item()
        assert cos > 0.99, cos


def test_bf16_training_learns(small_data):
    cfg = Config(epochs=2, batch_size=64, lr=2e-3, hidden=(256, 128), dropout=(0.1, 0.1), precision="bf16")
    result = train(cfg, small_data, device="cpu", threads=2, progress=False)
    assert result.status == "completed"
    assert result.best_val_acc > 0.90
    assert all(p.dtype == torch.float32 for p in result.model.parameters())
