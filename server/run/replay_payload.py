"""What sites replay at a task boundary, built by the server from released models only.

- ``global``: the aggregated scholar's generator.
- ``ensemble``: every site's (bounded) generator of the finished task, weighted by the
  example counts the site declared (``replay.mixture = "class-counts"``: for each class of
  the finished task, by the site's share of records of that class, common.class_counts).
- ``per-task``: the payload of the task before (generators of every earlier task) plus
  every site's generator of the finished task, each drawing only its own task's classes.

The frozen solver of the finished task labels every replayed input in all three.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import Tensor, nn

from common.class_counts import class_weight_rows
from common.config import ExperimentConfig
from common.config.methods import PREVIOUS_SOLVER
from common.data.types import TaskStream
from common.methods import previous_solver_payload
from common.replay import GenerativeReplay, ReplayPayload, cpu_state
from common.training.learner import generative_replay, source_from_payload

State = dict[str, Tensor]


def next_payload(
    cfg: ExperimentConfig,
    stream: TaskStream,
    t: int,
    *,
    solver: nn.Module,
    generator: nn.Module | None,
    site_generators: Mapping[str, tuple[State, float]],
    previous: ReplayPayload | None,
    class_counts: Mapping[str, Mapping[int, float]] | None = None,
) -> ReplayPayload | None:
    """The replay of tasks < ``t`` (None for task 0 or a method without a generator; for
    a regularisation method, lwf or ewc, the previous solver alone).

    ``site_generators``: {site key: (its bounded generator of task t - 1, its weight)};
    ``previous``: the payload sites replayed during task t - 1; ``class_counts``: {site
    key: its records of each class of task t - 1, as it reported them} (class-counts)."""
    if t == 0:
        return None
    classes = stream.classes_seen(t - 1)
    if cfg.method_traits.replay == PREVIOUS_SOLVER:  # lwf, ewc: the previous solver alone
        return previous_solver_payload(t, cpu_state(solver), tuple(classes))
    if generator is None:
        return None
    solver_state = cpu_state(solver)
    if cfg.replay.mode == "global" or not site_generators:
        # global mode, or a task no site's generator came back from: the global generator
        finished: Mapping[str, tuple[State, float]] = {"global": (cpu_state(generator), 1.0)}
    else:
        finished = site_generators
    gens = tuple(g for g, _ in finished.values())
    weights = tuple(w for _, w in finished.values())
    if cfg.replay.mode != "per-task":
        rows: tuple[tuple[float, ...], ...] = ()
        if cfg.replay.mixture == "class-counts" and finished is site_generators:
            reported = [(class_counts or {}).get(key) for key in finished]
            current = tuple(stream.tasks[t - 1].classes)
            rows = class_weight_rows(weights, reported, classes, current)
        return ReplayPayload(t, solver_state, gens, weights, classes, class_weights=rows)
    owned = (tuple(stream.tasks[t - 1].classes),) * len(gens)
    if previous is not None:  # the generators of every earlier task stay, unchanged
        gens, weights = previous.generators + gens, previous.weights + weights
        owned = previous.generator_classes + owned
    return ReplayPayload(t, solver_state, gens, weights, classes, owned)


def replay_source(
    cfg: ExperimentConfig,
    stream: TaskStream,
    payload: ReplayPayload,
    solver: nn.Module,
    device: torch.device,
) -> GenerativeReplay:
    """The payload as the sites replay it (the mixture, for ``ensemble`` and ``per-task``),
    for the server's own looks at it (replay quality, the samples grid)."""
    source = source_from_payload(cfg, stream.shape, stream.num_classes, payload, device)
    return generative_replay(
        cfg, source, rng=torch.Generator().manual_seed(cfg.seed), labeller=solver
    )
