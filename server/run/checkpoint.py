"""A federated run's state after every completed round, so a killed run can be resumed.

``checkpoint.pt`` in the run folder, written atomically at the end of every round and
after every task's evaluation, holds everything the run reads back: where it is (task,
rounds of it done), the global scholar, the replay of the task in progress, what the
strategy collected in the task (the ensemble's generators, declared counts, sites' last
updates), the round log, the accuracy matrix, generator quality, the run key the sites
keyed their state and ledgers by, the key the server samples sites by (never sent to a
site) and the server's public random state.

Resuming (``fed.resume = RUN_DIR``, ``fedreplay run --resume RUN_DIR``) restarts from the
last completed round: no round is counted twice, and a site asked again for a round it
already answered sends that reply again (:mod:`client.site_store`), so no privacy budget
is spent twice. The configuration must be the run's own (``config.json``); a different
one is refused with the keys that differ.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import numpy as np
import torch

from common.config import ExperimentConfig, drop_retired, run_config_of
from common.fileio import atomic_torch_save
from common.metrics import AccuracyMatrix
from server.methods.embedding import EmbeddingReleases

CHECKPOINT = "checkpoint.pt"
# 1: the run state's fields at the top level; 2: what the strategy collected beside them
# (both read, and moved into "state")
VERSION = 3
STATE_FIELDS = ("run_key", "rounds", "matrix", "quality", "replay_quality", "generator_sizes",
                "upload_shapes", "replay_checks", "nodes_seen", "flower_runs", "task_replies",
                "evaluations", "site_updates")  # fmt: skip
SiteGenerator = tuple[dict[str, torch.Tensor], float]  # a site's bounded generator, weight
# a site's last update: (round, partition id, {"solver": state, "generator": state})
SiteUpdate = tuple[int, int, dict[str, dict[str, torch.Tensor]]]


class ResumeError(RuntimeError):
    """The run folder cannot be resumed (no checkpoint, another config, a finished run)."""


@dataclass
class TaskState:
    """What the sites' replies of the current task left: a new task starts empty
    (:meth:`server.run.strategy.FedReplay.begin_task`); a resume mid-task keeps it."""

    # {site key: its latest bounded generator of the task, its weight}: the ensemble
    generators: dict[str, SiteGenerator] = field(default_factory=dict)
    # {site key: the class counts it reported} (replay.mixture = "class-counts")
    class_counts: dict[str, dict[int, float]] = field(default_factory=dict)
    # {site key: the num-examples it declared on its first reply of the task}: its cap
    declared: dict[str, float] = field(default_factory=dict)
    # generator.kind = "embedding": the task's releases, one per site
    releases: EmbeddingReleases = field(default_factory=EmbeddingReleases)

    def to_dict(self) -> dict[str, object]:
        return {
            "task_generators": self.generators,
            "class_counts": self.class_counts,
            "declared": self.declared,
            "releases": self.releases.snapshot(),
        }

    @classmethod
    def from_dict(cls, snapshot: dict[str, Any]) -> TaskState:
        return cls(
            generators=dict(snapshot["task_generators"]),
            class_counts=dict(snapshot.get("class_counts", {})),
            declared=dict(snapshot["declared"]),
            releases=EmbeddingReleases.restore(snapshot.get("releases")),
        )


@dataclass
class RunState:
    """What a federated run has done so far, besides its models: the record its end writes
    out (rounds.jsonl, summary.json, the report) and the key that makes it one run. The
    run holds one (``FederatedRun.state``), appends to it as it goes, and a checkpoint
    keeps it whole; a resume takes it back whole."""

    matrix: AccuracyMatrix  # accuracy on task j after task i
    run_key: str = ""  # sites key their run state and ledger entries by it
    rounds: list[dict[str, Any]] = field(default_factory=list)  # the rounds.jsonl entries
    quality: list[list[float]] = field(default_factory=list)  # the global generator, per task
    replay_quality: list[list[float]] = field(default_factory=list)  # what sites replay
    generator_sizes: list[dict[str, int]] = field(default_factory=list)  # DGM, per task
    upload_shapes: list[dict[str, list[int]]] = field(default_factory=list)  # DGM, per task
    replay_checks: list[dict[str, Any]] = field(default_factory=list)  # server.robust.replay_check
    nodes_seen: set[int] = field(default_factory=set)
    flower_runs: list[int] = field(default_factory=list)  # Flower run ids that worked on it
    # what the strategy (server.run.strategy) collected from the sites' replies:
    task_replies: TaskState = field(default_factory=TaskState)  # of the task in progress
    evaluations: dict[int, dict[str, float]] = field(default_factory=dict)  # federated, by round
    # {site id: its last update}, for the privacy audit of what left each site
    site_updates: dict[str, SiteUpdate] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        d = {k: getattr(self, k) for k in STATE_FIELDS}
        return d | {
            "matrix": [list(r) for r in self.matrix.rows],
            "nodes_seen": sorted(self.nodes_seen),
            "task_replies": self.task_replies.to_dict(),
        }

    @staticmethod
    def from_dict(d: dict[str, Any]) -> RunState:
        matrix = AccuracyMatrix(len(d["matrix"]))
        matrix.rows = [list(r) for r in d["matrix"]]
        replies = d.get("task_replies")
        return RunState(
            **{
                **d,
                "matrix": matrix,
                "nodes_seen": set(d.get("nodes_seen", ())),
                "task_replies": TaskState.from_dict(replies) if replies else TaskState(),
            }
        )


@dataclass
class RunCheckpoint:
    state: RunState  # the run's record so far
    config: dict[str, Any]  # ExperimentConfig.to_dict() with fed.resume cleared
    task: int  # the task in progress (== number of tasks: every task is done)
    task_rounds: int  # rounds of it completed (== rounds-per-task: only its evaluation left)
    arrays: dict[str, torch.Tensor]  # the global scholar, by wire key
    payload: dict[str, Any] | None  # ReplayPayload.to_dict() of the task in progress
    elapsed_s: float = 0.0  # wall time of the run before this process
    rng: dict[str, Any] = field(default_factory=dict)
    sampling_key: str = ""  # the run's key for sampling sites (server.sites.sampling)

    def save(self, folder: Path) -> Path:
        path = folder / CHECKPOINT
        d = {f.name: getattr(self, f.name) for f in fields(self)} | {"state": self.state.to_dict()}
        atomic_torch_save({"version": VERSION, **d}, path)
        return path

    @staticmethod
    def load(folder: Path) -> RunCheckpoint:
        path = folder / CHECKPOINT
        if not path.is_file():
            raise ResumeError(
                f"{folder} has no {CHECKPOINT}: it is not a run folder, or the run was killed "
                "before its first round completed (start it again instead)"
            )
        try:
            d = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as exc:
            raise ResumeError(f"{path} is unreadable ({type(exc).__name__}: {exc})") from None
        version = d.pop("version", None)
        if version == 1:  # the state's fields at the top level: the same values
            d["state"] = {k: d.pop(k) for k in STATE_FIELDS if k in d}
        if version in (1, 2):  # what the strategy collected: beside the state
            strategy = d.pop("strategy")
            d["state"] |= {
                "evaluations": dict(strategy.pop("evaluate_records")),
                "site_updates": dict(strategy.pop("site_updates")),
                "task_replies": strategy,
            }
        elif version != VERSION:
            raise ResumeError(f"{path} was written by another version of fedreplay")
        # a global model with NaN or inf would be sent to every site, and every reply then
        # refused as the sites' fault: the checkpoint is named instead
        bad = sorted(k for k, v in d["arrays"].items() if not torch.isfinite(v).all())
        if bad:
            raise ResumeError(
                f"{path} holds a global scholar with non-finite values ({', '.join(bad[:5])}"
                f"{' ...' if len(bad) > 5 else ''}); it cannot be resumed. The aggregate is "
                "checked before it is saved, so the file was altered or damaged on disk"
            )
        return RunCheckpoint(**{**d, "state": RunState.from_dict(d["state"])})

    def check_config(self, cfg: ExperimentConfig) -> None:
        """The resumed run's config must be the checkpoint's (``fed.resume`` aside)."""
        now = run_config_of(comparable(cfg))
        try:  # a run from before a key moved or was removed: read as the loader reads it
            saved = drop_retired(run_config_of(self.config), source="the run's config.json")
        except ValueError as exc:
            raise ResumeError(str(exc)) from None
        diff = sorted(k for k in set(now) | set(saved) if now.get(k) != saved.get(k))
        if diff:
            shown = ", ".join(
                f"{k}: {saved.get(k)!r} in the run, {now.get(k)!r} now" for k in diff[:6]
            )
            raise ResumeError(
                f"the config differs from the run's own config.json ({shown}); resume with "
                "the run's config (fedreplay run --resume RUN_DIR reads it for you)"
            )


def comparable(cfg: ExperimentConfig) -> dict[str, Any]:
    """The config a resume must match: all of it but ``fed.resume`` and how long the
    resumed run waits for its sites (``fed.start-timeout``: ``--resume`` sets a limit)."""
    d = cfg.to_dict()
    d["fed"] = {**d["fed"], "resume": "", "start_timeout": 0.0}
    return d


def rng_state() -> dict[str, Any]:
    """The server's public random state (node sampling, evaluation draws)."""
    kind, keys, pos, has_gauss, gauss = np.random.get_state()  # type: ignore[misc]
    return {
        "torch": torch.get_rng_state(),
        "python": random.getstate(),
        "numpy": (kind, torch.from_numpy(np.array(keys)), pos, has_gauss, gauss),
    }


def set_rng_state(state: dict[str, Any]) -> None:
    if not state:
        return
    torch.set_rng_state(state["torch"])
    random.setstate(state["python"])
    kind, keys, pos, has_gauss, gauss = state["numpy"]
    np.random.set_state((kind, keys.numpy(), pos, has_gauss, gauss))
