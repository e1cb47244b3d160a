"""A federated continual-learning run: tasks in sequence, ``rounds-per-task`` rounds each.

For every task the server (1) builds the replay payload from the finished tasks
(server.run.replay_payload: ``global``, ``ensemble`` or ``per-task``),
(2) runs the FedReplay strategy for the task's rounds, (3) evaluates the global solver
after every round on the test data of all tasks seen (central) and/or collects the sites'
own evaluations (federated), and (4) writes everything to the run folder.
"""

from __future__ import annotations

import logging
import secrets
import time
from dataclasses import asdict
from typing import Any

import torch
from flwr.app import ArrayRecord, ConfigRecord, MetricRecord
from flwr.serverapp import Grid
from flwr.serverapp.strategy import Strategy

from common import wire
from common.config import ExperimentConfig
from common.data.streams import build_stream
from common.data.types import TaskStream
from common.device import seed_everything, select_device, slow_bf16
from common.evaluator import train_evaluator
from common.metrics import AccuracyMatrix, evaluate_tasks, per_task_generator_quality
from common.models import build_generator, build_solver
from common.replay import GenerativeReplay, ReplayPayload
from common.results import RunFolder
from server.methods import server_side
from server.privacy.client_dp import ClientLevelDP
from server.robust import replay_check
from server.robust.aggregation import Bounds
from server.run.checkpoint import RunCheckpoint, RunState
from server.run.console import flower_log_in
from server.run.finish import finish_run
from server.run.inprocess import InProcessGrid
from server.run.output_dir import resolve_output_dir
from server.run.progress_grid import ProgressGrid
from server.run.replay_payload import next_payload, replay_source
from server.run.secure_aggregation import SecureAggregationGrid
from server.run.state import load_for_resume, save_checkpoint
from server.run.strategy import FedReplay
from server.sites.registry import SiteRegistry
from server.sites.sampling import QUERY_TIMEOUT
from server.sites.status import count_line, node_names, round_status

QUALITY_SAMPLES = 100  # draws per class when the replay's quality is scored

log = logging.getLogger("fedreplay.server")


def eta(seconds: float, rounds_done: int, rounds_left: int) -> str:
    """``, about 2 min left`` from this process's pace (rounds include their evaluation)."""
    if rounds_done <= 0 or rounds_left <= 0:
        return ""
    left = seconds / rounds_done * rounds_left
    return f", about {left / 60:.0f} min left" if left >= 120 else f", about {left:.0f} s left"


class FederatedRun:
    def __init__(self, cfg: ExperimentConfig, *, num_nodes_hint: int | None = None) -> None:
        self.cfg = cfg
        self.device = select_device(cfg.device)
        # Initialisation and public choices only: no private mechanism draws from these
        # generators (DP noise and sampling use secret ones, common.privacy.randomness).
        seed_everything(cfg.seed)
        self.stream: TaskStream = build_stream(cfg)
        k, shape = self.stream.num_classes, self.stream.shape
        self.solver = build_solver(cfg, shape, k).to(self.device)
        self.generator = (
            build_generator(cfg, shape, k).to(self.device) if cfg.fits_generator else None
        )
        self.central = cfg.fed.evaluate in ("central", "both")
        # what the method does at the server beyond the loop (server.methods)
        self.side = server_side(cfg, self.stream, self.generator)
        self.travelling = self.side.travelling  # the generator sites send (None: the server's)
        self.fedreplay = FedReplay(
            # the run's record (rounds, accuracy matrix, quality, run key, what the replies
            # left): what a checkpoint keeps; the strategy reads and writes it
            state=RunState(matrix=AccuracyMatrix(len(self.stream))),
            solver=self.solver,
            generator=self.travelling,
            fraction_train=cfg.fed.fraction_train,
            min_train_nodes=cfg.fed.min_sites,
            min_available_nodes=cfg.fed.min_sites,
            fraction_evaluate=1.0 if cfg.fed.evaluate in ("federated", "both") else 0.0,
            client_dp=(
                ClientLevelDP(
                    noise_multiplier=cfg.dp.client_noise_multiplier,
                    clip_norm=cfg.dp.client_clip_norm,
                )
                if cfg.dp.client_level
                else None
            ),
            registry=SiteRegistry() if cfg.dp.enabled else None,
            start_timeout=cfg.fed.start_timeout,
            query_timeout=cfg.fed.round_timeout or QUERY_TIMEOUT,
            bounds=(  # client-level DP's clipped, noised mean replaces the rule
                None
                if cfg.dp.client_level
                # (secure: the solver a reply stands for is the server's own)
                else Bounds(
                    rule="fedavg" if cfg.secure_aggregation else cfg.aggregation_rule,
                    **asdict(cfg.robust),
                )
            ),
            secure=cfg.secure_aggregation,
        )
        self.strategy: Strategy = self.fedreplay
        self.rounds_before = 0  # rounds done by earlier processes of a resumed run (the ETA)
        self.final_payload: ReplayPayload | None = None  # what would be replayed next
        self.task = 0
        self.elapsed_before = 0.0  # wall time of earlier processes (a resumed run)
        self.started = time.perf_counter()
        self.folder: RunFolder
        self.arrays: ArrayRecord
        self.evaluator: torch.nn.Module | None = None

    @property
    def state(self) -> RunState:
        """The run's record, one object: the strategy writes what the replies leave, the
        loop the rest; a checkpoint keeps it whole and a resume replaces it whole."""
        return self.fedreplay.state

    # --- evaluation ------------------------------------------------------------------------
    def _load(self, arrays: ArrayRecord) -> None:
        wire.load_scholar(arrays, self.solver, self.travelling)

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
        cfg, stream, R = self.cfg, self.stream, self.cfg.fed.rounds_per_task
        self.run_id = int(grid.run.run_id)
        self.started = time.perf_counter()
        self.state.nodes_seen |= set(grid.get_node_ids())  # simulation: every SuperNode
        if isinstance(grid, InProcessGrid):  # simulated sites: ids bound to partitions
            self.fedreplay.sites.bind_all(grid.site_bindings())
        grid = ProgressGrid(grid)  # a line as sites answer, within a long round
        if cfg.secure_aggregation:  # train rounds under SecAgg+: the server gets only the sum
            grid = SecureAggregationGrid(
                grid,
                on_sum=self.fedreplay.receive_sum,
                shape=lambda: self.fedreplay.embedding_shape,  # (the task's release)
                timeout=cfg.fed.round_timeout or None,
            )
        if cfg.fed.resume:
            self.folder, ckpt = self._resume()
            first_task, done = ckpt.task, ckpt.task_rounds
            arrays = wire.array_record({k: v.numpy() for k, v in ckpt.arrays.items()})
            # the reference every reply is checked against takes the checkpoint's shapes
            wire.load_scholar(arrays, self.solver, self.travelling, adopt_shapes=True)
            payload = ReplayPayload.from_dict(ckpt.payload) if ckpt.payload else None
            self.fedreplay.expected_sites = sorted(
                {s["site_id"] for r in ckpt.state.rounds for s in r["sites"] if s.get("site_id")}
            )
        else:
            self.folder = RunFolder.create(resolve_output_dir(cfg.output_dir), cfg.experiment)
            self.folder.save_config(cfg)
            # unique per run (an in-process grid's run id is always 1), kept on resume: sites
            # key their state and privacy ledger entries by it
            self.state.run_key = f"{self.run_id}-{secrets.token_hex(4)}"
            self.fedreplay.sampler.key = secrets.token_hex(16)  # the server's own
            ckpt, first_task, done = None, 0, 0
            arrays = wire.scholar_record(self.solver, self.travelling)
            payload = None
        self.state.flower_runs.append(self.run_id)
        log.info(
            "run folder %s | %s, %s, %d tasks x %d rounds",
            self.folder.path,
            cfg.method,
            f"{cfg.replay.mode} replay" if cfg.uses_generator else "no generative replay",
            len(stream),
            R,
        )
        slow = slow_bf16(self.device) if cfg.train.precision == "bf16" else ""
        if slow:
            log.warning(slow)
        self.rounds_before = len(self.state.rounds)
        with flower_log_in(self.folder.path):  # the console keeps the project's own lines
            self.evaluator = None
            if self.generator is not None and self.central and cfg.generator.quality:
                self.evaluator = train_evaluator(stream, device=self.device, seed=cfg.seed)
            for t in range(first_task, len(stream)):
                self._learn_task(grid, t, arrays, payload, done, ckpt if t == first_task else None)
                payload = self._end_task(t)
                arrays, done = self.arrays, 0  # (DGM: the grown generator)
                self._checkpoint(task=t + 1, task_rounds=0, payload=payload)
            return finish_run(self, [t * R for t in range(len(stream))])

    def _learn_task(
        self,
        grid: Grid,
        t: int,
        arrays: ArrayRecord,
        payload: ReplayPayload | None,
        done: int,
        ckpt: RunCheckpoint | None,
    ) -> None:
        """The rounds of task ``t`` not ``done`` yet; ``self.arrays`` holds the result."""
        cfg, R = self.cfg, self.cfg.fed.rounds_per_task
        self.task = t
        shape = self.side.release_shape(t)
        self.fedreplay.begin_task(  # (a checkpoint at a task's end: nothing of it carries on)
            payload,
            round_offset=t * R + done,
            embedding_shape=shape,
            resumed_mid_task=ckpt is not None and done > 0,
        )
        self.arrays = arrays
        self.side.begin_task(self, t)
        log.info(
            "task %d/%d (%s): rounds %d-%d",
            t + 1,
            len(self.stream),
            self.stream.tasks[t].name,
            t * R + done + 1,
            (t + 1) * R,
        )
        if done < R:
            self.strategy.start(
                grid=grid,
                initial_arrays=arrays,
                num_rounds=R - done,
                timeout=cfg.fed.round_timeout or 3600.0 * 24,
                train_config=ConfigRecord(
                    {
                        "task": t,
                        "iterations": cfg.train.iterations,
                        "seed": cfg.seed + 1000 * t,
                        wire.INPUT_SHAPE: wire.shape_text(self.stream.shape),
                    }
                ),
                evaluate_config=ConfigRecord(
                    {"task": t, wire.INPUT_SHAPE: wire.shape_text(self.stream.shape)}
                ),
                evaluate_fn=self._after_round,
            )

    def _after_round(self, local_round: int, arrays: ArrayRecord) -> MetricRecord | None:
        """Flower's evaluate_fn, called after every round (and once before the first): the
        central evaluation, the round's log line and the checkpoint."""
        if local_round == 0:
            return None
        self.arrays = arrays  # the previous model when the round aggregated nothing
        self.side.after_round(self)
        central = self.evaluate_central(local_round, self.arrays)
        rec = self.fedreplay.round_records[-1]
        task_round = rec.server_round - self.task * self.cfg.fed.rounds_per_task
        self._log_round(self.task, task_round, rec, central)
        entry = self.state.rounds[-1]
        total = len(self.stream) * self.cfg.fed.rounds_per_task
        eps = [s["metrics"]["dp-epsilon"] for s in entry["sites"] if "dp-epsilon" in s["metrics"]]
        log.info(
            "round %d/%d (task %d): sites %s%s%s%s, %.0f s elapsed%s",
            rec.server_round,
            total,
            self.task + 1,
            count_line(entry["site_status"]),
            f", accuracy {entry['accuracy']:.1%}" if entry["accuracy"] is not None else "",
            f", epsilon up to {max(eps):.2f}" if eps else "",
            " (aggregate refused)" if rec.refused_aggregate else "",
            self.elapsed(),
            eta(
                time.perf_counter() - self.started,
                len(self.state.rounds) - self.rounds_before,
                total - rec.server_round,
            ),
        )
        self._checkpoint(task=self.task, task_rounds=task_round, payload=self.fedreplay.payload)
        return central

    def _end_task(self, t: int) -> ReplayPayload | None:
        """Evaluate the global scholar after task ``t``; the replay for task ``t + 1``."""
        cfg, task = self.cfg, self.stream.tasks[t]
        self._load(self.arrays)
        if not any(r["accepted"] for r in self.state.rounds if r["task"] == t):
            log.warning("task %d: no site update was accepted; the scholar is unchanged", t + 1)
        self.side.end_task(self, t)  # (DGM: masks binarised, the task's final generator)
        accs = self._task_accuracies(t)
        self.state.matrix.record(t, accs)
        payload = self._payload(t + 1)  # the frozen scholar(s) after task t
        self.final_payload = payload
        if self.evaluator is not None and self.generator is not None:
            self.state.quality.append(self._quality(self.generator.sample, self.evaluator, t))
            if payload is not None:
                source = self._replay_source(payload)
                self.state.replay_quality.append(self._quality(source.inputs, self.evaluator, t))
                log.info(
                    "replay after task %d (%s, %d generators): quality per task %s",
                    t + 1,
                    cfg.replay.mode,
                    len(payload.generators),
                    " ".join(f"{q:.2f}" for q in self.state.replay_quality[-1]),
                )
        log.info(
            "after task %d/%d (%s): accuracies %s, average %.1f%%",
            t + 1,
            len(self.stream),
            task.name,
            " ".join(f"{a:.1%}" for a in accs),
            100 * self.state.matrix.average_accuracy(t),
        )
        return payload

    # --- run state (server.run.state) -------------------------------------------------------
    def _checkpoint(self, *, task: int, task_rounds: int, payload: ReplayPayload | None) -> None:
        save_checkpoint(self, task=task, task_rounds=task_rounds, payload=payload)

    def _resume(self) -> tuple[RunFolder, RunCheckpoint]:
        return load_for_resume(self)

    def elapsed(self) -> float:
        """Wall time of the run so far, over every process that worked on it."""
        return self.elapsed_before + time.perf_counter() - self.started

    def _quality(self, sample_fn: Any, evaluator: torch.nn.Module, t: int) -> list[float]:
        return per_task_generator_quality(
            sample_fn,
            evaluator,
            self.stream.tasks,
            t,
            samples_per_class=QUALITY_SAMPLES,
            device=self.device,
        )

    def _replay_source(self, payload: ReplayPayload) -> GenerativeReplay:
        return replay_source(self.cfg, self.stream, payload, self.solver, self.device)

    def _payload(self, t: int) -> ReplayPayload | None:
        """What sites replay while learning task t (server.run.replay_payload), of the sites'
        generators that pass the replay check (server.robust.replay_check)."""
        generators = self.state.task_replies.generators
        if t > 0 and self.generator is not None and generators and replay_check.applies(self.cfg):
            generators, record = replay_check.check_replay(
                self.cfg, self.stream, t, generators, self.solver, self.device
            )
            self.state.replay_checks.append(record)
            for site, why in record["left_out"].items():
                log.warning("task %d: %s's generator %s", t, site, why)
        return next_payload(
            self.cfg,
            self.stream,
            t,
            solver=self.solver,
            generator=self.generator,
            site_generators=generators,
            class_counts=self.state.task_replies.class_counts,
            previous=self.side.previous(self.fedreplay.payload, t - 1),
        )

    def _task_accuracies(self, t: int) -> list[float]:
        if self.central:
            return evaluate_tasks(self.solver, self.stream.tasks, t, device=self.device)
        last = self.state.evaluations.get((t + 1) * self.cfg.fed.rounds_per_task, {})
        return [float(last.get(f"accuracy-task-{j}", float("nan"))) for j in range(t + 1)]

    def _node_names(self) -> dict[int, str]:
        sites = self.fedreplay.sites
        return node_names({**sites.owners, **sites.bound}, self.fedreplay.sampler.site_of)

    def _log_round(self, t: int, task_round: int, rec: Any, central: MetricRecord | None) -> None:
        federated = self.state.evaluations.get(rec.server_round)
        evaluation = dict(central) if central is not None else federated or {}
        entry = {
            "round": rec.server_round,
            "task": t,
            "task_round": task_round,
            "accuracy": evaluation.get("accuracy"),
            "accuracies": [evaluation.get(f"accuracy-task-{j}") for j in range(t + 1)],
            "federated_evaluation": federated,
            "sampled": len(rec.sampled),
            "sites": [asdict(r) | {"generator": None} for r in rec.replies],
            "failures": {str(k): v for k, v in rec.failures.items()},
            "site_status": round_status(rec, self._node_names()),
            "aggregate_refused": rec.refused_aggregate,
            "accepted": rec.refused_aggregate is None
            and any(r.metrics.get("num-examples", 0.0) > 0 for r in rec.replies),
        }
        self.state.rounds.append(entry)
        self.folder.append_jsonl("rounds.jsonl", entry)

    def _nodes(self) -> set[int]:
        sampled = {n for rec in self.fedreplay.round_records for n in rec.sampled}
        return self.state.nodes_seen | sampled
