"""What a method does at the server beyond the loop: one class per method that needs it.

The federation (:mod:`server.federation`) is the loop: begin a task, run its rounds, end it,
build the next replay. A method that needs more of the server (DGM grows and consolidates
its masked generator; the embedding generator is fitted by the server from the sites'
releases, and the ridge solver solved from them) says so here, in its own class, through
four hooks the loop calls at fixed points. DGR and the baselines need nothing:
:class:`ServerSide` itself, whose hooks do nothing.

    side = server_side(cfg, stream, generator)
    side.travelling            # the generator that travels (None: the server's own)
    side.release_shape(t)      # the shape of a task's releases (embedding)
    side.begin_task(run, t)    # after the strategy's begin_task and a resume's restore
    side.after_round(run)      # after a round's aggregate, before its evaluation
    side.end_task(run, t)      # after the task's last round, before its evaluation
    side.previous(payload, t)  # the replay the next payload builds on
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch

from common import wire
from common.config import ExperimentConfig
from common.data.types import TaskStream
from common.models.dgm import DGMGenerator
from common.models.generator import Generator
from common.models.ridge import RidgeSolver
from common.replay import ReplayPayload
from server.embedding_sum import TaskGenerator
from server.mask_aggregation import consolidate

if TYPE_CHECKING:  # (the run calls the hooks with itself; nothing here imports it)
    from server.federation import FederatedRun


class ServerSide:
    """A method with nothing to do at the server beyond the loop (DGR, none, exact, joint)."""

    def __init__(self, generator: Generator | None) -> None:
        self.travelling = generator  # the generator sites train and send back

    def release_shape(self, t: int) -> tuple[int, int] | None:
        return None

    def begin_task(self, run: FederatedRun, t: int) -> None:
        pass

    def after_round(self, run: FederatedRun) -> None:
        pass

    def end_task(self, run: FederatedRun, t: int) -> None:
        pass

    def previous(self, payload: ReplayPayload | None, t: int) -> ReplayPayload | None:
        """The replay of the finished tasks that the payload for task ``t + 1`` builds on."""
        return payload


class DGMSide(ServerSide):
    """DGM (``method = "dgm"``): the server owns the masks. At a task's start it records
    the shapes of what a site sends (the elements free in the task, packed); at its end it
    binarises the task's masks and grows the generator (:func:`server.mask_aggregation.
    consolidate`), which becomes the global model and the reference every reply is checked
    against."""

    def __init__(self, generator: DGMGenerator) -> None:
        super().__init__(generator)
        self.generator = generator

    def begin_task(self, run: FederatedRun, t: int) -> None:
        if len(run.upload_shapes) == t:  # (a resumed task has them from its checkpoint)
            shapes = wire.packed_shapes(self.generator)
            run.upload_shapes.append({k: list(v) for k, v in shapes.items()})

    def end_task(self, run: FederatedRun, t: int) -> None:
        size = consolidate(self.generator, list(run.stream.tasks[t].classes), task=t)
        run.generator_sizes.append(size)
        run.arrays = wire.scholar_record(run.solver, self.generator)


class EmbeddingSide(ServerSide):
    """``generator.kind = "embedding"``: sites send noised releases, never a generator; the
    server fits the task's generator to their sum (:class:`server.embedding_sum.
    TaskGenerator`) after every round a release arrived in, and sends it with the replay.
    With ``solver.arch = "ridge"`` the server also solves the solver from the statistics
    at the task's start and the task's releases: it becomes the global model, whatever the
    sites sent back, and at the task's end the task's statistics join the solver's."""

    def __init__(self, cfg: ExperimentConfig, stream: TaskStream, generator: Generator) -> None:
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
        refreshed = self.embedding.refresh(run.task, run.fedreplay.task.releases)
        self._solve_ridge(run, absorb=False)
        if refreshed:  # the task's generator travels with the replay from now on
            finished = self.embedding.finished(run.fedreplay.payload, run.task)
            run.fedreplay.replace_payload(self.embedding.payload(run.task, finished, run.solver))

    def end_task(self, run: FederatedRun, t: int) -> None:
        self.embedding.refresh(t, run.fedreplay.task.releases)  # (a release after the last fit)
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


def server_side(
    cfg: ExperimentConfig, stream: TaskStream, generator: Generator | None
) -> ServerSide:
    """The server side of the configured method."""
    if isinstance(generator, DGMGenerator):
        return DGMSide(generator)
    if generator is not None and cfg.generator.kind == "embedding":
        return EmbeddingSide(cfg, stream, generator)
    return ServerSide(generator)
