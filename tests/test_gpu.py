"""CUDA: the graph-captured step against the same step run eagerly, case by case, and populations on the GPU.

    make gpu-check                                         # on the GPU machine: these tests, then benchmarks/gpu.py
    MNIST_STRICT=1 python3 -m pytest -q -m gpu tests/test_gpu.py

Marked `gpu`: make test deselects them (CI has no GPU); without CUDA they skip with
one line, or fail where MNIST_STRICT=1. One test here is not marked: it runs every
graph case eagerly on the CPU, twice, so a broken case is caught on any machine.

What "agree" means: a replayed step is the eager step, so every case (dropout,
BatchNorm, augmentation, bf16, SGD with Nesterov, AdamW + LayerNorm + GELU, a
plateau population with one member masked) trains two epochs both ways from the
same seed, and the losses and weights agree to 1e-5. Dropout and augmentation
draw from torch's CUDA generator, which hands a replay the offsets the eager
kernels would have taken, so the random numbers are the same ones.
"""

import pytest
import torch
from conftest import skip_or_fail

from mnist_lib import MLP, Config, prepare_data, train
from mnist_lib.training.evaluate import evaluate_members
from mnist_lib.training.graphs import GraphedEpochs
from mnist_lib.training.stacked import StackedMLP
from mnist_lib.training.train import PopulationStep, population_epoch, train_population

gpu = pytest.mark.gpu
SMALL = Config(hidden=(128, 64), dropout=(0.0, 0.0), lr=2e-3)
CASES = {  # name: (the members' configs, mask member 1 after the first epoch)
    "dropout": ([SMALL.replace(dropout=(0.3, 0.2), input_dropout=0.1)], False),
    "batchnorm": ([SMALL.replace(norm="batch", dropout=(0.2, 0.2))], False),
    "augmentation": ([SMALL.replace(aug_rotate=10.0, aug_translate=2.0, aug_elastic_alpha=2.0)], False),
    "bf16": ([SMALL.replace(precision="bf16", dropout=(0.2, 0.2))], False),
    "sgd_nesterov": ([SMALL.replace(optimizer="sgd", lr=0.05, momentum=0.9, nesterov=True, dropout=(0.2, 0.2))], False),
    "adamw_layernorm_gelu": ([SMALL.replace(optimizer="adamw", norm="layer", activation="gelu", weight_decay=0.01)], False),
    "plateau_one_masked": ([SMALL.replace(seed=s, lr_patience=0, dropout=(0.2, 0.2)) for s in (0, 1)], True),
}


@pytest.fixture
def cuda():
    if not torch.cuda.is_available():
        skip_or_fail("needs a CUDA GPU")
    return torch.device("cuda")


@pytest.fixture(scope="module")
def tiny(mnist_dir):
    """2,048 training examples (16 batches: 3 eager warm-ups, a capture, replays, no short last batch)."""
    return prepare_data(Config(), mnist_dir, max_train_samples=2048)


def stacked_step(configs, data, steps):
    models = []
    for c in configs:
        torch.manual_seed(c.seed)
        models.append(MLP.from_config(c))
    return PopulationStep(configs, StackedMLP(models, device=data.x_train.device), data, steps)


def train_case(configs, data, graphed: bool, mask: bool, epochs: int = 2):
    """Each epoch's per-member loss sums, and the final flat weights, of `configs` trained as train_population trains them."""
    bs = configs[0].batch_size
    steps = -(-len(data.y_train) // bs)
    step = stacked_step(configs, data, steps)
    torch.manual_seed(configs[0].seed)  # dropout and augmentation start from the same generator state in both arms
    gens = [torch.Generator(device=data.x_train.device).manual_seed(c.seed) for c in configs]
    x = data.x_train.to(step.dtype)
    runner = GraphedEpochs(step, x, data.y_train, bs) if graphed else None
    losses = []
    for epoch in range(epochs):
        loss_sum, _ = population_epoch(step, x, data.y_train, bs, gens, runner)
        losses.append(loss_sum)
        val_loss, _ = evaluate_members(step.model, data.x_val, data.y_val)
        step.end_epoch(val_loss)
        if mask and epoch == 0:
            step.mask(1)  # the hyperparameters come apart: the per-member update, captured again
    return losses, step.model.flat.detach().clone(), step


@pytest.mark.parametrize("case", sorted(CASES))
def test_every_graph_case_trains_the_same_twice_eagerly_on_the_cpu(tiny, case):
    """The GPU cases' configs and harness, checked on any machine: two eager runs, identical."""
    configs, mask = CASES[case]
    a, b = train_case(configs, tiny, False, mask), train_case(configs, tiny, False, mask)
    assert a[0] == b[0] and torch.equal(a[1], b[1])
    assert not mask or a[2].optimizer.fused is None  # the masked case really leaves the fused path


@gpu
@pytest.mark.parametrize("case", sorted(CASES))
def test_graphed_and_eager_epochs_agree(tiny, cuda, case):
    configs, mask = CASES[case]
    data = tiny.to(cuda)
    eager_losses, eager_flat, _ = train_case(configs, data, False, mask)
    graph_losses, graph_flat, step = train_case(configs, data, True, mask)
    for a, b in zip(eager_losses, graph_losses, strict=True):
        assert a == pytest.approx(b, rel=1e-5)
    torch.testing.assert_close(graph_flat, eager_flat, rtol=1e-5, atol=1e-5)
    if mask:
        assert step.optimizer.fused is None


@gpu
def test_replays_follow_their_changing_inputs(small_data, cuda):
    """One capture, then replays on three different batches: each replay's gradients are the eager step's on that batch."""
    data = small_data.to(cuda)
    cfg = Config(hidden=(256, 128), dropout=(0.0, 0.0), norm="batch", lr_schedule="cosine", epochs=2)
    eager, graphed = stacked_step([cfg], data, 8), stacked_step([cfg], data, 8)
    static_x, static_y = data.x_train[:128].unsqueeze(0).clone(), data.y_train[:128].unsqueeze(0).clone()
    stream = torch.cuda.Stream()
    stream.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(stream):  # warm-up on the capture stream, as graphs.GraphedEpochs does
        graphed.gradients(static_x, static_y)
    torch.cuda.current_stream().wait_stream(stream)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph, stream=stream):
        graphed.gradients(static_x, static_y)
    previous = None
    for start in (0, 1280, 4096):
        x, y = data.x_train[start : start + 128].unsqueeze(0), data.y_train[start : start + 128].unsqueeze(0)
        static_x.copy_(x)
        static_y.copy_(y)
        graph.replay()
        eager.gradients(x, y)
        torch.cuda.synchronize()
        got = graphed.model.gather_grads().clone()
        torch.testing.assert_close(got, eager.model.gather_grads(), rtol=1e-5, atol=1e-6)
        assert previous is None or not torch.equal(got, previous)  # the replay read the new batch
        previous = got


@gpu
def test_graph_and_eager_train_the_same_run_with_dropout(small_data, cuda):
    cfg = Config(epochs=2, hidden=(256, 128), dropout=(0.2, 0.2), lr=2e-3)
    eager = train(cfg, small_data, device="cuda", progress=False, graph=False)
    graphed = train(cfg, small_data, device="cuda", progress=False, graph=True)
    assert graphed.status == eager.status == "completed"
    for a, b in zip(eager.history, graphed.history, strict=True):
        assert a["train_loss"] == pytest.approx(b["train_loss"], rel=1e-5)
        assert a["val_loss"] == pytest.approx(b["val_loss"], rel=1e-5)


@gpu
def test_a_population_on_the_gpu_equals_single_runs_without_dropout(small_data, cuda):
    configs = [Config(epochs=2, hidden=(64, 32), dropout=(0.0, 0.0), lr=lr, seed=s) for s, lr in ((0, 2e-3), (1, 1e-3))]
    results = train_population(configs, small_data, device="cuda", progress=False)
    for cfg, res in zip(configs, results, strict=True):
        ref = train(cfg, small_data, device="cuda", progress=False, graph=False)
        assert res.final_val_acc == pytest.approx(ref.final_val_acc, abs=5e-4)


@gpu
def test_a_graph_is_captured_again_when_the_optimizer_leaves_its_fused_path(small_data, cuda):
    """Two seeds share their hyperparameters (the fused update) until one is masked: the next epoch captures the per-member update."""
    data = small_data.to(cuda)
    configs = [Config(hidden=(64,), dropout=(0.0,), lr=2e-3, epochs=3, seed=s) for s in (0, 1)]
    steps = -(-len(data.y_train) // configs[0].batch_size)
    step = stacked_step(configs, data, steps)
    gens = [torch.Generator(device=cuda).manual_seed(c.seed) for c in configs]
    runner = GraphedEpochs(step, data.x_train, data.y_train, configs[0].batch_size)
    population_epoch(step, data.x_train, data.y_train, configs[0].batch_size, gens, runner)
    first = runner.graph
    assert first is not None and step.optimizer.fused is not None
    step.mask(1)
    frozen = step.model.flat[1].clone()
    population_epoch(step, data.x_train, data.y_train, configs[0].batch_size, gens, runner)
    assert step.optimizer.fused is None and runner.graph is not first
    torch.testing.assert_close(step.model.flat[1], frozen)  # the masked member's lr is 0 in the new graph
