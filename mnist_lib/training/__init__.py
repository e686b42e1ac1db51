"""Model and training, read in this order: model -> stacked -> optim -> train -> graphs.

    model.py     MLP: the layer list (Linear -> norm -> activation -> dropout), the form saved and loaded
    stacked.py   M MLPs as one module, built from that layer list; every parameter a view into one flat buffer
    optim.py     Adam, AdamW, SGD over the flat buffer (torch's fused kernel, or per-member hyperparameters)
    train.py     the one step (PopulationStep) and the one loop (train_population; train is a population of one)
    graphs.py    the same step captured as a CUDA graph and replayed per batch
and what they call: device.py (device, threads, dtype, graph or not), augment.py,
evaluate.py (metrics), memory.py (will it fit?).

One run from the command line to its record is followed in 8 files: cli.py ->
core/config.py (Config, RunOptions) -> workflows/experiment.py (checks, the
record's life) -> data/splits.py (the split) -> training/train.py (step and
loop) -> training/stacked.py (the forward, over model.py's layers) ->
training/optim.py (the update) -> records/runs.py (the record's files). The
rest it passes through are leaves a reader can take on trust: safe files
(core/files.py), run folders (records/claim.py), IDX reading (data/idx.py),
device.py, memory.py, evaluate.py, plots.py.

Imports core and data.
"""
