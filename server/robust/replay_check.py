"""Replay checked, not only bounded: a site's generator is scored before it joins the replay.

The bounds (server.robust.aggregation) cap how far one site's generator may move from the global
one, but an update inside them can still be a generator of noise: with ``ensemble`` or
``per-task`` replay it would be replayed as it is, with its site's weight, at every site
for the rest of the run. So at a task boundary, before the payload is built, the server
asks of each site's (bounded) generator of the finished task: do its class-c samples look
like class c to the current model (the aggregated solver of the finished task)? The score
is that accuracy over every class seen so far, rescaled so that chance is 0 and perfect
is 1. With at least :data:`MIN_SITES` generators, one scoring under :data:`SHARE` x the
median is left out of the replay (the others keep their weights), and said so: in the
server log, ``summary.json`` (``replay_checks``, per task) and the sites table.

What it costs: :data:`SAMPLES_PER_CLASS` samples per class and generator through the
solver, once per task. With fewer than three sites there is no majority to compare with:
nothing is left out (docs/guide.md says so).
"""

from __future__ import annotations

import statistics
from collections.abc import Mapping
from typing import Any

import torch
from torch import Tensor, nn

from common.config import ExperimentConfig
from common.data.types import TaskStream
from common.models.factory import generator_from_state

MIN_SITES = 3
SHARE = 0.7  # a generator under 0.7 x the median score is left out
SAMPLES_PER_CLASS = 64


def applies(cfg: ExperimentConfig) -> bool:
    """Sites' own generators are replayed (ensemble, per-task) and they can be sampled."""
    return cfg.replay.mode in ("ensemble", "per-task") and not cfg.generator_traits.released


@torch.no_grad()
def generator_scores(
    cfg: ExperimentConfig,
    stream: TaskStream,
    t: int,
    generators: Mapping[str, tuple[dict[str, Tensor], float]],
    solver: nn.Module,
    device: torch.device,
) -> dict[str, float]:
    """Each generator's class-conditional accuracy under ``solver`` on the classes seen up
    to task ``t - 1``, chance-corrected (0: chance, 1: every sample its class)."""
    classes = list(stream.classes_seen(t - 1))
    chance = 1.0 / len(classes)
    labels = torch.tensor(classes).repeat_interleave(SAMPLES_PER_CLASS)
    was_training = solver.training
    solver.eval()
    scores = {}
    for key, (state, _) in generators.items():
        generator = generator_from_state(cfg, stream.shape, stream.num_classes, state)
        generator = generator.to(device).eval()
        draw = torch.Generator().manual_seed(cfg.seed + t)  # public: a check, not a mechanism
        x = generator.sample(labels, generator=draw)
        predicted = solver(x.to(device)).argmax(dim=1).cpu()
        accuracy = float((predicted == labels).float().mean())
        scores[key] = round((accuracy - chance) / (1.0 - chance), 4)
    solver.train(was_training)
    return scores


def left_out(scores: Mapping[str, float]) -> dict[str, str]:
    """The generators left out of the replay, with why (none with under MIN_SITES)."""
    if len(scores) < MIN_SITES:
        return {}
    median = statistics.median(scores.values())
    if median <= 0:  # no majority of useful generators to compare with
        return {}
    return {
        key: (
            f"its samples matched their classes at {score:.2f} (chance-corrected) against the "
            f"sites' median {median:.2f}: left out of the replay"
        )
        for key, score in scores.items()
        if score < SHARE * median
    }


def check_replay(
    cfg: ExperimentConfig,
    stream: TaskStream,
    t: int,
    generators: Mapping[str, tuple[dict[str, Tensor], float]],
    solver: nn.Module,
    device: torch.device,
) -> tuple[dict[str, tuple[dict[str, Tensor], float]], dict[str, Any]]:
    """The generators that join the replay of task ``t``, and the record of the check."""
    scores = generator_scores(cfg, stream, t, generators, solver, device)
    out = left_out(scores)
    kept = {k: v for k, v in generators.items() if k not in out}
    return kept, {"task": t, "scores": scores, "left_out": out}
