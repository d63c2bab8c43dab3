"""Comparison reports over groups of runs: ``python -m esper.simic.report --help``.

loading (runs from dirs), statistics (bootstrap intervals), analysis (the numbers),
plots and render (the files), wandb_io (W&B in and out).
"""
