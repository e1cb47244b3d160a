"""The run's privacy ledger, built from what every site reported each round.

Sample-level DP: each site's own lifetime ledger is authoritative (on the site's disk);
the server collects the ``dp-*`` metrics the sites reported into ``privacy_ledger.json``
(per site, per task, per round: the site's lifetime epsilon and this run's own share) and
plots epsilon over rounds. Client-level DP: the server's own releases
(:mod:`server.privacy.client_dp`) are accounted here with RDP, one Gaussian mechanism of noise
multiplier sigma per released round and no sampling amplification (which sites train is
chosen by a key in the server's run folder, server.sites.sampling: not secret enough to count).
"""

from __future__ import annotations

from typing import Any

from common.config import ExperimentConfig
from common.plots import plot_epsilon
from common.privacy.accountant import compute_epsilon
from common.privacy.composition import LIFETIME, PER_TASK, SEQUENTIAL, scope
from common.results import RunFolder
from server.privacy.client_ledger import LEDGER as CLIENT_LEDGER
from server.privacy.client_ledger import ClientLevelLedger
from server.round_record import site_key
from server.sites.registry import server_dir

CLIENT_SCOPE = (
    "client-level (add/remove one site's whole data), server-side clipping and secret noise, "
    "composed over all released rounds; no amplification by site sampling (not secret)"
)


def site_ledger(rounds: list[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    """{site id: [one row per round the site trained in]} from rounds.jsonl entries."""
    ledger: dict[str, list[dict[str, Any]]] = {}
    for entry in rounds:
        for site in entry["sites"]:
            m = site["metrics"]
            if "dp-epsilon" not in m:
                continue
            ledger.setdefault(site_key(site.get("site_id"), site["node_id"]), []).append(
                {
                    "task": entry["task"],
                    "round": entry["round"],
                    "noise_multiplier": m["dp-noise-multiplier"],
                    "sample_rate": m["dp-sample-rate"],
                    "steps": m["dp-steps"],
                    "max_grad_norm": m["dp-max-grad-norm"],
                    "epsilon": m["dp-epsilon"],
                    # against a server colluding with every other site (distributed noise)
                    "own_noise_epsilon": m.get("dp-epsilon-own-noise", m["dp-epsilon"]),
                    "run_epsilon": m.get("dp-run-epsilon", m["dp-epsilon"]),
                    "task_epsilon": m.get("dp-task-epsilon", m["dp-epsilon"]),
                    "composition": PER_TASK if m.get("dp-per-task", 0.0) else SEQUENTIAL,
                    "delta": m["dp-delta"],
                    "budget_left": m["dp-budget-left"],
                }
            )
    return ledger


def write_privacy_report(
    run: RunFolder, cfg: ExperimentConfig, rounds: list[dict[str, Any]], *, run_key: str = ""
) -> dict[str, Any]:
    """Write the ledger and plot; return the summary's privacy fields (empty if no DP)."""
    dp = cfg.dp
    if dp.enabled:
        ledger = site_ledger(rounds)
        compositions = {str(row["composition"]) for rows in ledger.values() for row in rows}
        # one scope for the run: sequential if any site composed sequentially
        composition = PER_TASK if compositions == {PER_TASK} else SEQUENTIAL
        run.write_json(
            "privacy_ledger.json",
            {
                "scope": scope(composition),
                "composition": composition,
                "accountant": dp.accountant,
                "target_epsilon": dp.target_epsilon,
                "sites": ledger,
                "refused": _refusals(rounds),
            },
        )
        if not ledger:  # no site trained (e.g. every site refused): nothing new was spent
            return {
                "dp_scope": scope(composition),
                "dp_accountant": dp.accountant,
                "dp_epsilon": None,
            }
        final = {pid: rows[-1] for pid, rows in ledger.items()}
        delta = max(row["delta"] for row in final.values())
        plot_epsilon(
            {
                f"{pid}": ([int(r["round"]) for r in rows], [r["epsilon"] for r in rows])
                for pid, rows in sorted(ledger.items())
            },
            run.file("epsilon.png"),
            delta=delta,
            accountant=dp.accountant,
            title=f"privacy spent per site (budget {dp.target_epsilon}, {composition} composition)",
            per_task=(
                {f"{pid}": _task_segments(rows) for pid, rows in sorted(ledger.items())}
                if composition == PER_TASK
                else None
            ),
        )
        return {
            "dp_scope": scope(composition),
            "dp_composition": composition,
            "dp_accountant": dp.accountant,
            "dp_delta": delta,
            # the largest lifetime epsilon of the sites after the run, and this run's share
            "dp_epsilon": max(row["epsilon"] for row in final.values()),
            "dp_epsilon_run": max(row["run_epsilon"] for row in final.values()),
            "dp_epsilon_is": LIFETIME,
            "dp_target_epsilon": dp.target_epsilon,
            "dp_noise_multiplier_max": max(
                row["noise_multiplier"] for rows in ledger.values() for row in rows
            ),
            "dp_epsilon_per_site": {pid: row["epsilon"] for pid, row in final.items()},
            "dp_epsilon_run_per_site": {pid: row["run_epsilon"] for pid, row in final.items()},
            # the sites' guarantee against a server colluding with every other site: larger
            # than dp_epsilon only under distributed noise (fed.aggregation = "secure")
            "dp_epsilon_own_noise": max(row["own_noise_epsilon"] for row in final.values()),
        }
    if dp.client_level:
        delta = dp.delta  # explicit (config refuses 0 under DP)
        released = [r["round"] for r in rounds if r["sites"]]
        # the federation's lifetime: every earlier run's releases are composed in first
        lifetime = ClientLevelLedger(server_dir() / CLIENT_LEDGER)
        prior = lifetime.prior(run_key)
        eps, eps_run = lifetime.epsilons(
            run_key,
            noise_multiplier=dp.client_noise_multiplier,
            releases=len(released),
            delta=delta,
        )
        lifetime.record(
            run_key, noise_multiplier=dp.client_noise_multiplier, releases=len(released)
        )
        run.write_json(
            "privacy_ledger.json",
            {
                "scope": CLIENT_SCOPE,
                "accountant": "rdp",
                "sampling": "none assumed (q = 1): sites are sampled by a key in the run folder",
                "noise_multiplier": dp.client_noise_multiplier,
                "clip_norm": dp.client_clip_norm,
                "delta": delta,
                "epsilon_is": "lifetime of the federation (every run in this server folder)",
                "earlier_releases": sum(n for *_, n in prior),
                "rounds": [{"round": r, "epsilon": e} for r, e in zip(released, eps, strict=True)],
            },
        )
        if released:
            plot_epsilon(
                {"server (client-level)": (released, eps)},
                run.file("epsilon.png"),
                delta=delta,
                accountant="rdp",
                title="client-level privacy spent",
            )
        return {
            "dp_scope": CLIENT_SCOPE,
            "dp_accountant": "rdp",
            "dp_delta": delta,
            "dp_epsilon": eps[-1]
            if eps
            else compute_epsilon(prior, delta=delta, kind="rdp")
            if prior
            else 0.0,
            "dp_epsilon_run": eps_run,
            "dp_epsilon_is": "lifetime of the federation (every run in this server folder)",
        }
    return {}


def _task_segments(rows: list[dict[str, Any]]) -> tuple[list[int], list[float]]:
    """(rounds, task epsilons) with a NaN gap between tasks, so that the plot draws one
    rising segment per task instead of joining a task's end to the next task's start."""
    rounds: list[int] = []
    eps: list[float] = []
    for i, row in enumerate(rows):
        if i and row["task"] != rows[i - 1]["task"]:
            rounds.append(int(row["round"]))
            eps.append(float("nan"))
        rounds.append(int(row["round"]))
        eps.append(float(row["task_epsilon"]))
    return rounds, eps


def _refusals(rounds: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Rounds in which a site refused to train because of its budget."""
    return [
        {"round": r["round"], "node": node, "reason": reason}
        for r in rounds
        for node, reason in r["failures"].items()
        if "budget" in reason
    ]
