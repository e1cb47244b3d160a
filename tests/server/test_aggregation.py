"""Bounded influence of one site (server.robust.aggregation): the arithmetic an attacker meets."""

import numpy as np
import pytest

from common.config import ConfigError, load_config
from server.robust.aggregation import (
    AggregationError,
    Bounds,
    aggregate,
    bounded_model,
    reference_norm,
    trimmed_mean,
)

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
def test_one_update_moves_the_model_no_further_than_an_honest_update(kind: str) -> None:
    replies = [*honest(4), hostile(kind)]
    out, reports = aggregate(CURRENT, replies, [100.0] * 5, bounds=Bounds(rule="fedavg"))
    honest_norms = sorted(update_norm(r, "solver") for r in replies[:4])
    for part in ("solver", "generator"):  # cut to no longer than the longest honest update
        longest = max(update_norm(r, part) for r in replies[:4])
        assert reports[4].norms[part] * reports[4].clipped[part] <= longest * (1 + 1e-6)
        assert reports[4].clipped[part] < 0.5
    # the hostile site's contribution is at most the largest honest update norm / 5
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
        ("robust.update-clip", 0.5),
        ("robust.weight-cap", float("inf")),
        ("robust.trim-fraction", 0.5),
    ):
        with pytest.raises(ConfigError, match=key):
            load_config({key: value})
    with pytest.raises(ConfigError, match="wait forever"):
        load_config({"fed.num-sites": 2, "fed.min-sites": 3})


MODEL = {  # a model large enough for cosines to mean something (-3 / sqrt(d) of noise)
    "solver.w": RNG.standard_normal((40, 10)).astype(np.float32),
    "generator.w": RNG.standard_normal((300,)).astype(np.float32),
}


def sites_learning_one_task(n: int) -> list[dict[str, np.ndarray]]:
    """Honest sites after the same global model: one shared direction, each its own noise."""
    rng = np.random.default_rng(7)
    shared = {k: rng.standard_normal(v.shape) for k, v in MODEL.items()}
    return [
        {k: (v + 0.1 * (shared[k] + rng.standard_normal(v.shape))).astype(np.float32)
         for k, v in MODEL.items()}
        for _ in range(n)
    ]  # fmt: skip


def test_an_update_pulling_against_every_other_site_is_left_out_of_the_median() -> None:
    # one hostile site of three sends its honest update sign-flipped, at its honest norm:
    # the norm bound lets it through; the coordinate-wise median would sit between the
    # two honest sites and zero, and the task would be learned at a fraction of its pace
    good = sites_learning_one_task(3)
    flipped = {k: MODEL[k] - (good[2][k] - MODEL[k]) for k in MODEL}
    bounds = Bounds(rule="trimmed-mean", update_clip=100)  # no honest update is clipped
    out, reports = aggregate(MODEL, [good[0], good[1], flipped], [100.0] * 3, bounds=bounds)
    assert set(reports[2].against) == {"solver", "generator"}
    assert all(c < -0.3 for c in reports[2].against.values())
    assert not reports[0].against and not reports[1].against
    for k in MODEL:  # the round is the two honest sites' mean
        expected = (good[0][k].astype(np.float64) + good[1][k]) / 2
        assert np.allclose(out[k], expected, atol=1e-5), k


def test_honest_sites_that_disagree_or_carry_only_noise_are_all_kept() -> None:
    # three sites that each point against the other two: no two agree, nobody is left out
    d = np.eye(3)[:, :, None] - 1 / 3  # three directions of mutual cosine -0.5
    current = {"solver.w": np.zeros((3, 1), np.float32)}
    replies = [{"solver.w": d[i].astype(np.float32)} for i in range(3)]
    out, reports = aggregate(current, replies, [1.0] * 3, bounds=Bounds(rule="fedavg"))
    assert not any(r.against for r in reports)
    assert np.allclose(out["solver.w"], np.mean([r["solver.w"] for r in replies], axis=0))
    # two sites: nothing to compare a direction with
    _, reports = aggregate(current, replies[:2], [1.0] * 2, bounds=Bounds(rule="fedavg"))
    assert not any(r.against for r in reports)
    # a site that sent back what it got (no update) is never judged
    same = {"solver.w": current["solver.w"].copy()}
    _, reports = aggregate(current, [*replies[:2], same], [1.0] * 3, bounds=Bounds())
    assert not any(r.against for r in reports)
    # updates that are all noise (DP noise far above the signal): 200 rounds of five
    # sites, nobody is judged to pull against the others
    rng = np.random.default_rng(3)
    zero = {"solver.w": np.zeros(20_000, np.float32)}
    for _ in range(200):
        noisy = [{"solver.w": rng.standard_normal(20_000).astype(np.float32)} for _ in range(5)]
        _, reports = aggregate(zero, noisy, [1.0] * 5, bounds=Bounds(rule="fedavg"))
        assert not any(r.against for r in reports)


def along(direction: dict[str, np.ndarray], norm: float) -> dict[str, np.ndarray]:
    """CURRENT + an update of the given norm per part, along ``direction``."""
    out = {}
    for part in ("solver", "generator"):
        keys = [k for k in CURRENT if k.startswith(part)]
        length = np.sqrt(sum(np.sum(direction[k].astype(np.float64) ** 2) for k in keys))
        out.update(
            {k: CURRENT[k] + (norm / length * direction[k]).astype(np.float32) for k in keys}
        )
    return out


@pytest.mark.parametrize("tolerate", [1, 2])
def test_shrunken_or_inflated_updates_cannot_move_the_bound_on_the_honest_sites(
    tolerate: int,
) -> None:
    # ALIE shrinks its update towards zero: with the median as reference that pulled the
    # bound down and cut the sites holding most of a task. ``tolerate`` hostile sites, at
    # any norm, leave the bound between the (f + 1)-th largest and the largest honest norm
    rng = np.random.default_rng(5)
    honest_norms = [1.0, 2.0, 3.0, 4.0, 5.0]
    directions = [{k: rng.standard_normal(v.shape) for k, v in CURRENT.items()} for _ in range(7)]
    replies = [along(d, n) for d, n in zip(directions, honest_norms, strict=False)]
    low, high = sorted(honest_norms)[-1 - tolerate], max(honest_norms)
    for hostile_norm in (0.0, 1e-9, 0.5, 3.5, 1e3, 1e30):
        hostile = [along(d, hostile_norm) for d in directions[5 : 5 + tolerate]]
        bounds = Bounds(rule="fedavg", num_malicious=tolerate)
        _, reports = aggregate(
            CURRENT, [*replies, *hostile], [100.0] * (5 + tolerate), bounds=bounds
        )
        for n, report in zip(honest_norms, reports, strict=False):
            kept = n * report.clipped.get("solver", 1.0)  # the length it was cut to
            assert kept >= min(n, low) * (1 - 1e-6), (hostile_norm, n, kept)
            assert kept <= high * (1 + 1e-6)
        for report in reports[5:]:  # a hostile update is never longer than the honest ones
            assert report.norms["solver"] * report.clipped.get("solver", 1.0) <= high * (1 + 1e-6)


def test_the_reference_norm_falls_back_to_the_median_and_sorts_non_finite_norms_last() -> None:
    assert reference_norm([1.0, 2.0, 3.0, 4.0], tolerate=1) == 3.0  # second-largest
    assert reference_norm([1.0, 5.0, 3.0], tolerate=1) == 3.0  # 2f + 1: the median itself
    assert reference_norm([1.0, 4.0], tolerate=1) == 2.5  # too few to tolerate one: median
    assert reference_norm([1.0, 2.0, 3.0, 4.0, 5.0], tolerate=2) == 3.0
    assert reference_norm([1.0, 2.0, 3.0, float("inf")], tolerate=1) == 3.0
    assert reference_norm([1.0, 2.0, 3.0, float("nan")], tolerate=1) == 3.0
    assert reference_norm([1.0, 2.0, 3.0], tolerate=0) == 3.0  # no hostile site assumed
