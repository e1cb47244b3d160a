"""A federated run's state on disk: the checkpoint written after every round and task, and
the resume that reads it back into a fresh :class:`server.run.federation.FederatedRun` (the
format: :mod:`server.run.checkpoint`)."""

from __future__ import annotations

import logging
import secrets
from typing import TYPE_CHECKING

import torch

from common.replay import ReplayPayload
from common.results import RunFolder
from server.run.checkpoint import ResumeError, RunCheckpoint, comparable, rng_state, set_rng_state
from server.run.output_dir import resolve_output_dir

if TYPE_CHECKING:
    from server.run.federation import FederatedRun

log = logging.getLogger("fedreplay.server")


def save_checkpoint(
    run: FederatedRun, *, task: int, task_rounds: int, payload: ReplayPayload | None
) -> None:
    """The run's checkpoint: everything a resumed process reads back (server.run.checkpoint)."""
    RunCheckpoint(
        run_key=run.run_key,
        sampling_key=run.fedreplay.sampler.key,
        config=comparable(run.cfg),
        task=task,
        task_rounds=task_rounds,
        arrays={k: torch.from_numpy(v.numpy().copy()) for k, v in run.arrays.items()},
        payload=payload.to_dict() if payload is not None else None,
        strategy=run.fedreplay.snapshot(),
        rounds=run.rounds,
        matrix=run.matrix.rows,
        quality=run.quality,
        replay_quality=run.replay_quality,
        generator_sizes=run.generator_sizes,
        upload_shapes=run.upload_shapes,
        replay_checks=run.replay_checks,
        nodes_seen=sorted(run.nodes_seen),
        elapsed_s=run.elapsed(),
        flower_runs=run.flower_runs,
        rng=rng_state(),
    ).save(run.folder.path)


def load_for_resume(run: FederatedRun) -> tuple[RunFolder, RunCheckpoint]:
    """The run folder of ``fed.resume`` and its checkpoint, loaded into this run."""
    path = resolve_output_dir(run.cfg.fed.resume)
    ckpt = RunCheckpoint.load(path)
    ckpt.check_config(run.cfg)
    folder = RunFolder(path)
    if folder.file("summary.json").is_file():
        raise ResumeError(f"{path} has finished (summary.json exists): nothing to resume")
    run.run_key, run.rounds = ckpt.run_key, list(ckpt.rounds)
    run.fedreplay.sampler.key = ckpt.sampling_key or secrets.token_hex(16)
    run.matrix.rows = [list(r) for r in ckpt.matrix]
    run.quality, run.replay_quality = ckpt.quality, ckpt.replay_quality
    run.generator_sizes = list(ckpt.generator_sizes)
    run.upload_shapes = list(ckpt.upload_shapes)
    run.replay_checks = list(ckpt.replay_checks)
    run.nodes_seen |= set(ckpt.nodes_seen)
    run.elapsed_before, run.flower_runs = ckpt.elapsed_s, list(ckpt.flower_runs)
    set_rng_state(ckpt.rng)
    # rounds logged after the checkpoint (killed in between) are dropped: they run again
    folder.rewrite_jsonl("rounds.jsonl", run.rounds)
    log.info(
        "resuming %s: task %d/%d after %d of its %d rounds (run key %s, %d rounds done)",
        path,
        min(ckpt.task + 1, len(run.stream)),
        len(run.stream),
        ckpt.task_rounds,
        run.cfg.fed.rounds_per_task,
        ckpt.run_key,
        len(run.rounds),
    )
    return folder, ckpt
