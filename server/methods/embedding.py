"""The server's side of ``generator.kind = "embedding"``: the sites' releases of a task,
bounded and summed, and the task's generator fitted to the sum.

Each site's release is (classes of the task x features) sums of norm-1 random features plus
noise (:mod:`common.privacy.embedding`). The server keeps the first release of every site
of the task (a later one of the same site is ignored: a site releases once per task; its
later rounds resend the same values), checks it (shape, float32, finite, before it is
kept: :func:`server.robust.reply_checks.check_release`), and at the task's end:

- bounds each release's Frobenius norm by ``robust.weight-cap`` x the median norm of the
  task's releases (from 3 releases on; below 3 a median bounds nothing). Scaling a release
  keeps that site's per-class means and proportions, so an honest site holding much more
  than the others loses weight, not shape; a hostile one (1e30, a fake count) contributes
  at most as much as a site of twice the median size;
- holds every block (a class's row, the Gram) to the direction the other sites' blocks sum
  to: the part off it is cut to ``robust.weight-cap`` x the median such part
  (:mod:`server.robust.release_consensus`), so a site that swaps its classes inside the norm
  bound keeps about an honest site's spread in the wrong direction, no more;
- sums them: every class's sum over sites (its noise sums too: the per-site Gaussians of
  sigma make a sum of sigma sqrt(sites));
- fits the task's generator to the per-class means (post-processing; the solver and replay
  then draw from it);
- with ``solver.arch = "ridge"`` the releases carry the task's Gram matrix below the sums
  (:mod:`common.privacy.embedding`): the solver is solved from the finished tasks'
  statistics plus this sum (:meth:`TaskGenerator.solve`), and at the task's end the sum
  joins the statistics (:meth:`TaskGenerator.absorb`). The server never takes the solver
  from a site's reply.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np
import torch
from torch import nn

from common import wire
from common.config import ExperimentConfig
from common.data.types import TaskStream
from common.models import build_generator
from common.models.embedding import features_for
from common.models.generator import Generator
from common.models.ridge import RidgeSolver
from common.privacy.embedding import release_shape
from common.replay import ReplayPayload, cpu_state
from common.training.embedding import fit_to_release
from server.methods.base import ServerSide
from server.robust.release_consensus import MIN_SITES, direction_bound

if TYPE_CHECKING:  # (the run calls the hooks with itself; nothing here imports it)
    from server.run.federation import FederatedRun

log = logging.getLogger("fedreplay.server")


SECURE_SUM = "(secure sum)"  # the key of a sum under SecAgg+ (no site id has a space)


@dataclass
class EmbeddingReleases:
    """The current task's releases, one per site key; under secure aggregation one sum of
    all sites' releases (:data:`SECURE_SUM`), which no per-site bound can reach."""

    by_site: dict[str, np.ndarray] = field(default_factory=dict)

    def receive_sum(self, total: np.ndarray, sites: int) -> None:
        """The task's releases summed under SecAgg+ (fed.aggregation = "secure")."""
        if SECURE_SUM in self.by_site:
            log.warning("a second secure sum of the task's releases ignored")
            return
        log.info("task's releases: the secure sum of %d sites", sites)
        self.by_site[SECURE_SUM] = np.array(total, dtype=np.float64)

    def receive(self, site: str, release: np.ndarray) -> bool:
        """Keep ``site``'s first release of the task (False: it had one already)."""
        if site in self.by_site:
            return False
        self.by_site[site] = np.array(release, dtype=np.float64)
        return True

    def bounded_sum(self, weight_cap: float) -> tuple[np.ndarray, dict[str, float]]:
        """The sum over sites, each cut to ``weight_cap`` x the median norm, then each
        block's part off the other sites' direction cut to ``weight_cap`` x its median
        (:func:`server.robust.release_consensus.direction_bound`); and per site the smallest
        factor it was cut by (1 = untouched)."""
        if not self.by_site:
            raise ValueError("no site released an embedding of this task")
        if SECURE_SUM in self.by_site:  # (the server never saw a site's release)
            return self.by_site[SECURE_SUM], {}
        sites = sorted(self.by_site)
        norms = np.array([np.linalg.norm(self.by_site[s]) for s in sites])
        factors = np.ones(len(sites))
        if weight_cap > 0 and len(sites) >= MIN_SITES:  # (a median of fewer bounds nothing)
            cap = weight_cap * float(np.median(norms))
            factors = np.minimum(1.0, cap / np.maximum(norms, 1e-12))
        scaled = {s: f * self.by_site[s] for f, s in zip(factors, sites, strict=True)}
        held, turned = direction_bound(scaled, cap=weight_cap)
        total = sum(held[s] for s in sites)
        return np.asarray(total), {
            s: min(float(f), turned[s]) for f, s in zip(factors, sites, strict=True)
        }

    def snapshot(self) -> dict[str, torch.Tensor]:
        """The releases as float32 tensors (what was received: lossless, and compact in
        the checkpoint; a ridge release is millions of values)."""
        return {s: torch.from_numpy(r.astype(np.float32)) for s, r in self.by_site.items()}

    @staticmethod
    def restore(state: dict[str, torch.Tensor] | None) -> EmbeddingReleases:
        return EmbeddingReleases(
            {s: np.asarray(r, dtype=np.float64) for s, r in (state or {}).items()}
        )


class TaskGenerator:
    """The server's generator of the current task (generator.kind = "embedding"), fitted to
    the releases received so far: after the task's first round it travels with the replay
    (its last generator, :meth:`common.replay.ReplayPayload.with_current`), so the sites'
    solvers learn the task from it; it is refitted when a site's release arrives later, and
    at the task's end it becomes the task's generator in per-task replay."""

    def __init__(
        self, cfg: ExperimentConfig, stream: TaskStream, generator: Generator | None
    ) -> None:
        # None: no generator is fitted (the ridge solver on ScatterNet features needs none)
        self.cfg, self.stream, self.generator = cfg, stream, generator
        self.features = features_for(cfg, stream.shape)
        self.ridge = cfg.solver_traits.solved  # releases carry the Gram (F rows more)
        # (task, sites) of the last fit and the bounded sum it used; after a resume: none
        self.fitted: tuple[int, frozenset[str]] | None = None
        self.total: torch.Tensor | None = None

    def release_shape(self, t: int) -> tuple[int, int]:
        """What a site's release of task ``t`` must look like: (classes [+ features]) x
        features."""
        return release_shape(len(self.classes(t)), self.features.size, gram=self.ridge)

    def classes(self, t: int) -> tuple[int, ...]:
        return tuple(self.stream.tasks[t].classes)

    def refresh(self, t: int, releases: EmbeddingReleases) -> bool:
        """Fit afresh if releases arrived since the last fit (True: refitted; without a
        generator only the bounded sum is taken)."""
        sites = frozenset(releases.by_site)
        if not sites or (t, sites) == self.fitted:
            return False
        cfg = self.cfg
        if self.generator is None:
            self.total = torch.from_numpy(self._bounded(releases)).float()
            self.fitted = (t, sites)
            return False
        with torch.random.fork_rng(devices=[]):  # a fresh, public initialisation per task
            torch.manual_seed(cfg.seed + 1000 * t)
            fresh = build_generator(cfg, self.stream.shape, self.stream.num_classes)
        self.generator.load_state_dict(fresh.state_dict())
        self.total = torch.from_numpy(self._bounded(releases)).float()
        counts = fit_to_release(
            self.generator,
            self.features,
            self.total[: len(self.classes(t))],
            self.classes(t),
            steps=cfg.embedding.fit_steps,
            batch=cfg.embedding.fit_batch,
            lr=cfg.generator.lr,
            seed=cfg.seed + 1000 * t,
        )
        self.fitted = (t, sites)
        log.info(
            "task %d: generator fitted to %d sites' embeddings (noised counts %s)",
            t + 1,
            len(sites),
            " ".join(f"{c}:{n:.0f}" for c, n in counts.items()),
        )
        return True

    def _bounded(self, releases: EmbeddingReleases) -> np.ndarray:
        total, factors = releases.bounded_sum(self.cfg.robust.weight_cap)
        cut = {s: f for s, f in factors.items() if f < 1.0}
        if cut:
            log.warning("embedding releases cut to the bound: %s", cut)
        return total

    def solve(self, t: int, solver: RidgeSolver) -> None:
        """Solve ``solver`` (holding the finished tasks' statistics) with task ``t``'s
        bounded sum of releases added, when there is one (call :meth:`refresh` first)."""
        solver.fit(self._total(t), self.classes(t))

    def absorb(self, t: int, solver: RidgeSolver) -> None:
        """Task ``t`` is over: its bounded sum (if any) joins ``solver``'s statistics."""
        solver.absorb(self._total(t), self.classes(t))

    def _total(self, t: int) -> torch.Tensor | None:
        """The bounded sum of task ``t``'s releases from the last fit (None: none yet)."""
        return self.total if self.fitted is not None and self.fitted[0] == t else None

    def finished(self, payload: ReplayPayload | None, t: int) -> ReplayPayload | None:
        """``payload`` without task ``t``'s own generator: the replay of tasks before t."""
        return None if payload is None else payload.split_current(self.classes(t))[0]

    def payload(self, t: int, finished: ReplayPayload | None, solver: nn.Module) -> ReplayPayload:
        """The replay sites get within task ``t``: the finished tasks' plus this one's."""
        if finished is None:  # task 0: nothing to replay; the solver labels nothing
            finished = ReplayPayload(t, cpu_state(solver), (), (), (), ())
        assert self.generator is not None  # (called only after a fit)
        return finished.with_current(cpu_state(self.generator), self.classes(t))


class EmbeddingSide(ServerSide):
    """``generator.kind = "embedding"``: sites send noised releases, never a generator; the
    server fits the task's generator to their sum (:class:`server.methods.embedding.
    TaskGenerator`) after every round a release arrived in, and sends it with the replay.
    With ``solver.arch = "ridge"`` the server also solves the solver from the statistics
    at the task's start and the task's releases: it becomes the global model, whatever the
    sites sent back, and at the task's end the task's statistics join the solver's."""

    def __init__(
        self, cfg: ExperimentConfig, stream: TaskStream, generator: Generator | None
    ) -> None:
        super().__init__(None)  # the generator is the server's own: it does not travel
        self.embedding = TaskGenerator(cfg, stream, generator)
        self.ridge_base: dict[str, torch.Tensor] | None = None  # the solver at the task's start

    def release_shape(self, t: int) -> tuple[int, int] | None:
        return self.embedding.release_shape(t)

    def begin_task(self, run: FederatedRun, t: int) -> None:
        if isinstance(run.solver, RidgeSolver):
            wire.load_scholar(run.arrays, run.solver, None)
            self.ridge_base = {k: v.clone() for k, v in run.solver.state_dict().items()}

    def after_round(self, run: FederatedRun) -> None:
        refreshed = self.embedding.refresh(run.task, run.state.task_replies.releases)
        self._solve_ridge(run, absorb=False)
        if refreshed:  # the task's generator travels with the replay from now on
            finished = self.embedding.finished(run.fedreplay.payload, run.task)
            run.fedreplay.replace_payload(self.embedding.payload(run.task, finished, run.solver))

    def end_task(self, run: FederatedRun, t: int) -> None:
        self.embedding.refresh(t, run.state.task_replies.releases)  # (a release after the last fit)
        self._solve_ridge(run, absorb=True)  # ridge: the task's statistics join the solver's

    def previous(self, payload: ReplayPayload | None, t: int) -> ReplayPayload | None:
        """Without the finished task's own generator (the payload adds it)."""
        return self.embedding.finished(payload, t)

    def _solve_ridge(self, run: FederatedRun, *, absorb: bool) -> None:
        if self.ridge_base is None:
            return
        assert isinstance(run.solver, RidgeSolver)
        run.solver.load_state_dict(self.ridge_base)
        (self.embedding.absorb if absorb else self.embedding.solve)(run.task, run.solver)
        run.arrays = wire.scholar_record(run.solver, None)
