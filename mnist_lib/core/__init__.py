"""The vocabulary every layer shares: the Config, the dataset registry, paths, the user-error type and safe file reading.

Nothing here imports from the other layers. The dataset registry sits here, not in
data/, because the Config validates `dataset` and `val_size` against it.
"""
