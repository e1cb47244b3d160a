"""The replay a task boundary sends, per replay.mode, from released models only."""

import pytest
import torch

from common.config import load_config
from common.data.streams import build_stream
from common.models import build_generator, build_solver
from server.run.replay_payload import next_payload, replay_source

TINY = {"tasks.num-tasks": 3, "solver.hidden": 8, "generator.hidden": 8, "generator.latent-dim": 4}


def models(cfg, stream):
    solver = build_solver(cfg, stream.shape, stream.num_classes)
    generator = build_generator(cfg, stream.shape, stream.num_classes)
    return solver, generator


def site_state(generator, value: float):
    return {k: torch.full_like(v, value) for k, v in generator.state_dict().items()}


@pytest.mark.parametrize("mode", ["global", "ensemble", "per-task"])
def test_nothing_is_replayed_before_the_first_boundary(mode: str) -> None:
    cfg = load_config({**TINY, "replay.mode": mode})
    stream = build_stream(cfg)
    solver, generator = models(cfg, stream)
    kwargs = {"solver": solver, "generator": generator, "site_generators": {}, "previous": None}
    assert next_payload(cfg, stream, 0, **kwargs) is None
    assert next_payload(cfg, stream, 1, **{**kwargs, "generator": None}) is None


def test_per_task_grows_by_the_finished_tasks_site_generators() -> None:
    cfg = load_config({**TINY, "replay.mode": "per-task"})
    stream = build_stream(cfg)
    solver, generator = models(cfg, stream)
    sites = {
        "site-0": (site_state(generator, 0.0), 3.0),
        "site-1": (site_state(generator, 1.0), 1.0),
    }
    first = next_payload(
        cfg, stream, 1, solver=solver, generator=generator, site_generators=sites, previous=None
    )
    assert first is not None and first.weights == (3.0, 1.0)
    assert first.generator_classes == (stream.tasks[0].classes,) * 2
    # task 2's boundary: no site's generator came back, so the global one draws task 1
    second = next_payload(
        cfg, stream, 2, solver=solver, generator=generator, site_generators={}, previous=first
    )
    assert second is not None and len(second.generators) == 3
    assert second.generators[:2] == first.generators
    assert second.generator_classes[-1] == stream.tasks[1].classes
    assert all(torch.equal(v, generator.state_dict()[k]) for k, v in second.generators[2].items())
    assert second.classes == stream.classes_seen(1)
    # the server's view of the mixture draws task 1's classes only from the global one
    source = replay_source(cfg, stream, second, solver, torch.device("cpu"))
    assert source.per_class is not None
    for c in stream.tasks[1].classes:
        assert source.per_class[c].tolist() == [0.0, 0.0, 1.0]


def test_ensemble_replays_the_last_tasks_site_generators_only() -> None:
    cfg = load_config({**TINY, "replay.mode": "ensemble"})
    stream = build_stream(cfg)
    solver, generator = models(cfg, stream)
    sites = {"site-0": (site_state(generator, 0.0), 2.0)}
    payload = next_payload(
        cfg, stream, 2, solver=solver, generator=generator, site_generators=sites, previous=None
    )
    assert payload is not None and payload.weights == (2.0,) and payload.generator_classes == ()


def test_class_counts_weight_each_class_of_the_finished_task_by_the_sites_records() -> None:
    cfg = load_config({**TINY, "replay.mode": "ensemble", "replay.mixture": "class-counts"})
    stream = build_stream(cfg)
    solver, generator = models(cfg, stream)
    sites = {
        "site-0": (site_state(generator, 0.0), 4.0),
        "site-1": (site_state(generator, 1.0), 2.0),
    }
    a, b = stream.tasks[1].classes  # the finished task
    counts = {"site-0": {a: 3.0, b: 1.0}, "site-1": {a: 0.0, b: 1e30}}  # site-1: hostile claim
    kwargs = {"solver": solver, "generator": generator, "site_generators": sites}
    payload = next_payload(cfg, stream, 2, previous=None, class_counts=counts, **kwargs)
    assert payload is not None and payload.weights == (4.0, 2.0)
    col = {c: i for i, c in enumerate(payload.classes)}
    for c in stream.tasks[0].classes:  # learned from replay by both: the plain weights
        assert [row[col[c]] for row in payload.class_weights] == [4.0, 2.0]
    assert [row[col[a]] for row in payload.class_weights] == [3.0, 0.0]
    assert [row[col[b]] for row in payload.class_weights] == [1.0, 2.0]  # 1e30 -> its weight
    source = replay_source(cfg, stream, payload, solver, torch.device("cpu"))
    assert source.per_class is not None
    assert source.per_class[a].tolist() == [1.0, 0.0]
    assert source.per_class[b].tolist() == pytest.approx([1 / 3, 2 / 3])
    # the plain mixture sends no class weights
    plain = load_config({**TINY, "replay.mode": "ensemble"})
    again = next_payload(plain, stream, 2, previous=None, class_counts=counts, **kwargs)
    assert again is not None and again.class_weights == ()
