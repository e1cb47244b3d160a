"""Differential privacy: DP-SGD steps, per-site accounting, budgets and the ledger.

Scope of every figure: sample-level (one record of one site), per site, (epsilon, delta)
from the named accountant, composed over all tasks and rounds of the run.
"""
