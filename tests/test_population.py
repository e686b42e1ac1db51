"""Population training against single models: the same gradients, the same updates, the same schedules, independent members.

The references are one MLP trained the plain PyTorch way (tests/plain_torch.py) and
torch.optim's own optimizers and schedulers, never the population code itself.
"""

import json
import math

import pytest
import torch
from conftest import fake_data
from plain_torch import make_optimizer, plain_gradients, plain_run

from mnist_lib import MLP, Config, RunOptions, load_model, train
from mnist_lib.core.errors import UserError
from mnist_lib.training import model as model_module
from mnist_lib.training import stacked
from mnist_lib.training import train as engine
from mnist_lib.training.evaluate import evaluate_members
from mnist_lib.training.model import keep_mask
from mnist_lib.training.optim import FlatOptimizer
from mnist_lib.training.stacked import StackedMLP
from mnist_lib.training.train import PopulationStep, check_compatible, group_configs, make_scheduler, schedule_table, train_population

CPU = torch.device("cpu")


def members_of(configs):
    models = []
    for cfg in configs:
        torch.manual_seed(cfg.seed)
        models.append(MLP.from_config(cfg))
    return models


def assert_member_grads(model: StackedMLP, m: int, single: MLP) -> None:
    """Member m's gradients in the flat buffer are the single model's, parameter by parameter."""
    views = model.parameter_views(model.gather_grads(), m)
    assert len(views) == len(list(single.parameters()))
    for view, p in zip(views, single.parameters(), strict=True):
        torch.testing.assert_close(view, p.grad, rtol=1e-5, atol=1e-6)


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
    model = StackedMLP(members_of(configs))
    drawn = []  # (rates, masks) of every population draw, in order

    def recording(shape, p, dtype, device, scale):
        mask = model_module.keep_mask(shape, p, dtype, device, scale)
        drawn.append((p.flatten().clone(), mask))
        return mask

    monkeypatch.setattr(stacked, "keep_mask", recording)
    torch.manual_seed(7)
    x, y = torch.randn(3, 32, 784), torch.randint(0, 10, (3, 32))
    step = PopulationStep(configs, model, fake_data(), 10)
    losses, _ = step.gradients(x, y)
    monkeypatch.undo()
    for m, (cfg, single) in enumerate(zip(configs, singles, strict=True)):
        # member m's own masks, for the layers where it drops anything (a rate-0 Dropout draws none)
        mine = [mask[m] for rates, mask in drawn if rates[m] > 0]
        monkeypatch.setattr(model_module, "keep_mask", lambda shape, p, dtype, device, it=iter(mine): next(it))
        loss, _ = plain_gradients(single, x[m], y[m], cfg.label_smoothing)
        monkeypatch.undo()
        torch.testing.assert_close(losses[m], loss, rtol=1e-5, atol=1e-5)
        assert_member_grads(model, m, single)


@pytest.mark.parametrize(
    "kind, extra",
    [("adam", {}), ("adamw", {}), ("sgd", {"momentum": [0.0, 0.9, 0.5]}), ("sgd", {"momentum": [0.9, 0.8, 0.5], "nesterov": True})],
    ids=["adam", "adamw", "sgd-momentum", "sgd-nesterov"],
)
@pytest.mark.parametrize("fused", [False, True], ids=["per-member", "fused"])
def test_the_flat_optimizer_equals_torch_optim_per_member(kind, extra, fused):
    """Both update paths: per-member hyperparameters broadcast over the rows, and torch's fused kernel where all agree."""
    lrs, decays = [1e-2, 3e-3, 0.1], [0.0, 1e-3, 0.1]
    momenta = extra.get("momentum", [0.0] * 3)
    if fused:  # the fused kernel needs one set of hyperparameters
        lrs, decays, momenta = [lrs[1]] * 3, [decays[1]] * 3, [momenta[-1]] * 3
    g = torch.Generator().manual_seed(0)
    singles = [MLP((5,), (0.0,), n_inputs=4, n_classes=3) for _ in range(3)]
    model = StackedMLP(singles)
    opt = FlatOptimizer(model, kind, lrs, decays, momenta, extra.get("nesterov", False))
    opt.use_fused(lrs, decays, momenta, cycles=False)
    assert (opt.fused is not None) == fused
    refs = []
    for m, single in enumerate(singles):
        if kind == "sgd":
            nesterov = extra.get("nesterov", False) and momenta[m] > 0
            refs.append(torch.optim.SGD(single.parameters(), lr=lrs[m], momentum=momenta[m], weight_decay=decays[m], nesterov=nesterov))
        else:
            refs.append(
                {"adam": torch.optim.Adam, "adamw": torch.optim.AdamW}[kind](single.parameters(), lr=lrs[m], weight_decay=decays[m])
            )
    for _ in range(5):
        grads = torch.randn(model.flat.shape, generator=g)  # row m: member m's gradients, in the flat layout
        for leaf, view in zip(model.leaves, model.leaf_views(grads), strict=True):
            leaf.grad = view.clone()
        opt.step()
        for m, (single, ref) in enumerate(zip(singles, refs, strict=True)):
            for p, grad in zip(single.parameters(), model.parameter_views(grads, m), strict=True):
                p.grad = grad.clone()
            ref.step()
    for m, single in enumerate(singles):
        for mine, theirs in zip(model.parameter_views(model.flat, m), single.parameters(), strict=True):
            torch.testing.assert_close(mine, theirs.detach(), rtol=1e-5, atol=1e-6)


def test_the_fused_path_is_taken_only_while_the_members_agree():
    opt = FlatOptimizer(StackedMLP(members_of([Config(hidden=(4,), dropout=(0.0,))] * 2)), "adam", [1e-3, 1e-3], [0.0, 0.0])
    opt.use_fused([1e-3, 1e-3], [0.0, 0.0], [0.0, 0.0], cycles=False)
    assert opt.fused == (0.0, 0.0, 0.9)
    for lrs, decays, cycles in (([1e-3, 5e-4], [0.0, 0.0], False), ([1e-3, 1e-3], [0.0, 1e-4], False), ([1e-3, 1e-3], [0.0, 0.0], True)):
        opt.use_fused(lrs, decays, [0.0, 0.0], cycles)
        assert opt.fused is None, (lrs, decays, cycles)
    base = Config(hidden=(8,), dropout=(0.0,))
    configs = [base, base.replace(seed=1)]
    step = PopulationStep(configs, StackedMLP(members_of(configs)), fake_data(), 5)
    assert step.optimizer.fused is not None  # seeds side by side: one set of hyperparameters
    step.end_epoch([1.0, 1.0])
    assert step.optimizer.fused is not None
    step.mask(1)  # a diverged member's lr is 0: the members no longer agree
    assert step.optimizer.fused is None and step.optimizer.lr.tolist() == [pytest.approx(base.lr), 0.0]


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
    step = PopulationStep(configs, StackedMLP(members_of(configs)), fake_data(), steps)
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
        history, final = plain_run(cfg, small_data)
        assert res.status == "completed"
        for a, b in zip(res.history, history, strict=True):
            assert a["val_acc"] == pytest.approx(b["val_acc"], abs=2e-4)  # one validation image in 6,000
            assert a["train_loss"] == pytest.approx(b["train_loss"], rel=1e-4)
            assert a["lr"] == pytest.approx(b["lr"], rel=1e-6)
        assert res.best_epoch == max(history, key=lambda r: r["val_acc"])["epoch"]
        if res.best_epoch == cfg.epochs:  # the returned model holds the best epoch's weights: here the final ones
            for p, q in zip(res.model.state_dict().values(), final.state_dict().values(), strict=True):
                torch.testing.assert_close(p, q, rtol=1e-3, atol=1e-4)


def test_members_with_dropout_train_like_their_single_runs(small_data):
    """With dropout the masks come from a shared stream, so agreement is statistical: within a point of accuracy."""
    base = Config(epochs=2, hidden=(128, 64), dropout=(0.3, 0.2), lr=2e-3)
    configs = [base.replace(seed=0), base.replace(seed=1, dropout=(0.1, 0.1), input_dropout=0.1)]
    results = train_population(configs, small_data, device="cpu", progress=False)
    for cfg, res in zip(configs, results, strict=True):
        history, _ = plain_run(cfg, small_data)
        assert abs(res.final_val_acc - history[-1]["val_acc"]) < 0.01, (res.final_val_acc, history[-1]["val_acc"])


def test_population_masks_drop_each_member_at_its_own_rate():
    torch.manual_seed(0)
    p = torch.tensor([0.0, 0.1, 0.5, 0.9])
    mask = keep_mask((4, 500, 1000), p.view(-1, 1, 1), scale=(1 / (1 - p)).view(-1, 1, 1))
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
        history, _ = plain_run(configs[m], small_data)
        assert results[m].final_val_acc == pytest.approx(history[-1]["val_acc"], abs=2e-4)
        assert results[m].final_val_acc > 0.85


def test_members_round_trip_and_evaluate_as_single_models(small_data):
    configs = [Config(hidden=(32,), dropout=(0.0,), norm="batch", seed=s) for s in range(3)]
    singles = members_of(configs)
    model = StackedMLP(members_of(configs))
    x = torch.randn(3, 16, 784) * 3 + 1
    model.train()
    model(x)  # moves the running statistics, as a training forward of each single BatchNorm1d does
    losses, accs = evaluate_members(model, small_data.x_val, small_data.y_val)
    for m in range(3):
        member = model.member(m)
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
    model = StackedMLP(members_of(configs))
    with torch.no_grad():
        model.linear_weights()[0].mul_(torch.rand(3, 16, 1) * 40)  # rows of norm up to ~20, some below 0.5
    before = model.linear_weights()[0].detach().clone()
    step = PopulationStep(configs, model, fake_data(), 5)
    step._renorm()
    for m, c in enumerate(limits):
        want = before[m] if c == 0 else before[m].renorm(2, 0, c)
        torch.testing.assert_close(model.linear_weights()[0].detach()[m], want)
    head = model.linear_weights()[1]  # the output layer is never capped
    assert head.norm(dim=1).max() > 0 and torch.equal(head, StackedMLP(members_of(configs)).linear_weights()[1])


def test_seeds_side_by_side_leave_the_records_one_after_another_leaves(tmp_path, mnist_dir):
    """multi_seed's population path: the same folders, files and (without dropout) metrics as seed after seed."""
    import csv

    from mnist_lib.workflows.experiment import multi_seed

    cfg = Config(epochs=2, hidden=(32,), dropout=(0.0,), lr=2e-3)
    options = RunOptions(data_dir=mnist_dir, max_train_samples=2000, device="cpu", progress=False)
    side = multi_seed(cfg, [3, 4], tmp_path / "side", options, population="on", evaluate_test=False)
    alone = multi_seed(cfg, [3, 4], tmp_path / "alone", options, population="off", evaluate_test=False)
    assert side.aggregate["n_seeds"] == 2 and side.aggregate["val_acc_mean"] == pytest.approx(alone.aggregate["val_acc_mean"], abs=2e-4)
    for seed in (3, 4):
        a, b = tmp_path / "side" / f"seed_{seed}", tmp_path / "alone" / f"seed_{seed}"
        assert sorted(p.name for p in a.iterdir()) == sorted(p.name for p in b.iterdir())
        rows_a, rows_b = (list(csv.DictReader((d / "metrics.csv").read_text().splitlines())) for d in (a, b))
        for ra, rb in zip(rows_a, rows_b, strict=True):
            assert float(ra["train_loss"]) == pytest.approx(float(rb["train_loss"]), rel=1e-4)
        summary = json.loads((a / "summary.json").read_text())
        assert summary["population_size"] == 2 and summary["status"] == "completed"
        assert summary["population_members"] == ["seed_3", "seed_4"] and summary["population_index"] == seed - 3  # what reproduces it
        model, config, _, _ = load_model(a)
        assert config.seed == seed
    assert json.loads((tmp_path / "side" / "summary.json").read_text())["population_size"] == 2
    with pytest.raises(UserError, match="population must be one of"):
        multi_seed(cfg, [0], tmp_path / "x", options, population="yes")


@pytest.mark.parametrize("threads, seeds, side_by_side", [(1, [0, 1], False), (2, [0, 1], True), (2, [0, 1, 2], False)])
def test_seeds_go_side_by_side_by_default_where_populations_pay(tmp_path, mnist_dir, threads, seeds, side_by_side):
    """population auto on the CPU: a population where the threads divide the members (faster per model), else one after another."""
    from mnist_lib.workflows.experiment import multi_seed, populations_pay

    assert populations_pay(torch.device("cpu"), threads, len(seeds)) is side_by_side and populations_pay(torch.device("cuda"), 1, 3)
    cfg = Config(epochs=1, hidden=(16,), dropout=(0.0,))
    options = RunOptions(data_dir=mnist_dir, max_train_samples=500, threads=threads, device="cpu", progress=False)
    out = multi_seed(cfg, seeds, tmp_path / "s", options, evaluate_test=False).out_dir
    summary = json.loads((out / "seed_1" / "summary.json").read_text())
    assert summary.get("population_size") == (len(seeds) if side_by_side else None)


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
        optimizer = type("O", (), {"state_ready": lambda self: True})()
        mode = ((0.0, 0.0, 0.9), True)

        def on_rows(self, x, y, idx):
            return self(*engine.gather_batch(x, y, idx))

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
    fake.events.clear()
    Step.mode = (None, True)  # the members' hyperparameters came apart: the graph holds the wrong update
    runner.epoch(perms)
    assert fake.events == ["step 4"] * 3 + ["capture", "captured body", "replay", "step 4", "replay", "step 4", "step 3"]  # as at first
    Step.mode, Step.optimizer = (0.0, False), type("O", (), {"state_ready": lambda self: False})()
    with pytest.raises(RuntimeError, match="state must exist before a CUDA-graph capture"):
        runner.epoch(perms)  # a capture never creates optimizer state


def test_the_optimizer_state_exists_from_the_start_and_a_missing_buffer_is_seen():
    model = StackedMLP(members_of([Config(hidden=(8,), dropout=(0.0,), seed=s) for s in (0, 1)]))
    for kind in ("adam", "adamw", "sgd"):
        opt = FlatOptimizer(model, kind, [1e-3, 1e-3], [0.0, 0.0], [0.9, 0.9])
        assert opt.state_ready()
        opt.whole_state[0] = opt.whole_state[0][:, :1]  # a buffer of the wrong shape: not ready
        assert not opt.state_ready()


def test_augmentation_is_per_member(small_data, monkeypatch):
    """A member without augmentation trains exactly as its single run; its neighbour's batches are the augmented ones."""
    from mnist_lib.training import augment as augment_module

    calls = []
    real = augment_module.StackedAugment.__call__

    def spy(self, x):
        out = real(self, x)
        calls.append(torch.equal(out[0], x[0]) and not torch.equal(out[1], x[1]))  # member 0 untouched, member 1 distorted
        return out

    monkeypatch.setattr(augment_module.StackedAugment, "__call__", spy)
    base = Config(epochs=1, hidden=(64, 32), dropout=(0.0, 0.0), lr=2e-3)
    configs = [base.replace(seed=0), base.replace(seed=1, aug_rotate=15.0, aug_translate=2.0)]
    results = train_population(configs, small_data, device="cpu", progress=False)
    steps = -(-len(small_data.y_train) // base.batch_size)
    assert calls == [True] * steps  # one pass per step, for both members
    monkeypatch.undo()
    history, _ = plain_run(configs[0], small_data)
    assert results[0].final_val_acc == pytest.approx(history[-1]["val_acc"], abs=2e-4)
    augmented = train(configs[1], small_data, device="cpu", progress=False)
    assert abs(results[1].final_val_acc - augmented.final_val_acc) < 0.02  # different draws, the same distortions


def test_copy_members_overwrites_only_the_members_named():
    configs = [Config(hidden=(16,), dropout=(0.0,), norm="batch", seed=s) for s in range(3)]
    a, b = StackedMLP(members_of(configs)), StackedMLP(members_of([c.replace(seed=c.seed + 10) for c in configs]))
    b.train()
    b(torch.randn(3, 8, 784))  # b's running statistics move away from a's
    before = {k: v.clone() for k, v in a.state().items()}
    assert set(before) == {"flat", "stacked_buffer0", "stacked_buffer1", "stacked_buffer2"}  # BatchNorm: mean, var, count
    a.copy_members(b.state(), a.state(), [0, 2])
    for name, tensor in a.state().items():
        for m in range(3):
            want = b.state()[name][m] if m in (0, 2) else before[name][m]
            assert torch.equal(tensor[m], want), (name, m)


def test_each_member_keeps_its_best_epochs_weights(small_data, monkeypatch):
    """Validation accuracy made to peak at epoch 1: every member's returned model holds the weights it had then."""
    real = engine.evaluate_members
    snapshots = []

    def peaked(model, x, y):
        losses, _ = real(model, x, y)
        snapshots.append([model.member(m).state_dict() for m in range(model.n_members)])
        return losses, [0.9 if len(snapshots) == 1 else 0.5] * model.n_members

    monkeypatch.setattr(engine, "evaluate_members", peaked)
    configs = [Config(epochs=3, hidden=(32,), dropout=(0.0,), lr=2e-3, seed=s) for s in range(2)]
    results = train_population(configs, small_data, device="cpu", progress=False)
    for m, result in enumerate(results):
        assert result.best_epoch == 1 and result.final_val_acc == 0.5
        for name, tensor in result.model.state_dict().items():
            torch.testing.assert_close(tensor, snapshots[0][m][name], rtol=0, atol=0)
        assert not torch.equal(result.model.state_dict()["net.0.weight"], snapshots[-1][m]["net.0.weight"])


def test_a_norm_and_an_activation_registered_in_this_test_train_as_a_population_and_load_back(tmp_path, monkeypatch, mnist_dir):
    """model.py's tables are the one place a layer is named: two new ones, registered here, get the right gradients,
    train as a population of 2 on the CPU, and come back from their records through load_model."""
    from torch import nn

    from mnist_lib.core import config as config_module
    from mnist_lib.workflows.experiment import train_population_and_record

    for module, name in (
        (model_module, "ACTIVATIONS"),
        (model_module, "NORM_LAYERS"),
        (config_module, "ACTIVATIONS"),
        (config_module, "NORMS"),
    ):
        table = getattr(module, name)
        monkeypatch.setattr(module, name, dict(table) if isinstance(table, dict) else table)  # undone after the test
    model_module.register_activation("prelu", nn.PReLU)  # a parameter of its own: trained per member
    model_module.register_norm("rms", nn.RMSNorm)
    base = Config(activation="prelu", norm="rms", hidden=(32, 16), dropout=(0.0, 0.0), epochs=2, lr=2e-3)
    configs = [base, base.replace(seed=1, lr=1e-3)]
    singles = members_of(configs)
    assert isinstance(singles[0].net[1], nn.RMSNorm) and isinstance(singles[0].net[2], nn.PReLU)
    model = StackedMLP(members_of(configs))
    x, y = torch.randn(2, 16, 784), torch.randint(0, 10, (2, 16))
    step = PopulationStep(configs, model, fake_data(), 10)
    losses, _ = step.gradients(x, y)
    for m, single in enumerate(singles):
        loss, _ = plain_gradients(single, x[m], y[m])
        torch.testing.assert_close(losses[m], loss, rtol=1e-5, atol=1e-5)
        assert_member_grads(model, m, single)
    runs = train_population_and_record(
        configs, [tmp_path / "a", tmp_path / "b"], RunOptions(data_dir=mnist_dir, max_train_samples=2000, device="cpu", progress=False)
    )
    for run_dir, result, summary in runs:
        assert summary["status"] == "completed" and result.best_val_acc > 0.5
        loaded, config, _, _ = load_model(run_dir)
        assert config.norm == "rms" and isinstance(loaded.net[2], nn.PReLU)
        for (name, p), q in zip(loaded.state_dict().items(), result.model.state_dict().values(), strict=True):
            assert torch.equal(p, q), name
    assert not torch.equal(runs[0][1].model.net[2].weight, runs[1][1].model.net[2].weight)  # each member's own PReLU slope
