"""Model and training: the MLP (model), batch augmentation (augment), the autograd step (engine) and its hand-written ReLU fast path (backprop), the loop (train), metrics (evaluate), memory estimates (memory).

Imports core and data.
"""
