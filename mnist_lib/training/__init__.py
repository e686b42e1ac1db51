"""Model and training: the MLP (model), batch augmentation (augment), the autograd step (engine) and its hand-written ReLU fast path (backprop), the loop (train) and what it shares (setup), many models side by side (population), CUDA-graph replay (graphs), metrics (evaluate), memory estimates (memory).

Imports core and data.
"""
