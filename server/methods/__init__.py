"""What a method does at the server beyond the loop: one class per method that needs it.

The federation (:mod:`server.run.federation`) is the loop: begin a task, run its rounds, end it,
build the next replay. A method that needs more of the server (DGM grows and consolidates
its masked generator; the embedding generator is fitted by the server from the sites'
releases, and the ridge solver solved from them) says so in its own module here
(:mod:`server.methods.dgm`, :mod:`server.methods.embedding`: the class and everything it
uses), through four hooks the loop calls at fixed points. DGR and the baselines need
nothing: :class:`server.methods.base.ServerSide` itself, whose hooks do nothing. A new
method with server work is a module here and a line in :func:`server_side`.

    side = server_side(cfg, stream, generator)
    side.travelling            # the generator that travels (None: the server's own)
    side.release_shape(t)      # the shape of a task's releases (embedding)
    side.begin_task(run, t)    # after the strategy's begin_task and a resume's restore
    side.after_round(run)      # after a round's aggregate, before its evaluation
    side.end_task(run, t)      # after the task's last round, before its evaluation
    side.previous(payload, t)  # the replay the next payload builds on
"""

from __future__ import annotations

from common.config import ExperimentConfig
from common.data.types import TaskStream
from common.models.dgm import DGMGenerator
from common.models.generator import Generator
from server.methods.base import ServerSide
from server.methods.dgm import DGMSide
from server.methods.embedding import EmbeddingSide


def server_side(
    cfg: ExperimentConfig, stream: TaskStream, generator: Generator | None
) -> ServerSide:
    """The server side of the configured method."""
    if isinstance(generator, DGMGenerator):
        return DGMSide(generator)
    if cfg.releases_statistics:  # (no generator: the ridge solver on ScatterNet features)
        return EmbeddingSide(cfg, stream, generator)
    return ServerSide(generator)


__all__ = ["DGMSide", "EmbeddingSide", "ServerSide", "server_side"]
