"""Experiments: configs (``specs``, ``experiment``), the runner and its technique handlers, the store of
results, grids of runs (``sweep``) and their executors, the results schema and notebook profiles."""
