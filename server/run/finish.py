"""The end of a federated run: everything written to its folder once every task is done."""

from __future__ import annotations

import logging
import resource
from typing import TYPE_CHECKING

import torch

from common.data.canaries import run_canaries
from common.plots import plot_rounds
from common.provenance import provenance
from common.results import RunFolder, build_summary, summary_line
from common.run_artifacts import save_final_artifacts
from common.run_report import write_run_report
from common.tensorboard_export import write_scalars
from server.privacy.report import write_privacy_report
from server.sites.status import site_lines, site_table

if TYPE_CHECKING:
    from server.run.federation import FederatedRun

log = logging.getLogger("fedreplay.server")


class RunFailed(RuntimeError):
    """The run ended without learning what it was meant to (see :func:`failure_reason`):
    its folder holds ``summary.json`` with ``status: failed`` and the reason."""

    def __init__(self, message: str, run: RunFolder) -> None:
        super().__init__(message)
        self.run = run


def failure_reason(rounds: list[dict]) -> str | None:
    """Why a run failed, or None. It failed when no site update was accepted in any round
    (every site failed, was refused or had nothing to train on), or when a whole task
    went by without an accepted update while sites failed or the aggregate was refused:
    that task was never learned. (A task every site sat out, e.g. under ``dp.min-records``,
    without failures, is not a failure.)"""

    def reasons(rs: list[dict]) -> str:
        found = sorted({v for r in rs for v in r["failures"].values()})
        found += sorted({r["aggregate_refused"] for r in rs if r["aggregate_refused"]})
        return f"; failures: {'; '.join(found[:3])}" if found else ""

    if not any(r["accepted"] for r in rounds):
        return f"no site update was accepted in any of {len(rounds)} rounds" + reasons(rounds)
    lost = [
        t
        for t in sorted({r["task"] for r in rounds})
        if not any(r["accepted"] for r in rounds if r["task"] == t)
        and any(r["failures"] or r["aggregate_refused"] for r in rounds if r["task"] == t)
    ]
    if lost:
        in_lost = [r for r in rounds if r["task"] in lost]
        tasks = ", ".join(str(t + 1) for t in lost)
        return f"no site update was accepted in task {tasks}" + reasons(in_lost)
    return None


def finish_run(run: FederatedRun, boundaries: list[int]) -> RunFolder:
    """Plots, final models, privacy report, audit files and ``summary.json`` of a run
    whose tasks are all done; a failed run (:func:`failure_reason`) raises
    :class:`RunFailed` (its summary says ``failed``)."""
    folder = run.folder
    cfg, stream = run.cfg, run.stream
    names = [t.name for t in stream.tasks]
    rounds = [r["round"] for r in run.state.rounds]
    per_task = {
        names[j]: [
            (r["accuracies"][j] if j < len(r["accuracies"]) else None) for r in run.state.rounds
        ]
        for j in range(len(stream))
    }
    plot_rounds(
        rounds,
        [r["accuracy"] for r in run.state.rounds],
        folder.file("rounds.png"),
        task_boundaries=[b + 1 for b in boundaries[1:]],  # first round of each new task
        per_task=per_task,  # type: ignore[arg-type]
        title=f"federated {cfg.method} on {stream.dataset}",
    )
    save_final_artifacts(
        folder,
        matrix=run.state.matrix,
        stream=stream,
        method=cfg.method,
        solver=run.solver,
        generator=run.generator,
        where=(
            "single site"
            if cfg.fed.num_sites == 1 and len(run._nodes()) <= 1
            else f"federated, {cfg.replay.mode} replay"
            if cfg.uses_generator
            else "federated"
        ),
        sampler=(  # the samples grid shows what sites replay: the mixture, for ensemble
            run._replay_source(run.final_payload).inputs
            if run.final_payload is not None and run.final_payload.generators
            else None
        ),
    )
    last = run.final_payload
    if last is not None and last.generators and cfg.replay.mode in ("ensemble", "per-task"):
        # the ensemble: every site's generator of the last task (per-task: of every task,
        # with the classes each draws), weighted (class-counts: per class)
        torch.save(
            {
                "generators": list(last.generators),
                "weights": list(last.weights),
                "generator_classes": [list(c) for c in last.generator_classes],
                "class_weights": [list(w) for w in last.class_weights],
            },
            folder.file("final_ensemble.pt"),
        )
    site_rounds = [s for r in run.state.rounds for s in r["sites"]]
    up = [s["metrics"].get("bytes-up", 0.0) for s in site_rounds]
    down = [s["metrics"].get("bytes-down", 0.0) for s in site_rounds]
    extra = {
        "rounds": len(run.state.rounds),
        # the sites that took part (bare `flwr run` simulates 2 SuperNodes whatever
        # fed.num-sites says), at least fed.num-sites
        "num_sites": max(cfg.fed.num_sites, len(run._nodes())),
        "replay_mode": cfg.replay.mode,
        "bytes_up_per_site_round": sum(up) / max(len(up), 1),
        "bytes_down_per_site_round": sum(down) / max(len(down), 1),
        "site_rounds": len(site_rounds),
        "failures": sum(len(r["failures"]) for r in run.state.rounds),
        # per site: trained / sat out / failed / refused, and generators left out of replay
        "sites": site_table(run.state.rounds, run.state.replay_checks),
        "replay_checks": run.state.replay_checks,  # server.robust.replay_check: scores per task
        "aggregates_refused": sum(1 for r in run.state.rounds if r["aggregate_refused"]),
        "aggregation": cfg.aggregation_rule,
        "wall_time_per_round_s": None,
        "server_peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "seed": cfg.seed,
        "run_id": run.state.flower_runs[0],
        "flower_run_ids": run.state.flower_runs,  # more than one: the run was resumed
        "run_key": run.state.run_key,
        "input_shape": list(stream.shape),  # the audits read the run from its folder alone
        "num_classes": stream.num_classes,
        "tasks": stream.describe_tasks(),  # each task's classes, by index and name
        "provenance": provenance(),  # fedreplay version and commit, the stack, date, machine
    }
    extra.update(write_privacy_report(folder, cfg, run.state.rounds, run_key=run.state.run_key))
    torch.save(  # what each site last sent: the privacy audit's view of a site's release
        {
            site: {"round": rnd, "partition": pid, **parts}
            for site, (rnd, pid, parts) in sorted(run.state.site_updates.items())
        },
        folder.file("site_updates.pt"),
    )
    canaries = run_canaries(cfg, stream.shape, stream.num_classes)
    if canaries is not None:  # for fedreplay audit models (one-run canary bound)
        torch.save(
            {
                "x": canaries.split.x,
                "y": canaries.split.y,
                "include": torch.as_tensor(canaries.include),
                "site": cfg.audit.canary_site,
                "task": cfg.audit.task_index(len(stream)),
            },
            folder.file("canaries.pt"),
        )
    if run.state.replay_quality:
        # what the sites replay after the last task (the mixture, for ensemble)
        extra["generator_quality"] = run.state.replay_quality[-1]
        extra["replay_quality_per_task"] = run.state.replay_quality
    if run.state.quality:
        extra["aggregated_generator_quality"] = run.state.quality[-1]
    if run.state.generator_sizes:  # DGM: the generator's size and use after every task
        extra["generator_sizes"] = run.state.generator_sizes
        extra["generator_upload_shapes"] = run.state.upload_shapes  # what sites sent, per task
    wall = run.elapsed()
    extra["wall_time_per_round_s"] = wall / max(len(run.state.rounds), 1)
    summary = build_summary(
        matrix=run.state.matrix,
        wall_time_s=wall,
        method=cfg.method,
        dataset=stream.dataset,
        scenario=stream.scenario,
        experiment=cfg.experiment,
        extra=extra,
    )
    reason = failure_reason(run.state.rounds)
    if reason:
        summary["status"] = "failed"
        summary["failure_reason"] = reason
    folder.write_summary(summary)
    write_scalars(folder.path, run.state.rounds, summary["accuracy_matrix"])  # tensorboard --logdir
    write_run_report(folder.path)  # report.html: the page to open (fedreplay report redoes it)
    for line in site_lines(summary["sites"]):  # every site that did not simply train
        print(line, flush=True)
    print(summary_line(summary), flush=True)
    print(folder.path, flush=True)
    if summary["status"] != "completed":
        raise RunFailed(f"run failed: {summary['failure_reason']} ({folder.path})", folder)
    return folder
