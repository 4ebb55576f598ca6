"""Hyperparameter sweeps: many federated runs trained as one batched program.

`spec` expands a grid into runs and groups them by program structure, `group` trains
a group, `report` writes the results table and the best config, and `sweep.run_sweep`
ties them together (experiments/sweep.py is its command line).
"""
