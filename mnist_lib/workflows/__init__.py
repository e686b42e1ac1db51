"""Whole workflows built on the layers below: one run end to end (experiment), notebooks in batch (batch), sweeps (sweep, sweep_spec, sweep_store, sweep_report).

Imports every layer below; only the CLI (mnist_lib/cli.py) imports it.
"""
