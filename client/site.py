"""A site in the federation, in plain PyTorch (no Flower): its data partition, its learner,
its cached replay source and its private state.

The ClientApp rebuilds a :class:`Site` for every message (in deployment each message runs
in a fresh process) and restores what must persist from the site's own disk
(:mod:`client.site_store`): the critic (VAE encoder / GAN discriminator), the replay
payload of the current task and the last reply.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Mapping
from functools import lru_cache
from pathlib import Path

import torch

from common.class_counts import class_count_metrics
from common.config import ExperimentConfig
from common.data.types import real_data_for
from common.device import select_device, slow_bf16
from common.methods import Memory, regulariser_for
from common.metrics import accuracy
from common.models.dgm import DGMGenerator
from common.models.embedding import features_for
from common.privacy.embedding import release as embedding_release
from common.privacy.embedding import release_shape
from common.privacy.release import evaluation_allowed, released
from common.privacy.session import PreparedRound, PrivacySession, privacy_root
from common.replay import ReplayPayload
from common.sitedata import SiteIdentity, local_stream
from common.training.learner import (
    Learner,
    ReplaySource,
    replay_for,
    source_from_payload,
)

DATA_ROOT_KEY = "data-root"
log = logging.getLogger("fedreplay.client")


@lru_cache(maxsize=4)
def warn_slow_bf16(device: torch.device) -> None:
    """Once per process: bf16 here would be emulated (common.device.slow_bf16)."""
    why = slow_bf16(device)
    if why:
        log.warning(why)


def apply_node_config(cfg: ExperimentConfig, node_config: Mapping[str, object]) -> ExperimentConfig:
    """The run config as this site sees it: a non-empty ``data-root`` in the node config
    (``flower-supernode --node-config "data-root=/path ..."``) replaces ``data.root``, so each
    site reads its data from its own location."""
    root = str(node_config.get(DATA_ROOT_KEY, "") or "")
    if not root or root == cfg.data.root:
        return cfg
    return dataclasses.replace(cfg, data=dataclasses.replace(cfg.data, root=root))


@lru_cache(maxsize=16)
def privacy_session(
    cfg: ExperimentConfig, identity: SiteIdentity, root: Path, noise_shares: int = 1
) -> PrivacySession:
    """This site's private training (its record fingerprints are computed once per process)."""
    tasks = local_stream(cfg, identity).tasks
    return PrivacySession(
        cfg, site_id=identity.site_id, tasks=tasks, root=root, noise_shares=noise_shares
    )


class Site:
    def __init__(
        self, cfg: ExperimentConfig, identity: SiteIdentity, *, noise_shares: int = 1
    ) -> None:
        self.cfg = cfg
        self.identity = identity
        # > 1: distributed noise, from this site's policy (client.policy.SitePolicy.noise_shares)
        self.noise_shares = noise_shares
        self.device = select_device(cfg.device)
        if cfg.train.precision == "bf16":
            warn_slow_bf16(self.device)
        self.release: torch.Tensor | None = None  # generator.kind = "embedding": what it sent
        self.stream = local_stream(cfg, identity)
        with torch.random.fork_rng(devices=[]):  # identical initial critic at every site,
            torch.manual_seed(cfg.seed)  # without reseeding the process's global generator
            self.learner = Learner(
                cfg,
                shape=self.stream.shape,
                num_classes=self.stream.num_classes,
                device=self.device,
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
        """The private critic's state (None: no critic, or it is the solver and travels)."""
        critic = self.learner.private_critic
        return None if critic is None else {k: v.cpu() for k, v in critic.state_dict().items()}

    def load_critic_state(self, state: Mapping[str, torch.Tensor]) -> None:
        critic = self.learner.private_critic
        if critic is not None:
            critic.load_state_dict(dict(state))

    def replay_source(self, payload: ReplayPayload | None) -> ReplaySource | None:
        """Frozen models built from the server's payload (None before the first boundary)."""
        if payload is None:
            return None
        shape, k = self.stream.shape, self.stream.num_classes
        return source_from_payload(self.cfg, shape, k, payload, self.device)

    # --- work ---------------------------------------------------------------------------
    def privacy(self) -> PrivacySession:
        """This site's private training session (sample-level DP)."""
        return privacy_session(self.cfg, self.identity, privacy_root(), self.noise_shares)

    def train(
        self,
        task: int,
        *,
        payload: ReplayPayload | None,
        iterations: int,
        seed: int,
        run_id: int | str = 0,
        server_round: int = 0,
        memory: Memory | None = None,
    ) -> dict[str, float]:
        """One round on ``task``. ``memory``: what a regularisation method (LwF, EWC:
        common.methods) keeps at the site between rounds and tasks (the caller keeps it on
        the site's disk); updated in place. ``seed`` drives initialisation-like, public choices
        (replay draws, non-DP batches); under DP the noise and the Poisson masks are secret
        and fresh every round (:mod:`common.privacy.randomness`). Under DP (sample- or
        client-level) the metrics are only those :mod:`common.privacy.release` allows."""
        if not 0 <= task < len(self.stream):
            raise ValueError(f"task {task} is outside this stream's 0..{len(self.stream) - 1}")
        generator = self.learner.generator
        if isinstance(generator, DGMGenerator) and generator.current_task != task:
            raise ValueError(
                f"task {task}, but the server's DGM generator has masks for "
                f"{generator.current_task} finished tasks (it must have {task})"
            )
        if task > 0 and self.cfg.needs_payload and (payload is None or payload.task != task):
            have = "none" if payload is None else f"task {payload.task}"
            raise ValueError(f"task {task} needs the replay payload for task {task}; have {have}")
        current = None
        if self.embedding_kind and payload is not None:  # the server's generator of the task
            payload, current = payload.split_current(tuple(self.stream.tasks[task].classes))
        rng = torch.Generator().manual_seed(seed)
        source = self.replay_source(payload)
        replay = replay_for(self.cfg, self.stream.tasks, task, source, rng=rng)
        memory = {} if memory is None else memory
        self.learner.regulariser = regulariser_for(
            self.cfg.method,
            None if source is None else source.solver,
            () if source is None else source.classes,
            memory,
            task=task,
        )
        real = real_data_for(self.cfg.method, self.stream.tasks, task)
        if len(real) == 0 and not self.cfg.dp.enabled:  # under DP: decided on the released
            return {"num-examples": 0.0, "empty": 1.0}  # count, like every sit-out
        prepared = None
        if self.cfg.dp.enabled:
            prepared = self.privacy().begin_round(  # spent before any step (write-ahead)
                run_key=str(run_id), task=task, iterations=iterations, server_round=server_round
            )
            if prepared is None:  # too few records to train on privately: sit out
                if self.embedding_kind and self.noise_shares > 1:  # its share of the noise
                    self.release = self.privacy().noise_share(task)
                return {"num-examples": 0.0, "empty": 1.0}
        if self.embedding_kind:  # the task's release (once); the solver learns from the
            self.release = self._embedding_release(task, prepared)  # server's generator
            if current is None or self.cfg.solver_traits.solved:
                iterations = 0  # no generator yet (the task's first round), or the server
                # solves the solver (ridge): nothing to learn here
            else:
                assert self.learner.generator is not None
                self.learner.generator.load_state_dict(current)
        metrics = self.learner.train(
            real,
            replay=replay,
            num_tasks_seen=task + 1,
            classes_seen=self.stream.classes_seen(task),
            iterations=iterations,
            seed=seed,
            dp=prepared.plan if prepared is not None else None,
            task_span=self._task_span(task, server_round),
        )
        if self.learner.regulariser is not None and iterations > 0:
            self.learner.regulariser.remember(self.solver, real, memory)
        out = {k.replace("_", "-"): v for k, v in metrics.items()}
        if self.cfg.replay.mixture == "class-counts" and self.cfg.uses_generator:
            out.update(class_count_metrics(real.y, self.stream.tasks[task].classes))  # released
        if prepared is not None:
            prepared.check()
            out.update(prepared.metrics)
        return released(out, self.cfg)

    @property
    def embedding_kind(self) -> bool:
        """The site releases an embedding, not a generator (``cfg.releases_statistics``)."""
        return self.cfg.releases_statistics

    @property
    def shared_generator(self) -> torch.nn.Module | None:
        """The generator that travels in the scholar's records (None: none does; an
        embedding site sends its release, and gets the server's generator with the replay)."""
        return None if self.embedding_kind else self.learner.generator

    def release_shape(self, task: int) -> tuple[int, int]:
        """The shape of task ``task``'s release: (classes [+ F for the ridge solver's Gram])
        x F features (common.privacy.embedding)."""
        size = features_for(self.cfg, self.stream.shape).size
        classes = len(self.stream.tasks[task].classes)
        return release_shape(classes, size, gram=self.cfg.solver_traits.solved)

    def _embedding_release(self, task: int, prepared: PreparedRound | None) -> torch.Tensor:
        """The task's release: from the ledger under DP (noised, spent once per task),
        else the exact per-class sums (no DP: nothing is claimed)."""
        if prepared is not None:
            if prepared.embedding is None:
                raise RuntimeError("the privacy session returned no embedding release")
            return prepared.embedding
        data = self.stream.tasks[task].train
        features = features_for(self.cfg, self.stream.shape)
        classes = self.stream.tasks[task].classes
        gram = self.cfg.solver_traits.solved  # the server solves the solver: it needs the Gram
        return embedding_release(features, data.x, data.y, classes, sigma=None, gram=gram)

    def _task_span(self, task: int, server_round: int) -> tuple[float, float]:
        """The share of task ``task`` this round covers (DGM anneals its masks over it)."""
        per_task = self.cfg.fed.rounds_per_task
        k = min(max(server_round - task * per_task, 1), per_task)  # the task's round, 1-based
        return (k - 1) / per_task, k / per_task

    def evaluate(self, task: int) -> dict[str, float]:
        """Accuracy of the current solver on this site's test data of tasks 0..task.

        Keys are the same at every site (``accuracy-task-j`` and ``examples-task-j`` for
        every seen task, 0 where the site holds no test data of j), so the server can
        weight per task.
        """
        if not evaluation_allowed(self.cfg):
            raise PermissionError(
                "federated evaluation under DP would send this site's accuracy on its private "
                "test data un-noised; the site refuses (opt in: dp.release-metrics='evaluation')"
            )
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
