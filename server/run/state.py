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
        state=run.state,
        sampling_key=run.fedreplay.sampler.key,
        config=comparable(run.cfg),
        task=task,
        task_rounds=task_rounds,
        arrays={k: torch.from_numpy(v.numpy().copy()) for k, v in run.arrays.items()},
        payload=payload.to_dict() if payload is not None else None,
        elapsed_s=run.elapsed(),
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
    if len(ckpt.state.matrix.rows) != len(run.stream):
        raise ResumeError(f"{path}: the checkpoint has {len(ckpt.state.matrix.rows)} tasks, the "
                          f"config {len(run.stream)}")  # fmt: skip
    ckpt.state.nodes_seen |= run.state.nodes_seen  # (this process's nodes: seen too)
    run.fedreplay.state = ckpt.state  # the run's record, whole
    run.fedreplay.sampler.key = ckpt.sampling_key or secrets.token_hex(16)
    run.elapsed_before = ckpt.elapsed_s
    set_rng_state(ckpt.rng)
    # rounds logged after the checkpoint (killed in between) are dropped: they run again
    folder.rewrite_jsonl("rounds.jsonl", run.state.rounds)
    log.info(
        "resuming %s: task %d/%d after %d of its %d rounds (run key %s, %d rounds done)",
        path,
        min(ckpt.task + 1, len(run.stream)),
        len(run.stream),
        ckpt.task_rounds,
        run.cfg.fed.rounds_per_task,
        ckpt.state.run_key,
        len(run.state.rounds),
    )
    return folder, ckpt
