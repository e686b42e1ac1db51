"""The whole training step captured once as a CUDA graph and replayed for every batch.

    runner = GraphedEpochs(step, x_train, y_train, batch_size)   # step: a train.PopulationStep on CUDA
    loss_sum, correct = runner.epoch(perms)                       # perms [M, n]: each member's batch order

On a GPU this network's step is bound by kernel launches, not arithmetic: the
forward, backward and optimizer are a few hundred small kernels. Replaying them as
one graph costs one launch (docs/performance.md, GPU).

What the capture covers, per full batch: gathering the batch from the device-
resident training set (the indices are copied into a static buffer first),
augmentation, dropout (torch's CUDA generator is graph-safe: each replay draws new
numbers), forward, backward, the optimizer, max-norm, the schedule (its lr and
momentum live in device tensors indexed by a device step counter) and the running
loss and accuracy sums. The shorter last batch of an epoch runs eagerly through
the same step on the same tensors: a second graph for one batch per epoch would
cost a capture for nothing. Plateau schedules and divergence masks change device
tensors between epochs, which the graph reads at replay; when they make the members'
hyperparameters differ, the optimizer leaves its fused path (optim.py) and the
step is captured again.

The first WARMUP full batches of the first epoch run eagerly, on the capture's
side stream, before the capture: they create the optimizer state and cuBLAS's
workspaces that a capture may not allocate. They are real training steps.
"""

from __future__ import annotations

import torch

WARMUP = 3  # eager steps before the capture (torch's docs use 3 for whole-network capture)


class GraphedEpochs:
    """Epochs of a PopulationStep as CUDA-graph replays: one replay per full batch, the last partial batch eager."""

    def __init__(self, step, x: torch.Tensor, y: torch.Tensor, batch_size: int) -> None:
        # x on a CUDA device: device.resolve_graph refuses a graph anywhere else before this is built
        self.step, self.x, self.y, self.batch_size = step, x, y, batch_size
        members = step.model.n_members
        self.idx = torch.zeros(members, batch_size, dtype=torch.long, device=x.device)  # the batch's rows, per member
        self.loss_sum = torch.zeros(members, device=x.device)
        self.correct = torch.zeros(members, dtype=torch.long, device=x.device)
        self.graph: torch.cuda.CUDAGraph | None = None
        self.mode = step.mode  # the host-side choices the graph holds (the optimizer's path, whether any member is masked)
        self.stream = torch.cuda.Stream(device=x.device)

    def _body(self) -> None:
        """One training step on the batch self.idx names, adding to the running sums: what the graph holds."""
        batch_loss, batch_correct = self.step.on_rows(self.x, self.y, self.idx)
        self.loss_sum += batch_loss
        self.correct += batch_correct

    def _capture(self) -> None:
        if not self.step.optimizer.state_ready():  # state made inside a capture would live in the graph's pool, reset per replay
            raise RuntimeError("the optimizer's state must exist before a CUDA-graph capture")
        self.stream.wait_stream(torch.cuda.current_stream(self.x.device))
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph, stream=self.stream):
            self._body()
        torch.cuda.current_stream(self.x.device).wait_stream(self.stream)
        self.graph = graph

    def epoch(self, perms: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Train one epoch over each member's order `perms` [M, n]; returns each member's (loss sum, correct count), on the device."""
        self.loss_sum.zero_()
        self.correct.zero_()
        if self.step.mode != self.mode:  # the members' hyperparameters came apart (plateau), or one diverged
            self.graph, self.mode = None, self.step.mode  # capture again, at this epoch's first full batch
        batches = perms.split(self.batch_size, dim=1)
        for i, rows in enumerate(batches):
            if rows.shape[1] < self.batch_size:  # the shorter last batch: eager, same step, same tensors
                batch_loss, batch_correct = self.step.on_rows(self.x, self.y, rows)
                self.loss_sum += batch_loss
                self.correct += batch_correct
                continue
            self.idx.copy_(rows)
            if self.graph is None and i < WARMUP:  # warm-up steps on the capture's stream, eagerly
                self.stream.wait_stream(torch.cuda.current_stream(self.x.device))
                with torch.cuda.stream(self.stream):
                    self._body()
                torch.cuda.current_stream(self.x.device).wait_stream(self.stream)
                continue
            if self.graph is None:
                self._capture()  # recording runs nothing: replay this batch below
            self.graph.replay()
        return self.loss_sum.clone(), self.correct.clone()
