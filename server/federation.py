"""A federated continual-learning run: tasks in sequence, ``rounds-per-task`` rounds each.

For every task the server (1) builds the replay payload from the finished tasks (the
aggregated scholar in ``global`` mode, every site's generator in ``ensemble`` mode),
(2) runs the FedReplay strategy for the task's rounds, (3) evaluates the global solver
after every round on the test data of all tasks seen (central) and/or collects the sites'
own evaluations (federated), and (4) writes everything to the run folder.
"""

from __future__ import annotations

import logging
import os
import resource
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch
from flwr.app import ArrayRecord, ConfigRecord, MetricRecord
from flwr.serverapp import Grid
from flwr.serverapp.strategy import Strategy

from common import wire
from common.audit.canaries import run_canaries
from common.config import ExperimentConfig
from common.data.streams import build_stream
from common.data.types import TaskStream
from common.device import seed_everything, select_device
from common.evaluator import train_evaluator
from common.metrics import AccuracyMatrix, evaluate_tasks, per_task_generator_quality
from common.models import build_generator, build_solver
from common.plots import plot_rounds
from common.replay import GenerativeReplay, ReplayPayload
from common.results import RunFolder, build_summary, summary_line
from common.run_artifacts import save_final_artifacts
from server.aggregation import Bounds
from server.client_dp import ClientLevelDP
from server.privacy_report import write_privacy_report
from server.site_registry import SiteRegistry
from server.strategy import FedReplay

log = logging.getLogger("fedreplay.server")

OUTPUT_DIR_ENV = "FEDREPLAY_OUTPUT_DIR"
DEFAULT_OUTPUT_BASE = "~/fedreplay"


def resolve_output_dir(configured: str) -> Path:
    """Where a federated run's folders are created, independent of the working directory.

    The ServerApp runs in a process started by the SuperLink, whose working directory is
    wherever that SuperLink was started (for ``flwr run``'s local SuperLink: the directory
    of the *first* ``flwr run`` that started it), so a relative ``output-dir`` is resolved
    against ``$FEDREPLAY_OUTPUT_DIR`` if set (as seen by the ServerApp process), else against
    ``~/fedreplay``. The default ``output-dir = "runs"`` therefore lands in
    ``~/fedreplay/runs``. An absolute ``output-dir`` (``~`` expanded) is used as is.
    """
    path = Path(configured or "runs").expanduser()
    if path.is_absolute():
        return path
    base = os.environ.get(OUTPUT_DIR_ENV, "") or DEFAULT_OUTPUT_BASE
    return (Path(base).expanduser() / path).absolute()


class RunFailed(RuntimeError):
    """The run ended without a single accepted site update: it failed (its folder holds
    ``summary.json`` with ``status: failed`` and the reason)."""

    def __init__(self, message: str, run: RunFolder) -> None:
        super().__init__(message)
        self.run = run


class FederatedRun:
    def __init__(self, cfg: ExperimentConfig, *, num_nodes_hint: int | None = None) -> None:
        self.cfg = cfg
        self.device = select_device(cfg.device)
        # Initialisation and public choices only: no private mechanism draws from these
        # generators (DP noise and sampling use secret ones, common.privacy.randomness).
        seed_everything(cfg.seed)
        self.stream: TaskStream = build_stream(cfg)
        k, shape = self.stream.num_classes, self.stream.shape
        self.solver = build_solver(cfg.solver, shape, k).to(self.device)
        self.generator = (
            build_generator(cfg.generator, shape, k).to(self.device) if cfg.uses_generator else None
        )
        self.central = cfg.fed.evaluate in ("central", "both")
        self.fedreplay = FedReplay(
            solver=self.solver,
            generator=self.generator,
            fraction_train=cfg.fed.fraction_train,
            min_train_nodes=cfg.fed.min_sites,
            min_available_nodes=cfg.fed.min_sites,
            fraction_evaluate=1.0 if cfg.fed.evaluate in ("federated", "both") else 0.0,
            client_dp=(
                ClientLevelDP(cfg.dp.client_noise_multiplier, cfg.dp.client_clip_norm)
                if cfg.dp.client_level
                else None
            ),
            registry=SiteRegistry() if cfg.dp.enabled else None,
            start_timeout=cfg.fed.start_timeout,
            bounds=(  # client-level DP's clipped, noised mean replaces the rule
                None
                if cfg.dp.client_level
                else Bounds(
                    rule=cfg.aggregation_rule,
                    update_clip=cfg.fed.update_clip,
                    weight_cap=cfg.fed.weight_cap,
                    trim_fraction=cfg.fed.trim_fraction,
                    num_malicious=cfg.fed.num_malicious,
                )
            ),
        )
        self.strategy: Strategy = self.fedreplay
        self.matrix = AccuracyMatrix(len(self.stream))
        self.rounds: list[dict[str, Any]] = []
        self.quality: list[list[float]] = []  # the aggregated generator, after each task
        self.replay_quality: list[list[float]] = []  # what sites replay, after each task
        self.final_payload: ReplayPayload | None = None  # what would be replayed next
        self.task = 0
        self.nodes_seen: set[int] = set()

    # --- evaluation ------------------------------------------------------------------------
    def _load(self, arrays: ArrayRecord) -> None:
        wire.load_scholar(arrays, self.solver, self.generator)

    def evaluate_central(self, local_round: int, arrays: ArrayRecord) -> MetricRecord | None:
        if local_round == 0 or not self.central:
            return None
        self._load(arrays)
        accs = evaluate_tasks(self.solver, self.stream.tasks, self.task, device=self.device)
        out = {f"accuracy-task-{j}": a for j, a in enumerate(accs)}
        out["accuracy"] = sum(accs) / len(accs)
        return MetricRecord(out)  # type: ignore[arg-type]

    # --- the run ------------------------------------------------------------------------------
    def run(self, grid: Grid) -> RunFolder:
        cfg, stream = self.cfg, self.stream
        self.run_id = int(grid.run.run_id)
        self.fedreplay.run_key = str(self.run_id)
        start = time.perf_counter()
        run = RunFolder.create(resolve_output_dir(cfg.output_dir), cfg.experiment)
        self.nodes_seen |= set(grid.get_node_ids())  # simulation: every SuperNode
        run.save_config(cfg)
        log.info(
            "run folder %s | %s, %s replay, %d tasks x %d rounds",
            run.path,
            cfg.method,
            cfg.replay.mode,
            len(stream),
            cfg.fed.rounds_per_task,
        )
        evaluator = None
        if self.generator is not None and self.central and cfg.eval.generator_quality:
            evaluator = train_evaluator(stream, device=self.device, seed=cfg.seed)
        arrays = wire.scholar_record(self.solver, self.generator)
        boundaries: list[int] = []
        payload: ReplayPayload | None = None  # what sites replay during task t
        for t, task in enumerate(stream.tasks):
            self.task = t
            offset = t * cfg.fed.rounds_per_task
            boundaries.append(offset)
            self.fedreplay.begin_task(payload, round_offset=offset)
            train_config = ConfigRecord(
                {
                    "task": t,
                    "iterations": cfg.train.iterations,
                    "seed": cfg.seed + 1000 * t,
                }
            )
            result = self.strategy.start(
                grid=grid,
                initial_arrays=arrays,
                num_rounds=cfg.fed.rounds_per_task,
                timeout=cfg.fed.round_timeout or 3600.0 * 24,
                train_config=train_config,
                evaluate_config=ConfigRecord({"task": t}),
                evaluate_fn=self.evaluate_central,
            )
            if len(result.arrays):  # empty when no round of the task aggregated anything
                arrays = result.arrays
            else:
                log.warning(
                    "task %d: no site update was accepted; the global scholar is unchanged", t + 1
                )
            self._load(arrays)
            self._log_rounds(run, t, result)
            accs = self._task_accuracies(t)
            self.matrix.record(t, accs)
            payload = self._payload(t + 1)  # the frozen scholar(s) after task t
            self.final_payload = payload
            if evaluator is not None and self.generator is not None:
                self.quality.append(self._quality(self.generator.sample, evaluator, t))
                if payload is not None:
                    source = self._replay_source(payload)
                    self.replay_quality.append(self._quality(source.inputs, evaluator, t))
                    log.info(
                        "replay after task %d (%s, %d generators): quality per task %s",
                        t + 1,
                        cfg.replay.mode,
                        len(payload.generators),
                        " ".join(f"{q:.2f}" for q in self.replay_quality[-1]),
                    )
            log.info(
                "after task %d/%d (%s): accuracies %s, average %.1f%%",
                t + 1,
                len(stream),
                task.name,
                " ".join(f"{a:.1%}" for a in accs),
                100 * self.matrix.average_accuracy(t),
            )
        return self._finish(run, start, boundaries)

    def _quality(self, sample_fn: Any, evaluator: torch.nn.Module, t: int) -> list[float]:
        return per_task_generator_quality(
            sample_fn,
            evaluator,
            self.stream.tasks,
            t,
            samples_per_class=self.cfg.eval.samples_per_class,
            device=self.device,
        )

    def _replay_source(self, payload: ReplayPayload) -> GenerativeReplay:
        """The payload as the sites replay it (the mixture, for ``ensemble``)."""
        gens = []
        for state in payload.generators:
            gen = build_generator(self.cfg.generator, self.stream.shape, self.stream.num_classes)
            gen.load_state_dict(state)
            gens.append(gen.to(self.device).eval())
        return GenerativeReplay(
            gens,
            self.solver,
            payload.classes,
            weights=payload.weights,
            retries=self.cfg.replay.retries,
            rng=torch.Generator().manual_seed(self.cfg.seed),
        )

    def _payload(self, t: int) -> ReplayPayload | None:
        """What sites replay while learning task t (None when nothing is replayed)."""
        if t == 0 or self.generator is None:
            return None
        classes = self.stream.classes_seen(t - 1)
        solver = {k: v.detach().cpu() for k, v in self.solver.state_dict().items()}
        if self.cfg.replay.mode == "ensemble" and self.fedreplay.task_generators:
            gens = self.fedreplay.task_generators
            return ReplayPayload(
                t,
                solver,
                tuple(g for g, _ in gens.values()),
                tuple(n for _, n in gens.values()),
                classes,
            )
        generator = {k: v.detach().cpu() for k, v in self.generator.state_dict().items()}
        return ReplayPayload(t, solver, (generator,), (1.0,), classes)

    def _task_accuracies(self, t: int) -> list[float]:
        if self.central:
            return evaluate_tasks(self.solver, self.stream.tasks, t, device=self.device)
        last = self.fedreplay.evaluate_records.get((t + 1) * self.cfg.fed.rounds_per_task, {})
        return [float(last.get(f"accuracy-task-{j}", float("nan"))) for j in range(t + 1)]

    def _log_rounds(self, run: RunFolder, t: int, result: Any) -> None:
        records = self.fedreplay.round_records[-self.cfg.fed.rounds_per_task :]
        for local, rec in enumerate(records, start=1):
            central = result.evaluate_metrics_serverapp.get(local)
            federated = self.fedreplay.evaluate_records.get(rec.server_round)
            evaluation = dict(central) if central is not None else federated or {}
            entry = {
                "round": rec.server_round,
                "task": t,
                "task_round": local,
                "accuracy": evaluation.get("accuracy"),
                "accuracies": [evaluation.get(f"accuracy-task-{j}") for j in range(t + 1)],
                "federated_evaluation": federated,
                "sampled": len(rec.sampled),
                "sites": [asdict(r) | {"generator": None} for r in rec.replies],
                "failures": {str(k): v for k, v in rec.failures.items()},
                "aggregate_refused": rec.refused_aggregate,
            }
            self.rounds.append(entry)
            run.append_jsonl("rounds.jsonl", entry)

    def _nodes(self) -> set[int]:
        sampled = {n for rec in self.fedreplay.round_records for n in rec.sampled}
        return self.nodes_seen | sampled

    def _finish(self, run: RunFolder, start: float, boundaries: list[int]) -> RunFolder:
        cfg, stream = self.cfg, self.stream
        names = [t.name for t in stream.tasks]
        rounds = [r["round"] for r in self.rounds]
        per_task = {
            names[j]: [
                (r["accuracies"][j] if j < len(r["accuracies"]) else None) for r in self.rounds
            ]
            for j in range(len(stream))
        }
        plot_rounds(
            rounds,
            [r["accuracy"] for r in self.rounds],
            run.file("rounds.png"),
            task_boundaries=[b + 1 for b in boundaries[1:]],  # first round of each new task
            per_task=per_task,  # type: ignore[arg-type]
            title=f"federated {cfg.method} on {stream.dataset}",
        )
        save_final_artifacts(
            run,
            matrix=self.matrix,
            stream=stream,
            method=cfg.method,
            solver=self.solver,
            generator=self.generator,
            where=f"federated, {cfg.replay.mode} replay",
            sampler=(  # the samples grid shows what sites replay: the mixture, for ensemble
                self._replay_source(self.final_payload).inputs
                if self.final_payload is not None
                else None
            ),
        )
        if self.final_payload is not None and cfg.replay.mode == "ensemble":
            torch.save(  # the ensemble: every site's generator of the last task, weighted
                {
                    "generators": list(self.final_payload.generators),
                    "weights": list(self.final_payload.weights),
                },
                run.file("final_ensemble.pt"),
            )
        site_rounds = [s for r in self.rounds for s in r["sites"]]
        up = [s["metrics"].get("bytes-up", 0.0) for s in site_rounds]
        down = [s["metrics"].get("bytes-down", 0.0) for s in site_rounds]
        extra = {
            "rounds": len(self.rounds),
            # the sites that took part (bare `flwr run` simulates 2 SuperNodes whatever
            # fed.num-sites says), at least fed.num-sites
            "num_sites": max(cfg.fed.num_sites, len(self._nodes())),
            "replay_mode": cfg.replay.mode,
            "bytes_up_per_site_round": sum(up) / max(len(up), 1),
            "bytes_down_per_site_round": sum(down) / max(len(down), 1),
            "site_rounds": len(site_rounds),
            "failures": sum(len(r["failures"]) for r in self.rounds),
            "aggregates_refused": sum(1 for r in self.rounds if r["aggregate_refused"]),
            "aggregation": cfg.aggregation_rule,
            "wall_time_per_round_s": None,
            "server_peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
            "seed": cfg.seed,
            "run_id": self.run_id,
        }
        extra.update(write_privacy_report(run, cfg, self.rounds))
        torch.save(  # what each site last sent: the privacy audit's view of a site's release
            {
                site: {"round": rnd, "partition": pid, **parts}
                for site, (rnd, pid, parts) in sorted(self.fedreplay.site_updates.items())
            },
            run.file("site_updates.pt"),
        )
        canaries = run_canaries(cfg, stream.shape, stream.num_classes)
        if canaries is not None:  # for fedreplay-audit models (one-run canary bound)
            torch.save(
                {
                    "x": canaries.split.x,
                    "y": canaries.split.y,
                    "include": torch.as_tensor(canaries.include),
                    "site": cfg.audit.canary_site,
                    "task": cfg.audit.task_index(len(stream)),
                },
                run.file("canaries.pt"),
            )
        if self.replay_quality:
            # what the sites replay after the last task (the mixture, for ensemble)
            extra["generator_quality"] = self.replay_quality[-1]
            extra["replay_quality_per_task"] = self.replay_quality
        if self.quality:
            extra["aggregated_generator_quality"] = self.quality[-1]
        wall = time.perf_counter() - start
        extra["wall_time_per_round_s"] = wall / max(len(self.rounds), 1)
        summary = build_summary(
            matrix=self.matrix,
            wall_time_s=wall,
            method=cfg.method,
            dataset=stream.dataset,
            scenario=stream.scenario,
            experiment=cfg.experiment,
            extra=extra,
        )
        accepted = sum(
            1
            for r in self.rounds
            if not r["aggregate_refused"]
            for site in r["sites"]
            if site["metrics"].get("num-examples", 0.0) > 0
        )
        if not accepted:  # every site failed, was refused or had nothing to train on
            reasons = sorted({v for r in self.rounds for v in r["failures"].values()})
            reasons += sorted(
                {r["aggregate_refused"] for r in self.rounds if r["aggregate_refused"]}
            )
            summary["status"] = "failed"
            summary["failure_reason"] = (
                f"no site update was accepted in any of {len(self.rounds)} rounds"
                + (f"; failures: {'; '.join(reasons[:3])}" if reasons else "")
            )
        run.write_summary(summary)
        log.info("%s", summary_line(summary))
        print(summary_line(summary), flush=True)
        print(run.path, flush=True)
        if summary["status"] != "completed":
            raise RunFailed(f"run failed: {summary['failure_reason']} ({run.path})", run)
        return run
