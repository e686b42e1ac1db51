"""CUDA-only: the graph-captured step against the eager step, and populations on the GPU.

Skipped on a machine without CUDA (the one kind of skip this suite allows). Run them
on the GPU machine with `PYTHONPATH=$PWD python3 -m pytest -q tests/test_gpu.py`
(README, Performance, GPU).
"""

import pytest
import torch

from mnist_lib import MLP, Config, train
from mnist_lib.training.graphs import GraphedEpochs
from mnist_lib.training.stacked import StackedMLP
from mnist_lib.training.train import PopulationStep, population_epoch, train_population

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
CUDA = torch.device("cuda")


def stacked_step(configs, data, steps):
    models = []
    for c in configs:
        torch.manual_seed(c.seed)
        models.append(MLP.from_config(c))
    model = StackedMLP(models, device=CUDA)
    return PopulationStep(configs, model, data, steps)


def test_one_graph_replay_gives_the_eager_steps_gradients(small_data):
    """The same batch through a captured step and an eager step, no dropout: gradients to 1e-5."""
    data = small_data.to(CUDA)
    cfg = Config(hidden=(256, 128), dropout=(0.0, 0.0), norm="batch", lr_schedule="cosine", epochs=2)
    steps = 8
    eager = stacked_step([cfg], data, steps)
    graphed = stacked_step([cfg], data, steps)
    x, y = data.x_train[:128].unsqueeze(0), data.y_train[:128].unsqueeze(0)
    eager.gradients(x, y)
    static_x, static_y = x.clone(), y.clone()
    stream = torch.cuda.Stream()
    stream.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(stream):  # warm-up on the capture stream, as graphs.GraphedEpochs does
        graphed.gradients(static_x, static_y)
    torch.cuda.current_stream().wait_stream(stream)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph, stream=stream):
        graphed.gradients(static_x, static_y)
    graph.replay()
    torch.cuda.synchronize()
    torch.testing.assert_close(graphed.model.gather_grads(), eager.model.gather_grads(), rtol=1e-5, atol=1e-6)


def test_graphed_epochs_equal_eager_epochs_without_dropout(small_data):
    """Whole epochs (warm-up, capture, replays, the eager last batch, the schedule): the same metrics as eager."""
    data = small_data.to(CUDA)
    configs = [Config(hidden=(128, 64), dropout=(0.0, 0.0), lr=2e-3, lr_schedule="onecycle", epochs=2, seed=s) for s in (0, 1)]
    steps = -(-len(data.y_train) // configs[0].batch_size)
    x = data.x_train
    results = []
    for graphed in (False, True):
        step = stacked_step(configs, data, steps)
        gens = [torch.Generator(device=CUDA).manual_seed(c.seed) for c in configs]
        runner = GraphedEpochs(step, x, data.y_train, configs[0].batch_size) if graphed else None
        results.append([population_epoch(step, x, data.y_train, configs[0].batch_size, gens, runner) for _ in range(2)])
        results[-1].append([step.model.flat.clone()])
    (e1, e2, eager_params), (g1, g2, graph_params) = results
    for a, b in ((e1, g1), (e2, g2)):
        for la, lb in zip(a[0], b[0], strict=True):
            assert la == pytest.approx(lb, rel=1e-4)
    for a, b in zip(eager_params, graph_params, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)


def test_graph_and_eager_training_agree_within_seed_noise(small_data):
    cfg = Config(epochs=3, hidden=(256, 128), dropout=(0.2, 0.2), lr=2e-3)
    eager = train(cfg, small_data, device="cuda", progress=False, graph=False)
    graphed = train(cfg, small_data, device="cuda", progress=False, graph=True)
    assert graphed.status == "completed"
    assert abs(graphed.final_val_acc - eager.final_val_acc) < 0.01


def test_a_population_on_the_gpu_equals_single_runs_without_dropout(small_data):
    configs = [Config(epochs=2, hidden=(64, 32), dropout=(0.0, 0.0), lr=lr, seed=s) for s, lr in ((0, 2e-3), (1, 1e-3))]
    results = train_population(configs, small_data, device="cuda", progress=False)
    for cfg, res in zip(configs, results, strict=True):
        ref = train(cfg, small_data, device="cuda", progress=False, graph=False)
        assert res.final_val_acc == pytest.approx(ref.final_val_acc, abs=5e-4)


def test_a_graph_is_captured_again_when_the_optimizer_leaves_its_fused_path(small_data):
    """Two seeds share their hyperparameters (the fused update) until one is masked: the next epoch captures the per-member update."""
    data = small_data.to(CUDA)
    configs = [Config(hidden=(64,), dropout=(0.0,), lr=2e-3, epochs=3, seed=s) for s in (0, 1)]
    steps = -(-len(data.y_train) // configs[0].batch_size)
    step = stacked_step(configs, data, steps)
    gens = [torch.Generator(device=CUDA).manual_seed(c.seed) for c in configs]
    runner = GraphedEpochs(step, data.x_train, data.y_train, configs[0].batch_size)
    population_epoch(step, data.x_train, data.y_train, configs[0].batch_size, gens, runner)
    first = runner.graph
    assert first is not None and step.optimizer.fused is not None
    step.mask(1)
    frozen = step.model.flat[1].clone()
    population_epoch(step, data.x_train, data.y_train, configs[0].batch_size, gens, runner)
    assert step.optimizer.fused is None and runner.graph is not first
    torch.testing.assert_close(step.model.flat[1], frozen)  # the masked member's lr is 0 in the new graph
