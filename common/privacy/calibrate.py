"""Noise calibrated once for the whole planned run of a site, not per round, on top of
what the site's records have already spent in earlier runs (``prior``)."""

from __future__ import annotations

from collections.abc import Sequence
from functools import lru_cache

from common.privacy.accountant import Event, compute_epsilon


def planned_events(
    task_sizes: Sequence[int],
    *,
    batch_size: int,
    rounds_per_task: int,
    steps_per_round: int,
) -> dict[int, tuple[float, int]]:
    """{task: (sample_rate, steps)} for a site holding ``task_sizes[t]`` records of task t
    (tasks it holds no records of are left out).

    ``steps_per_round`` counts every private step of a round (solver steps plus
    generator/discriminator steps: each samples its own Poisson batch).
    """
    return {
        t: (min(1.0, batch_size / n), rounds_per_task * steps_per_round)
        for t, n in enumerate(task_sizes)
        if n > 0
    }


def noise_for_budget(
    plan: Sequence[tuple[float, int]],
    *,
    target_epsilon: float,
    delta: float,
    accountant: str,
    tolerance: float = 0.01,
    prior: Sequence[Event] = (),
) -> float:
    """Smallest noise multiplier (to ``tolerance``) that keeps ``prior`` (steps already
    spent on the same records) plus the whole plan within ``target_epsilon`` at ``delta``.
    Memoised: equal plans share the search."""
    return _noise_for_budget(
        tuple((float(q), int(n)) for q, n in plan),
        target_epsilon=target_epsilon,
        delta=delta,
        accountant=accountant,
        tolerance=tolerance,
        prior=tuple((float(s), float(q), int(n)) for s, q, n in prior),
    )


@lru_cache(maxsize=256)
def _noise_for_budget(
    plan: tuple[tuple[float, int], ...],
    *,
    target_epsilon: float,
    delta: float,
    accountant: str,
    tolerance: float,
    prior: tuple[Event, ...] = (),
) -> float:
    if not plan:
        raise ValueError("the privacy plan is empty: this site has no data to train on")
    spent = compute_epsilon(prior, delta=delta, kind=accountant)
    if spent >= target_epsilon:
        raise ValueError(
            f"these records have already spent epsilon={spent:.3f} >= target {target_epsilon}"
        )

    def eps(sigma: float) -> float:
        events: list[Event] = [*prior, *((sigma, q, n) for q, n in plan)]
        return compute_epsilon(events, delta=delta, kind=accountant)

    low, high = 0.3, 1.0
    while eps(high) > target_epsilon:
        low, high = high, high * 2
        if high > 1e4:
            raise ValueError(
                f"no noise multiplier reaches epsilon={target_epsilon} at delta={delta} "
                f"for {sum(n for _, n in plan)} steps"
            )
    while high - low > tolerance:
        mid = (low + high) / 2
        if eps(mid) > target_epsilon:
            low = mid
        else:
            high = mid
    return high
