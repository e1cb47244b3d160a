"""Differential privacy: DP-SGD steps, secret randomness, accounting, lifetime ledgers.

Scope of every figure: sample-level (add/remove one record of one site), per site,
(epsilon, delta) from the named accountant, over the site's lifetime (every round, task and
run on its records; per-task partitions under parallel composition). See
docs/privacy-audit.md, section 0, for what is treated as public.
"""
