"""Checks a simulation passes before it starts: a run that cannot work is refused with the
numbers, instead of every site sitting out for minutes and the run failing at its end.

Only for simulations: the launcher holds every simulated site's data (the operator's own),
so it may count records. A deployment's sites hold theirs; the server never sees a count
that was not released.
"""

from __future__ import annotations

from common.config import ConfigError, ExperimentConfig

# the data modules load torch: imported when a check runs, so `fedreplay run --help` is quick


def simulated_records(cfg: ExperimentConfig) -> list[list[int]]:
    """Training records of every task at every simulated site: ``[site][task]``."""
    from common.sitedata import SiteIdentity, site_records

    n = cfg.fed.num_sites
    return [
        [len(task.train) for task in site_records(cfg, SiteIdentity(p, n)).tasks] for p in range(n)
    ]


def check_simulation(cfg: ExperimentConfig) -> None:
    """Under sample-level DP a site sits a task out when it holds fewer than
    ``dp.min-records`` records of it (by its released count). A task every site would sit
    out is never learned: refused here, naming the counts. (Data that cannot be found is
    left to the run, which names every path it tried.)"""
    if not cfg.dp.enabled or cfg.dp.min_records == 0:
        return
    from common.data.root import DatasetNotFoundError

    try:
        counts = simulated_records(cfg)
    except DatasetNotFoundError:
        return
    m = cfg.dp.min_records
    for t in range(len(counts[0]) if counts else 0):
        held = [site[t] for site in counts]
        if max(held) < m:
            raise ConfigError(
                f"dp.min-records={m}, but every one of the {len(held)} simulated sites holds "
                f"fewer records of task {t + 1} ({min(held)}-{max(held)}; {cfg.data.name} "
                f"split over {len(held)} sites): every site would sit the task out and the "
                f"run would learn nothing. Use fewer sites (--sites), a larger dataset, or "
                f"lower dp.min-records (below about 100 records DP-SGD's noise drowns the "
                f"signal; 0 trains any site holding a record, and reveals that it does)"
            )
