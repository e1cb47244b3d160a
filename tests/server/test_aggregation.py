"""Bounded influence of one site (server.aggregation): the arithmetic an attacker meets."""

import numpy as np
import pytest

from common.config import ConfigError, load_config
from server.aggregation import AggregationError, Bounds, aggregate, bounded_model, trimmed_mean

RNG = np.random.default_rng(0)
CURRENT = {
    "solver.w": RNG.standard_normal((4, 3)).astype(np.float32),
    "generator.w": RNG.standard_normal((5,)).astype(np.float32),
}


def honest(n: int, scale: float = 0.1) -> list[dict[str, np.ndarray]]:
    rng = np.random.default_rng(1)
    return [
        {k: v + scale * rng.standard_normal(v.shape).astype(np.float32) for k, v in CURRENT.items()}
        for _ in range(n)
    ]


def update_norm(model: dict[str, np.ndarray], part: str) -> float:
    keys = [k for k in CURRENT if k.startswith(part)]
    d = {k: model[k].astype(np.float64) - CURRENT[k] for k in keys}
    return float(np.sqrt(sum(np.sum(d[k] ** 2) for k in keys)))


def hostile(kind: str) -> dict[str, np.ndarray]:
    good = honest(1, scale=0.1)[0]
    if kind == "flip10":
        return {k: CURRENT[k] - 10 * (good[k] - CURRENT[k]) for k in CURRENT}
    if kind == "huge":
        return {k: np.full_like(v, 1e30) for k, v in CURRENT.items()}
    return {k: CURRENT[k] + 100 * (good[k] - CURRENT[k]) for k in CURRENT}


@pytest.mark.parametrize("kind", ["scale100", "flip10", "huge"])
def test_one_update_moves_the_model_no_further_than_the_median_update(kind: str) -> None:
    replies = [*honest(4), hostile(kind)]
    out, reports = aggregate(CURRENT, replies, [100.0] * 5, bounds=Bounds(rule="fedavg"))
    honest_norms = sorted(update_norm(r, "solver") for r in replies[:4])
    assert reports[4].clipped["solver"] < 0.2 and reports[4].clipped["generator"] < 0.2
    # the hostile site's contribution is at most the median update norm / 5
    assert update_norm(out, "solver") <= np.mean(honest_norms) + honest_norms[-1] / 5 + 1e-6
    assert all(np.isfinite(v).all() for v in out.values())
    plain, _ = aggregate(
        CURRENT, replies, [100.0] * 5, bounds=Bounds(rule="fedavg", update_clip=0, weight_cap=0)
    )
    assert update_norm(plain, "solver") > 3 * update_norm(out, "solver")  # what it prevents


def test_a_claimed_count_is_capped_by_the_median_and_by_what_was_declared() -> None:
    replies = honest(5)
    counts = [100.0, 120.0, 80.0, 90.0, 1e9]
    _, reports = aggregate(CURRENT, replies, counts, bounds=Bounds(rule="fedavg", weight_cap=2))
    assert reports[4].weight == pytest.approx(200.0) and reports[4].weight_capped
    assert [r.weight for r in reports[:4]] == counts[:4]
    # declared 50 on joining the task: a later, larger count weighs 50
    declared = [None, None, None, None, 50.0]
    _, reports = aggregate(
        CURRENT, replies, counts, bounds=Bounds(rule="fedavg"), declared=declared
    )
    assert reports[4].weight == 50.0


def test_a_non_finite_aggregate_is_refused() -> None:
    # validation refuses non-finite replies first; this is the last line of defence
    replies = [*honest(2), {k: np.full_like(v, np.inf) for k, v in CURRENT.items()}]
    for clip in (0.0, 1.0):
        with pytest.raises(AggregationError, match="not finite"):
            aggregate(CURRENT, replies, [1.0] * 3, bounds=Bounds(rule="fedavg", update_clip=clip))
    with pytest.raises(AggregationError, match="no replies"):
        aggregate(CURRENT, [], [], bounds=Bounds())


@pytest.mark.parametrize("rule", ["median", "trimmed-mean", "krum", "multikrum"])
def test_robust_rules_ignore_a_sign_flipped_site(rule: str) -> None:
    replies = [*honest(4), hostile("flip10")]
    out, _ = aggregate(CURRENT, replies, [1.0] * 5, bounds=Bounds(rule=rule, update_clip=0))
    honest_mean = {k: np.mean([r[k] for r in replies[:4]], axis=0) for k in CURRENT}
    flipped = hostile("flip10")
    for k in CURRENT:  # nearer the honest sites than the attacker, by a wide margin
        assert np.linalg.norm(out[k] - honest_mean[k]) < 0.2 * np.linalg.norm(
            flipped[k] - honest_mean[k]
        )


def test_bulyan_says_how_many_sites_it_needs() -> None:
    with pytest.raises(AggregationError, match="at least 7"):
        aggregate(CURRENT, honest(5), [1.0] * 5, bounds=Bounds(rule="bulyan"))
    out, _ = aggregate(
        CURRENT, [*honest(6), hostile("huge")], [1.0] * 7, bounds=Bounds(rule="bulyan")
    )
    assert all(np.abs(v).max() < 10 for v in out.values())


def test_trimmed_mean_cuts_one_site_of_three() -> None:
    layers = [[np.array([1.0])], [np.array([2.0])], [np.array([1e6])]]
    assert trimmed_mean(layers, 0.2)[0][0] == 2.0  # Flower's cuts none below five replies
    assert trimmed_mean(layers[:2], 0.2)[0][0] == 1.5


def test_bounded_model_applies_the_same_scale_per_part() -> None:
    reply = hostile("scale100")
    model = bounded_model(CURRENT, reply, {"generator": 0.01})
    np.testing.assert_allclose(model["solver.w"], reply["solver.w"])
    np.testing.assert_allclose(
        model["generator.w"] - CURRENT["generator.w"],
        0.01 * (reply["generator.w"] - CURRENT["generator.w"]),
        rtol=1e-4,
        atol=1e-6,
    )


def test_aggregation_config() -> None:
    assert load_config({}).aggregation_rule == "trimmed-mean"
    assert load_config({"fed.aggregation": "krum"}).aggregation_rule == "krum"
    client = {"dp.client-level": True, "replay.mode": "global", "dp.delta": 1e-3}
    assert load_config(client).aggregation_rule == "dp-mean"
    with pytest.raises(ConfigError, match="clipped sum"):
        load_config({**client, "fed.aggregation": "median"})
    for key, value in (
        ("fed.aggregation", "mean"),
        ("fed.update-clip", 0.5),
        ("fed.weight-cap", float("inf")),
        ("fed.trim-fraction", 0.5),
    ):
        with pytest.raises(ConfigError, match=key):
            load_config({key: value})
    with pytest.raises(ConfigError, match="wait forever"):
        load_config({"fed.num-sites": 2, "fed.min-sites": 3})
