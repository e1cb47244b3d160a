"""One site's private training, round by round: the same code for a federated site and a
single site (``fedreplay single`` with ``dp.enabled``).

Each round: open the site's lifetime ledger under its lock, declare the run (once), get
the task's calibrated noise, record the round's steps *before* training (write-ahead: a
crash over-counts, never under-counts), and hand back a :class:`DPPlan` whose noise and
Poisson sampling come from fresh secret generators.

    session = PrivacySession(cfg, site_id="site-0", tasks=stream.tasks)
    prepared = session.begin_round(run_key="7", task=t, iterations=150, server_round=4)
    if prepared is None: ...  # too few records of this task: the site sits it out
    learner.train(..., dp=prepared.plan); prepared.check(); prepared.metrics
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path

import numpy as np
import torch

from common.config import ExperimentConfig
from common.data.types import Task, real_data_for
from common.models.embedding import features_for
from common.privacy.calibrate import noise_for_budget, planned_events
from common.privacy.composition import PER_TASK, check_composition, composition_for
from common.privacy.dp_step import DPPlan
from common.privacy.embedding import noise_only
from common.privacy.embedding import release as embedding_release
from common.privacy.ledger import TASK_RELEASE_RATE, SiteLedger
from common.privacy.records import record_digests, union
from common.sitestate import check_site_id, site_dir

# The noise (standard deviation, in records) of each task's released record count: a
# Gaussian mechanism of sensitivity 1 under add/remove. Its cost is small beside DP-SGD's
# hundreds of steps (measured in docs/privacy-audit.md, "Record counts"); an error of ~50
# records moves a site's sampling rate and FedAvg weight by under 20% at dp.min-records=256.
COUNT_NOISE = 50.0


def privacy_root() -> Path:
    """Where sites keep their lifetime ledgers: ``<site dir>/privacy``."""
    return site_dir() / "privacy"


def private_solver_steps(cfg: ExperimentConfig, iterations: int) -> int:
    """Solver steps that touch real records: none when it learns from synthetic data, none
    of its own when the solver is the discriminator (its steps are the critic's)."""
    if cfg.replay.solver_data == "synthetic" or cfg.solver_traits.is_critic:
        return 0
    return iterations


def private_generator_steps(cfg: ExperimentConfig, iterations: int) -> int:
    """Generator (or critic) steps of a round of ``iterations`` solver steps, as
    :meth:`common.training.learner.Learner.train` takes them: each touches real records."""
    if not cfg.uses_generator or cfg.releases_statistics:  # (released, not trained)
        return 0
    return cfg.generator.steps(iterations)


@dataclass
class PreparedRound:
    """A round whose privacy cost is already recorded: train with ``plan``, then ``check``."""

    plan: DPPlan
    recorded_steps: int
    metrics: dict[str, float]
    taken: list[int] = field(default_factory=lambda: [0])
    # generator.kind = "embedding": the task's noised per-class feature sums (once per task)
    embedding: torch.Tensor | None = None

    def check(self) -> None:
        """More steps than were recorded would be a leak: fail loudly."""
        if self.taken[0] != self.recorded_steps:
            raise RuntimeError(
                f"took {self.taken[0]} DP steps but recorded {self.recorded_steps} in the ledger"
            )


class PrivacySession:
    def __init__(
        self,
        cfg: ExperimentConfig,
        *,
        site_id: str,
        tasks: Sequence[Task],
        root: Path | None = None,
        noise_shares: int = 1,
    ) -> None:
        if not cfg.dp.enabled:
            raise ValueError("a privacy session needs dp.enabled")
        self.cfg, self.site_id, self.tasks = cfg, check_site_id(site_id), tuple(tasks)
        # distributed noise (the site's policy allows it under fed.aggregation = "secure"):
        # a task's release carries 1/noise_shares of the noise's variance, the sum of at
        # least that many sites' releases all of it (client.policy.SitePolicy.noise_shares)
        self.noise_shares = noise_shares
        self.root = root if root is not None else privacy_root()
        self.composition = composition_for(
            cfg.dp.composition, scenario=cfg.tasks.scenario, method=cfg.method
        )

    def true_records(self, task: int) -> int:
        """Records of ``task`` this site holds (private: never sent, never used for what is
        sent; :meth:`records` is the released count)."""
        return len(real_data_for(self.cfg.method, self.tasks, task))

    @staticmethod
    def records(released: float, min_records: int) -> int:
        """The records a task is trained as having, from its released (noised) count: 0
        (the site sits the task out) below ``dp.min-records``. A post-processing of the
        release, so the sit-out, the sampling rate, the noise and the FedAvg weight are
        private too. ``dp.min-records = 0`` (tests, tiny data): the site trains every task
        it holds a record of, with a count of at least 1; whether it holds any record of a
        task is then released (docs/privacy-audit.md)."""
        n = max(0, round(released))
        if min_records == 0:
            return max(n, 1)
        return n if n >= min_records else 0

    @cached_property
    def partitions(self) -> dict[str, np.ndarray]:
        """This run's partitions: the fingerprints of the records each one samples from
        (every task the site holds records of: each task's count is released)."""
        data = [real_data_for(self.cfg.method, self.tasks, t) for t in range(len(self.tasks))]
        check_composition(self.composition, data, where=f"site {self.site_id}")
        by_task = [record_digests(d) if len(d) else None for d in data]
        if self.composition == PER_TASK:
            return {f"task-{t}": d for t, d in enumerate(by_task) if d is not None}
        return {"run": union(d for d in by_task if d is not None)}

    def plan(self, counts: Mapping[int, float]) -> dict[int, tuple[float, int]]:
        cfg = self.cfg
        iterations = cfg.train.iterations
        return planned_events(
            [self.records(counts[t], cfg.dp.min_records) for t in range(len(self.tasks))],
            batch_size=cfg.train.batch_size,
            rounds_per_task=cfg.fed.rounds_per_task,
            steps_per_round=private_solver_steps(cfg, iterations)
            + private_generator_steps(cfg, iterations),
        )

    def begin_round(
        self,
        *,
        run_key: str,
        task: int,
        iterations: int,
        server_round: int,
    ) -> PreparedRound | None:
        """Record the round's steps in the lifetime ledger and return its DP plan (None:
        too few records of this task, nothing more spent). Raises ``BudgetExceeded`` when
        the round would exceed the budget, ``PrivacyStateError`` when the ledger is unusable.

        The run's first round releases every task's record count (a Gaussian mechanism,
        spent first, :meth:`SiteLedger.release_counts`); everything about a task's size
        that leaves the site is computed from that release, never from the true count."""
        cfg = self.cfg
        per_task = cfg.releases_statistics  # (the embedding: one Gaussian release per task)
        with SiteLedger.open(self.root, self.site_id, dp=cfg.dp) as ledger:
            ledger.join_run(
                run_key,
                composition=self.composition,
                partitions=self.partitions,
                plan=None,
                run_target=cfg.dp.target_epsilon,
                max_grad_norm=cfg.dp.max_grad_norm,
                histograms=per_task,
            )
            counts = ledger.released_counts(run_key)
            if counts is None:
                true = {t: self.true_records(t) for t in range(len(self.tasks))}
                counts = ledger.release_counts(
                    run_key, true, sigma=COUNT_NOISE, server_round=server_round
                )
                ledger.set_plan(run_key, self.plan(counts))
            n = self.records(counts[task], cfg.dp.min_records)
            if n == 0 or self.true_records(task) == 0:
                return None  # sits the task out (its count's release is spent)
            q = min(1.0, cfg.train.batch_size / n)
            generator_steps = private_generator_steps(cfg, iterations)
            iterations = private_solver_steps(cfg, iterations)
            sigma = ledger.noise_multiplier(run_key, task)
            events = [(sigma, q, n) for n in (iterations, generator_steps) if n]
            own = list(events)
            stored = ledger.task_release(run_key, task) if per_task else None
            release = per_task and stored is None
            m = self.noise_shares
            if release:  # once per task: one Gaussian mechanism, spent before it exists
                events.append((sigma, TASK_RELEASE_RATE, 1))
                own.append((sigma / math.sqrt(m), TASK_RELEASE_RATE, 1))
            if events:  # (a later round of an embedding's task spends nothing)
                ledger.spend(
                    run_key,
                    task=task,
                    events=events,
                    server_round=server_round,
                    own_events=own if m > 1 else None,
                )
            if release:
                stored = self._release(task, sigma=sigma / math.sqrt(m))
                ledger.record_task_release(run_key, task, stored, shares=m)
            elif per_task and ledger.release_shares(run_key, task) > m:
                raise PermissionError(
                    f"task {task}'s release carries a share of the noise, for a secure sum of "
                    f"at least {ledger.release_shares(run_key, task)} sites; this instruction "
                    f"would send it with the noise of {m}: refused, nothing sent"
                )
            metrics = ledger.metrics(run_key)
        metrics["num-examples"] = float(n)  # the released count, not the true one
        taken = [0]

        def count() -> None:
            taken[0] += 1

        # DPPlan's defaults: fresh secret generators for the Poisson masks and the noise
        plan = DPPlan(
            noise_multiplier=sigma, max_grad_norm=cfg.dp.max_grad_norm, sample_rate=q, on_step=count
        )
        embedding = None
        if stored is not None:  # the embedding, kept flat in the ledger
            width = 2 * cfg.embedding.features + 1  # (common.models.embedding.RandomFeatures)
            embedding = torch.tensor(stored, dtype=torch.float32).view(-1, width)
        return PreparedRound(plan, iterations + generator_steps, metrics, taken, embedding)

    def noise_share(self, task: int) -> torch.Tensor:
        """What a site that sits task ``task`` out sends into a secure sum under distributed
        noise: its share of the noise alone (no record is read, nothing is spent), at the
        noise a site of this run with a fresh ledger adds (its count release, then one
        release per task: what the others' shares are calibrated to; this site's own plan
        may be empty; nothing of its ledger is read), so the sum carries the noise the other
        sites' shares count on."""
        cfg = self.cfg
        releases = 1 if self.composition == PER_TASK else len(self.tasks)
        sigma = noise_for_budget(
            [(TASK_RELEASE_RATE, 1)] * releases,
            target_epsilon=cfg.dp.target_epsilon,
            delta=cfg.dp.delta,
            accountant=cfg.dp.accountant,
            prior=[(COUNT_NOISE, 1.0, 1)],
        )
        classes = len(self.tasks[task].classes)
        shape = tuple(self.tasks[task].train.x.shape[1:])
        size = features_for(cfg, shape).size  # type: ignore[arg-type]
        share = sigma / math.sqrt(self.noise_shares)
        return noise_only(classes, size, sigma=share, gram=cfg.solver_traits.solved)

    def _release(self, task: int, *, sigma: float) -> list[float]:
        """The task's one Gaussian release, flat (called after it was spent)."""
        data = real_data_for(self.cfg.method, self.tasks, task)
        classes = self.tasks[task].classes
        features = features_for(self.cfg, tuple(data.x.shape[1:]))  # type: ignore[arg-type]
        gram = self.cfg.solver_traits.solved  # (the Gram too: common.models.ridge)
        out = embedding_release(features, data.x, data.y, classes, sigma=sigma, gram=gram)
        return [float(v) for v in out.flatten()]
