"""Model and training: the MLP (model), batch augmentation (augment), M models as one (stacked), their optimizer (optim), the one step and loop (train) and what it sets up (setup), CUDA-graph replay (graphs), metrics (evaluate), memory estimates (memory).

Imports core and data.
"""
