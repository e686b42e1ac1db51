"""Population training against single runs: the same gradients, the same updates, the same schedules, independent members.

The references are the library's single-model path (engine.TrainStep, train()) and
torch.optim's own optimizers and schedulers, never the population code itself.
"""

import json
import math

import pytest
import torch

from mnist_lib import MLP, Config, load_model, train
from mnist_lib.core.errors import UserError
from mnist_lib.training import model as model_module
from mnist_lib.training import population
from mnist_lib.training.engine import TrainStep
from mnist_lib.training.population import (
    PopulationStep,
    StackedMLP,
    StackedOptimizer,
    check_compatible,
    evaluate_members,
    group_configs,
    keep_masks,
    schedule_table,
    train_population,
)
from mnist_lib.training.train import make_optimizer, make_scheduler

CPU = torch.device("cpu")


def members_of(configs):
    models = []
    for cfg in configs:
        torch.manual_seed(cfg.seed)
        models.append(MLP.from_config(cfg))
    return models


def paired_grads(stacked: StackedMLP, single: MLP, m: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """(member m's gradient, the single model's) for every parameter, matched layer by layer."""
    pairs = []
    for i, lin in enumerate(single.linears()):
        pairs.append((stacked.weights[i].grad[m], lin.weight.grad))
        if lin.bias is not None:
            pairs.append((stacked.biases[i].grad[m, 0], lin.bias.grad))
    norms = single.norm_layers()
    for i, norm in enumerate(norms):
        pairs += [(stacked.norm_weights[i].grad[m, 0], norm.weight.grad), (stacked.norm_biases[i].grad[m, 0], norm.bias.grad)]
    return pairs


def fake_data(n=10):
    from mnist_lib.data.splits import Data

    return Data(torch.zeros(n, 784), torch.zeros(n, dtype=torch.long), None, None, 0.1307, 0.3081, "", None, None)


@pytest.mark.parametrize(
    "shared",
    [
        {},
        {"norm": "batch"},
        {"norm": "layer", "activation": "gelu"},
        {"activation": "tanh", "optimizer": "sgd", "lr": 0.05},
    ],
    ids=["relu", "batchnorm", "layernorm-gelu", "tanh-sgd"],
)
def test_a_members_one_step_gradients_equal_a_single_models(monkeypatch, shared):
    """Same batch, same dropout masks: each member's gradients are its single model's, to 1e-5."""
    base = Config(hidden=(48, 24), dropout=(0.3, 0.0), **shared)
    configs = [
        base.replace(seed=0),
        base.replace(seed=1, dropout=(0.1, 0.2), label_smoothing=0.1),
        base.replace(seed=2, dropout=(0.0, 0.5), input_dropout=0.2),
    ]
    singles = members_of(configs)
    stacked = StackedMLP.from_members(members_of(configs))
    drawn = []  # (rates, masks) of every population draw, in order

    def recording(shape, p, dtype):
        mask = keep_masks(shape, p, dtype)
        drawn.append((p.clone(), mask))
        return mask

    monkeypatch.setattr(population, "keep_masks", recording)
    torch.manual_seed(7)
    x, y = torch.randn(3, 32, 784), torch.randint(0, 10, (3, 32))
    step = PopulationStep(configs, stacked, fake_data(), 10)
    losses, _ = step.gradients(x, y)
    monkeypatch.undo()
    for m, (cfg, single) in enumerate(zip(configs, singles, strict=True)):
        # member m's own masks, for the layers where it drops anything (a rate-0 Dropout draws none)
        mine = [mask[m] for rates, mask in drawn if rates[m] > 0]
        monkeypatch.setattr(model_module, "keep_mask", lambda shape, p, dtype, device, it=iter(mine): next(it))
        single_step = TrainStep(single, make_optimizer(single, cfg, CPU), label_smoothing=cfg.label_smoothing)
        loss, _ = single_step.gradients(x[m], y[m])
        monkeypatch.undo()
        torch.testing.assert_close(losses[m], loss, rtol=1e-5, atol=1e-5)
        pairs = paired_grads(stacked, single, m)
        assert len(pairs) == len(list(single.parameters()))
        for a, b in pairs:
            torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize(
    "kind, extra",
    [("adam", {}), ("adamw", {}), ("sgd", {"momentum": [0.0, 0.9, 0.5]}), ("sgd", {"momentum": [0.9, 0.8, 0.5], "nesterov": True})],
    ids=["adam", "adamw", "sgd-momentum", "sgd-nesterov"],
)
def test_the_stacked_optimizer_equals_torch_optim_per_member(kind, extra):
    lrs, decays = [1e-2, 3e-3, 0.1], [0.0, 1e-3, 0.1]
    momenta = extra.get("momentum", [0.0] * 3)
    g = torch.Generator().manual_seed(0)
    stacked = torch.randn(3, 5, 4, generator=g).requires_grad_()
    singles = [stacked[m].detach().clone().requires_grad_() for m in range(3)]
    opt = StackedOptimizer([stacked], kind, lrs, decays, momenta, extra.get("nesterov", False))
    refs = []
    for m, p in enumerate(singles):
        if kind == "sgd":
            refs.append(
                torch.optim.SGD(
                    [p], lr=lrs[m], momentum=momenta[m], weight_decay=decays[m], nesterov=extra.get("nesterov", False) and momenta[m] > 0
                )
            )
        else:
            refs.append({"adam": torch.optim.Adam, "adamw": torch.optim.AdamW}[kind]([p], lr=lrs[m], weight_decay=decays[m]))
    for _ in range(5):
        grad = torch.randn(3, 5, 4, generator=g)
        stacked.grad = grad.clone()
        opt.step()
        for m, (p, ref) in enumerate(zip(singles, refs, strict=True)):
            p.grad = grad[m].clone()
            ref.step()
    for m, p in enumerate(singles):
        torch.testing.assert_close(stacked.detach()[m], p.detach(), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize(
    "options",
    [
        {"lr_schedule": "cosine"},
        {"lr_schedule": "onecycle"},
        {"lr_schedule": "onecycle", "optimizer": "sgd", "momentum": 0.9, "lr": 0.05},
    ],
    ids=["cosine", "onecycle-adam", "onecycle-sgd"],
)
def test_each_members_schedule_is_its_single_runs(options):
    """lr (and momentum or beta1) per step, against torch's scheduler driven for each member's own config."""
    base = Config(epochs=2, hidden=(8,), dropout=(0.0,), **options)
    scale = {"lr": [1.0, 0.5, 0.2]}
    configs = [base.replace(seed=m, lr=base.lr * scale["lr"][m]) for m in range(3)]
    if base.optimizer == "sgd":
        configs[2] = configs[2].replace(momentum=0.5)
    steps = 7
    step = PopulationStep(configs, StackedMLP.from_members(members_of(configs)), fake_data(), steps)
    refs = []
    for cfg in configs:
        model = MLP.from_config(cfg)
        opt = make_optimizer(model, cfg, CPU)
        refs.append((opt, make_scheduler(opt, cfg, steps)[1]))
    for t in range(base.epochs * steps):
        for m, (opt, sched) in enumerate(refs):
            group = opt.param_groups[0]
            assert step.optimizer.lr[m].item() == pytest.approx(group["lr"], rel=1e-6), (t, m)
            want = group["momentum"] if base.optimizer == "sgd" else group["betas"][0]
            got = step.optimizer.momentum[m] if base.optimizer == "sgd" else step.optimizer.beta1[m]
            assert got.item() == pytest.approx(want, rel=1e-6), (t, m)
            opt.step()
            sched.step()
        step.t += 1
        step.apply_schedule()


def test_the_schedule_table_is_none_for_plateau_and_spans_every_step():
    assert schedule_table(Config(), 5) is None
    lr, mom = schedule_table(Config(lr_schedule="cosine", epochs=3), 5)
    assert len(lr) == len(mom) == 16 and lr[0] == 1.0 and lr[-1] == pytest.approx(0.0, abs=1e-12)


def test_three_members_without_dropout_equal_three_single_runs(small_data):
    """Dropout is the only randomness a population draws differently; without it, members reproduce their runs.

    Different lr, weight decay and plateau settings per member; same initial
    weights and batch order as the single runs, so the metrics agree to float rounding.
    """
    base = Config(epochs=2, hidden=(64, 32), dropout=(0.0, 0.0), lr=2e-3)
    configs = [base.replace(seed=0), base.replace(seed=1, lr=1e-3, lr_patience=0), base.replace(seed=2, weight_decay=1e-3)]
    results = train_population(configs, small_data, device="cpu", progress=False)
    for cfg, res in zip(configs, results, strict=True):
        ref = train(cfg, small_data, device="cpu", progress=False, engine="autograd")
        assert res.status == ref.status == "completed"
        for a, b in zip(res.history, ref.history, strict=True):
            assert a["val_acc"] == pytest.approx(b["val_acc"], abs=2e-4)  # one validation image in 6,000
            assert a["train_loss"] == pytest.approx(b["train_loss"], rel=1e-4)
            assert a["lr"] == pytest.approx(b["lr"], rel=1e-6)
        assert res.best_epoch == ref.best_epoch
        for p, q in zip(res.model.state_dict().values(), ref.model.state_dict().values(), strict=True):
            torch.testing.assert_close(p, q, rtol=1e-3, atol=1e-4)


def test_members_with_dropout_train_like_their_single_runs(small_data):
    """With dropout the masks come from a shared stream, so agreement is statistical: within a point of accuracy."""
    base = Config(epochs=2, hidden=(128, 64), dropout=(0.3, 0.2), lr=2e-3)
    configs = [base.replace(seed=0), base.replace(seed=1, dropout=(0.1, 0.1), input_dropout=0.1)]
    results = train_population(configs, small_data, device="cpu", progress=False)
    for cfg, res in zip(configs, results, strict=True):
        ref = train(cfg, small_data, device="cpu", progress=False)
        assert abs(res.final_val_acc - ref.final_val_acc) < 0.01, (res.final_val_acc, ref.final_val_acc)


def test_population_masks_drop_each_member_at_its_own_rate():
    torch.manual_seed(0)
    p = torch.tensor([0.0, 0.1, 0.5, 0.9])
    mask = keep_masks((4, 500, 1000), p, torch.float32)
    for m, rate in enumerate(p.tolist()):
        dropped = (mask[m] == 0).float().mean().item()
        assert abs(dropped - rate) < 5 * math.sqrt(max(rate * (1 - rate), 1e-12) / 500_000) + 1e-9
        kept = mask[m][mask[m] != 0]
        assert torch.all(kept == torch.tensor(1 / (1 - rate)))


def test_a_diverging_member_is_masked_and_the_others_go_on(small_data):
    base = Config(epochs=3, hidden=(64, 32), dropout=(0.0, 0.0), lr=2e-3, optimizer="sgd", lr_schedule="cosine")
    configs = [base.replace(seed=0, lr=0.05), base.replace(seed=1, lr=1e6), base.replace(seed=2, lr=0.05)]
    results = train_population(configs, small_data, device="cpu", progress=False)
    assert [r.status for r in results] == ["completed", "diverged", "completed"]
    assert len(results[1].history) < 3 and len(results[0].history) == len(results[2].history) == 3
    for m in (0, 2):  # unharmed: each equals its own single run
        ref = train(configs[m], small_data, device="cpu", progress=False, engine="autograd")
        assert results[m].final_val_acc == pytest.approx(ref.final_val_acc, abs=2e-4)
        assert results[m].final_val_acc > 0.85


def test_members_round_trip_and_evaluate_as_single_models(small_data):
    configs = [Config(hidden=(32,), dropout=(0.0,), norm="batch", seed=s) for s in range(3)]
    singles = members_of(configs)
    stacked = StackedMLP.from_members(members_of(configs))
    x = torch.randn(3, 16, 784) * 3 + 1
    stacked.train()
    stacked(x)  # moves the running statistics, as a training forward of each single BatchNorm1d does
    losses, accs = evaluate_members(stacked, small_data.x_val, small_data.y_val)
    for m in range(3):
        member = stacked.member(m)
        assert isinstance(member, MLP) and member.norm == "batch"
        singles[m].train()
        singles[m](x[m])
        for name in ("running_mean", "running_var"):
            torch.testing.assert_close(getattr(member.net[1], name), getattr(singles[m].net[1], name), rtol=1e-5, atol=1e-6)
        from mnist_lib import evaluate

        ref = evaluate(member, small_data.x_val, small_data.y_val)
        assert accs[m] == pytest.approx(ref["acc"], abs=1e-9)
        assert losses[m] == pytest.approx(ref["loss"], rel=1e-5)


def test_grouping_and_compatibility():
    a = Config(seed=0)
    configs = [
        a,
        a.replace(seed=1, lr=1e-3),
        a.replace(norm="batch"),
        a.replace(seed=5, dropout=(0.1, 0.1, 0.1)),
        a.replace(hidden=(64, 32, 16)),
    ]
    assert group_configs(configs) == [[0, 1, 3], [2], [4]]
    check_compatible(configs[:2])
    with pytest.raises(UserError, match="must share norm"):
        check_compatible(configs[:3])
    with pytest.raises(UserError, match="at least one"):
        check_compatible([])


def test_max_norm_caps_each_members_rows_at_its_own_norm_as_renorm_does():
    limits = [0.0, 0.5, 2.0]  # 0: no max-norm for that member
    configs = [Config(hidden=(16,), dropout=(0.0,), seed=m, max_norm=c) for m, c in enumerate(limits)]
    stacked = StackedMLP.from_members(members_of(configs))
    with torch.no_grad():
        stacked.weights[0].mul_(torch.rand(3, 16, 1) * 40)  # rows of norm up to ~20, some below 0.5
    before = stacked.weights[0].detach().clone()
    step = PopulationStep(configs, stacked, fake_data(), 5)
    step._renorm()
    for m, c in enumerate(limits):
        want = before[m] if c == 0 else before[m].renorm(2, 0, c)
        torch.testing.assert_close(stacked.weights[0].detach()[m], want)
    assert stacked.weights[1].norm(dim=1).max() > 0 and torch.equal(
        stacked.weights[1], StackedMLP.from_members(members_of(configs)).weights[1]
    )


def test_seeds_side_by_side_leave_the_records_one_after_another_leaves(tmp_path, mnist_dir):
    """multi_seed's population path: the same folders, files and (without dropout) metrics as seed after seed."""
    import csv

    from mnist_lib.workflows.experiment import multi_seed

    cfg = Config(epochs=2, hidden=(32,), dropout=(0.0,), lr=2e-3)
    options = {"data_dir": mnist_dir, "max_train_samples": 2000, "device": "cpu", "progress": False, "evaluate_test": False}
    side = multi_seed(cfg, [3, 4], tmp_path / "side", population="on", **options)
    alone = multi_seed(cfg, [3, 4], tmp_path / "alone", population="off", **options)
    assert side.aggregate["n_seeds"] == 2 and side.aggregate["val_acc_mean"] == pytest.approx(alone.aggregate["val_acc_mean"], abs=2e-4)
    for seed in (3, 4):
        a, b = tmp_path / "side" / f"seed_{seed}", tmp_path / "alone" / f"seed_{seed}"
        assert sorted(p.name for p in a.iterdir()) == sorted(p.name for p in b.iterdir())
        rows_a, rows_b = (list(csv.DictReader((d / "metrics.csv").read_text().splitlines())) for d in (a, b))
        for ra, rb in zip(rows_a, rows_b, strict=True):
            assert float(ra["train_loss"]) == pytest.approx(float(rb["train_loss"]), rel=1e-4)
        summary = json.loads((a / "summary.json").read_text())
        assert summary["population_size"] == 2 and summary["status"] == "completed"
        model, config, _, _ = load_model(a)
        assert config.seed == seed
    assert json.loads((tmp_path / "side" / "summary.json").read_text())["population_size"] == 2
    with pytest.raises(UserError, match="population must be one of"):
        multi_seed(cfg, [0], tmp_path / "x", population="yes", **options)


class FakeCuda:
    """torch.cuda's stream and graph API, recorded on the CPU: what GraphedEpochs asks of it, in order.

    A real capture runs the Python code once while the GPU runs nothing; here the
    captured body is kept, not run, and each replay runs it, so the bookkeeping
    (warm-up, one capture, a replay per full batch, the eager last batch, the
    static index buffer) is checked without a GPU. tests/test_gpu.py checks the
    real thing.
    """

    def __init__(self):
        self.events = []
        self.capturing = False
        fake = self

        class Graph:
            def replay(self):
                fake.events.append("replay")
                fake.body()

        class Capture:
            def __init__(self, graph, stream=None):
                pass

            def __enter__(self):
                fake.capturing = True
                fake.events.append("capture")

            def __exit__(self, *exc):
                fake.capturing = False

        self.CUDAGraph, self.graph = Graph, Capture
        self.Stream = lambda device=None: object()
        self.current_stream = lambda device=None: type("S", (), {"wait_stream": lambda self, other: None})()
        self.stream = lambda s: __import__("contextlib").nullcontext()


def test_graphed_epochs_warm_up_capture_once_replay_each_full_batch_and_run_the_last_eagerly(monkeypatch):
    from mnist_lib.training import graphs

    fake = FakeCuda()
    for name in ("CUDAGraph", "graph", "Stream", "current_stream", "stream"):
        monkeypatch.setattr(graphs.torch.cuda, name, getattr(fake, name))
    monkeypatch.setattr(graphs.torch.cuda.Stream, "wait_stream", lambda self, other: None, raising=False)
    seen = []  # the rows each real step trained on, per member

    class Step:
        model = type("M", (), {"n_members": 2})()

        def __call__(self, x, y):
            if fake.capturing:  # recorded, not run: the replay will run it
                fake.body = lambda: runner._body()
                fake.events.append("captured body")
                return torch.zeros(2), torch.zeros(2, dtype=torch.long)
            seen.append(y.clone())
            fake.events.append(f"step {y.shape[1]}")
            return torch.ones(2), torch.full((2,), y.shape[1])

    n, batch = 23, 4  # 5 full batches and a last one of 3 per epoch
    x, y = torch.zeros(n, 784), torch.arange(n)
    runner = graphs.GraphedEpochs(Step(), x, y, batch)
    runner.stream = type("S", (), {"wait_stream": lambda self, other: None})()
    perms = torch.stack([torch.randperm(n, generator=torch.Generator().manual_seed(s)) for s in (0, 1)])
    loss, correct = runner.epoch(perms)
    assert fake.events == ["step 4"] * 3 + ["capture", "captured body", "replay", "step 4", "replay", "step 4", "step 3"]
    assert torch.equal(correct, torch.tensor([n, n])) and torch.equal(loss, torch.full((2,), 6.0))  # 6 steps, sums reset per epoch
    assert torch.equal(torch.cat(seen, dim=1), y[perms])  # every member's rows, in its order, once
    fake.events.clear()
    seen.clear()
    loss, correct = runner.epoch(perms.flip(1))
    assert fake.events == ["replay", "step 4"] * 5 + ["step 3"]  # no second warm-up or capture
    assert torch.equal(correct, torch.tensor([n, n])) and torch.equal(loss, torch.full((2,), 6.0))
    assert torch.equal(torch.cat(seen, dim=1), y[perms.flip(1)])


def test_augmentation_is_per_member(small_data, monkeypatch):
    """A member without augmentation trains exactly as its single run; its neighbour's batches are the augmented ones."""
    from mnist_lib.training import augment as augment_module

    calls = []
    real = augment_module.Augment.__call__
    monkeypatch.setattr(augment_module.Augment, "__call__", lambda self, x: calls.append((self.rotate, x.shape)) or real(self, x))
    base = Config(epochs=1, hidden=(64, 32), dropout=(0.0, 0.0), lr=2e-3)
    configs = [base.replace(seed=0), base.replace(seed=1, aug_rotate=15.0, aug_translate=2.0)]
    results = train_population(configs, small_data, device="cpu", progress=False)
    steps = -(-len(small_data.y_train) // base.batch_size)
    assert len(calls) == steps and {c[0] for c in calls} == {15.0} and calls[0][1] == (base.batch_size, 784)  # member 1's batch only
    monkeypatch.undo()
    plain = train(configs[0], small_data, device="cpu", progress=False, engine="autograd")
    assert results[0].final_val_acc == pytest.approx(plain.final_val_acc, abs=2e-4)
    augmented = train(configs[1], small_data, device="cpu", progress=False)
    assert abs(results[1].final_val_acc - augmented.final_val_acc) < 0.02  # different draws, the same distortions


def test_copy_members_overwrites_only_the_members_named():
    configs = [Config(hidden=(16,), dropout=(0.0,), norm="batch", seed=s) for s in range(3)]
    a, b = StackedMLP.from_members(members_of(configs)), StackedMLP.from_members(members_of([c.replace(seed=c.seed + 10) for c in configs]))
    b.train()
    b(torch.randn(3, 8, 784))  # b's running statistics move away from a's
    before = {k: v.clone() for k, v in a.state_dict().items()}
    a.copy_members(b, [0, 2])
    for name, tensor in a.state_dict().items():
        if name in ("rates", "input_rates"):
            continue
        for m in range(3):
            want = b.state_dict()[name][m] if m in (0, 2) else before[name][m]
            assert torch.equal(tensor[m], want), (name, m)


def test_each_member_keeps_its_best_epochs_weights(small_data, monkeypatch):
    """Validation accuracy made to peak at epoch 1: every member's returned model holds the weights it had then."""
    real = population.evaluate_members
    snapshots = []

    def peaked(model, x, y):
        losses, _ = real(model, x, y)
        snapshots.append([model.member(m).state_dict() for m in range(model.n_members)])
        return losses, [0.9 if len(snapshots) == 1 else 0.5] * model.n_members

    monkeypatch.setattr(population, "evaluate_members", peaked)
    configs = [Config(epochs=3, hidden=(32,), dropout=(0.0,), lr=2e-3, seed=s) for s in range(2)]
    results = train_population(configs, small_data, device="cpu", progress=False)
    for m, result in enumerate(results):
        assert result.best_epoch == 1 and result.final_val_acc == 0.5
        for name, tensor in result.model.state_dict().items():
            torch.testing.assert_close(tensor, snapshots[0][m][name], rtol=0, atol=0)
        assert not torch.equal(result.model.state_dict()["net.0.weight"], snapshots[-1][m]["net.0.weight"])
