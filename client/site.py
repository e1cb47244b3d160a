"""A site in the federation, in plain PyTorch (no Flower): its data partition, its learner,
its cached replay source and its private state.

The ClientApp rebuilds a :class:`Site` for every message (in deployment each message runs
in a fresh process) and restores what must persist from ``Context.state``: the critic
(VAE encoder / GAN discriminator) and the replay payload of the current task.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Mapping
from dataclasses import dataclass, replace
from functools import lru_cache

import torch

from common.audit.canaries import run_canaries
from common.config import ExperimentConfig
from common.data.holdout import withhold
from common.data.partition import site_stream
from common.data.streams import build_stream
from common.data.types import TaskStream, concat
from common.device import select_device
from common.metrics import accuracy
from common.models import build_generator, build_solver
from common.privacy.budget import SitePrivacy
from common.privacy.calibrate import planned_events
from common.privacy.composition import resolve_composition
from common.privacy.dp_step import DPPlan
from common.replay import ReplayPayload
from common.sitestate import site_dir
from common.training.learner import Learner, ReplaySource, real_data_for, replay_for


@dataclass(frozen=True)
class SiteIdentity:
    """Which share of the data this site holds (simulation: from node_config)."""

    partition_id: int
    num_partitions: int

    @staticmethod
    def from_node_config(node_config: Mapping[str, object], default_sites: int) -> SiteIdentity:
        pid = int(node_config.get("partition-id", 0))  # type: ignore[call-overload]
        num = int(node_config.get("num-partitions", default_sites))  # type: ignore[call-overload]
        if not 0 <= pid < num:
            raise ValueError(f"node_config partition-id={pid} is outside 0..{num - 1}")
        return SiteIdentity(pid, num)


DATA_ROOT_KEY = "data-root"


def apply_node_config(cfg: ExperimentConfig, node_config: Mapping[str, object]) -> ExperimentConfig:
    """The run config as this site sees it: a non-empty ``data-root`` in the node config
    (``flower-supernode --node-config "data-root=/path ..."``) replaces ``data.root``, so each
    site reads its data from its own location."""
    root = str(node_config.get(DATA_ROOT_KEY, "") or "")
    if not root or root == cfg.data.root:
        return cfg
    return dataclasses.replace(cfg, data=dataclasses.replace(cfg.data, root=root))


@lru_cache(maxsize=4)
def _global_stream(cfg: ExperimentConfig) -> TaskStream:
    """Every task's records that sites may train on: the audit holdout is cut off first."""
    stream, _ = withhold(build_stream(cfg), fraction=cfg.audit.holdout, seed=cfg.seed)
    return stream


@lru_cache(maxsize=64)
def site_records(cfg: ExperimentConfig, identity: SiteIdentity) -> TaskStream:
    """This site's share of every task (train and test) of the real data, no canaries."""
    stream = _global_stream(cfg)
    if identity.num_partitions > 1:
        stream = site_stream(
            stream,
            site=identity.partition_id,
            num_sites=identity.num_partitions,
            cfg=cfg.partition,
            seed=cfg.seed,
        )
    return stream


@lru_cache(maxsize=64)
def local_stream(cfg: ExperimentConfig, identity: SiteIdentity) -> TaskStream:
    """What this site trains and tests on, identical in every process: its share of every
    task plus, at the canary site, the included canaries in the canary task."""
    stream = site_records(cfg, identity)
    canaries = run_canaries(cfg, stream.shape, stream.num_classes)
    if canaries is not None and identity.partition_id == cfg.audit.canary_site:
        at = cfg.audit.task_index(len(stream))  # one task: a canary is one record of one task
        inserted = canaries.included  # a private record like any other: clipped, counted
        tasks = tuple(
            replace(t, train=concat([t.train, inserted])) if i == at else t
            for i, t in enumerate(stream.tasks)
        )
        stream = replace(stream, tasks=tasks)
    return stream


@lru_cache(maxsize=16)
def site_composition(cfg: ExperimentConfig, identity: SiteIdentity) -> str:
    """How this site's DP steps compose: per task when every record is in one task (the
    check fingerprints every record, so it runs once per process and site)."""
    tasks = local_stream(cfg, identity).tasks
    task_data = [real_data_for(cfg.method, tasks, t) for t in range(len(tasks))]
    return resolve_composition(cfg.dp.composition, task_data, where=f"site {identity.partition_id}")


class Site:
    def __init__(self, cfg: ExperimentConfig, identity: SiteIdentity) -> None:
        self.cfg = cfg
        self.identity = identity
        self.device = select_device(cfg.device)
        self.stream = local_stream(cfg, identity)
        torch.manual_seed(cfg.seed)  # identical initial critic at every site
        self.learner = Learner(
            cfg, shape=self.stream.shape, num_classes=self.stream.num_classes, device=self.device
        )

    # --- state that travels -------------------------------------------------------
    @property
    def solver(self) -> torch.nn.Module:
        return self.learner.solver

    @property
    def generator(self) -> torch.nn.Module | None:
        return self.learner.generator

    # --- state that stays ------------------------------------------------------------
    def critic_state(self) -> dict[str, torch.Tensor] | None:
        critic = self.learner.critic
        return None if critic is None else {k: v.cpu() for k, v in critic.state_dict().items()}

    def load_critic_state(self, state: Mapping[str, torch.Tensor]) -> None:
        if self.learner.critic is not None:
            self.learner.critic.load_state_dict(dict(state))

    def replay_source(self, payload: ReplayPayload | None) -> ReplaySource | None:
        """Frozen models built from the server's payload (None before the first boundary)."""
        if payload is None:
            return None
        shape, k = self.stream.shape, self.stream.num_classes
        solver = build_solver(self.cfg.solver, shape, k)
        solver.load_state_dict(payload.solver)
        gens = []
        for state in payload.generators:
            gen = build_generator(self.cfg.generator, shape, k)
            gen.load_state_dict(state)
            gens.append(gen.to(self.device).eval().requires_grad_(False))
        return ReplaySource(
            solver.to(self.device).eval().requires_grad_(False),
            tuple(gens),
            payload.weights,
            payload.classes,
        )

    # --- work ---------------------------------------------------------------------------
    def _dp_records(self, task: int) -> int:
        """Records this site trains on privately at ``task`` (0: it sits the task out)."""
        n = len(real_data_for(self.cfg.method, self.stream.tasks, task))
        return n if n >= self.cfg.dp.min_records else 0

    def privacy(self, run_id: int) -> SitePrivacy:
        """This site's privacy state for the run (created with calibrated noise if new)."""
        cfg = self.cfg
        sizes = [self._dp_records(t) for t in range(len(self.stream))]
        gen_steps = cfg.train.generator_steps() if cfg.uses_generator else 0
        plan = planned_events(
            sizes,
            batch_size=cfg.train.batch_size,
            rounds_per_task=cfg.fed.rounds_per_task,
            steps_per_round=cfg.train.iterations + gen_steps,
        )
        path = site_dir() / "privacy" / f"run-{run_id}" / f"site-{self.identity.partition_id}.json"
        num_samples = sum(len(t.train) for t in self.stream.tasks)
        return SitePrivacy.open(
            path,
            dp=cfg.dp,
            plan=plan,
            num_samples=num_samples,
            composition=site_composition(cfg, self.identity),
        )

    def train(
        self,
        task: int,
        *,
        payload: ReplayPayload | None,
        iterations: int,
        seed: int,
        run_id: int = 0,
        server_round: int = 0,
    ) -> dict[str, float]:
        if not 0 <= task < len(self.stream):
            raise ValueError(f"task {task} is outside this stream's 0..{len(self.stream) - 1}")
        if task > 0 and self.cfg.method == "dgr" and (payload is None or payload.task != task):
            have = "none" if payload is None else f"task {payload.task}"
            raise ValueError(f"task {task} needs the replay payload for task {task}; have {have}")
        rng = torch.Generator().manual_seed(seed)
        replay = replay_for(self.cfg, self.stream.tasks, task, self.replay_source(payload), rng=rng)
        real = real_data_for(self.cfg.method, self.stream.tasks, task)
        if len(real) == 0:
            return {"num-examples": 0.0, "train-time-s": 0.0, "empty": 1.0}
        plan, privacy, steps = None, None, [0]
        if self.cfg.dp.enabled:
            if self._dp_records(task) == 0:  # too few records to train on privately: sit out
                return {"num-examples": 0.0, "train-time-s": 0.0, "empty": 1.0}
            privacy = self.privacy(run_id)
            q = min(1.0, self.cfg.train.batch_size / len(real))
            sigma = privacy.noise_multiplier(task)
            gen_steps = self.cfg.train.generator_steps(iterations) if self.learner.generator else 0
            events = [(sigma, q, iterations)] + ([(sigma, q, gen_steps)] if gen_steps else [])
            privacy.spend(events, task=task, server_round=server_round)  # before any step

            def count() -> None:
                steps[0] += 1

            plan = DPPlan(sigma, self.cfg.dp.max_grad_norm, q, on_step=count)
        metrics = self.learner.train(
            real,
            replay=replay,
            num_tasks_seen=task + 1,
            classes_seen=self.stream.classes_seen(task),
            iterations=iterations,
            seed=seed,
            dp=plan,
        )
        out = {k.replace("_", "-"): v for k, v in metrics.items()}
        if privacy is not None:
            recorded = int(privacy.ledger[-1]["steps"])
            if steps[0] != recorded:  # more steps than recorded would be a leak
                raise RuntimeError(f"took {steps[0]} DP steps but recorded {recorded}")
            out.update(privacy.metrics())
        return out

    def evaluate(self, task: int) -> dict[str, float]:
        """Accuracy of the current solver on this site's test data of tasks 0..task.

        Keys are the same at every site (``accuracy-task-j`` and ``examples-task-j`` for
        every seen task, 0 where the site holds no test data of j), so the server can
        weight per task.
        """
        start = time.perf_counter()
        out: dict[str, float] = {}
        total, correct = 0, 0.0
        for j, t in enumerate(self.stream.tasks[: task + 1]):
            n = len(t.test)
            acc = accuracy(self.solver, t.test, device=self.device) if n else 0.0
            out[f"accuracy-task-{j}"], out[f"examples-task-{j}"] = acc, float(n)
            total, correct = total + n, correct + acc * n
        out["accuracy"] = correct / total if total else 0.0
        out["num-examples"] = float(total)
        out["eval-time-s"] = time.perf_counter() - start
        return out
