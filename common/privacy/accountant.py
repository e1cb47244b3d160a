"""A per-site privacy accountant whose whole history can be saved and restored.

Wraps Opacus' RDP and PRV accountants. The history is a list of
``(noise_multiplier, sample_rate, steps)``; epsilon is always recomputed from it, so a
restored accountant reports exactly what the original would.
"""

from __future__ import annotations

from collections.abc import Iterable
from functools import lru_cache

import numpy as np
from opacus.accountants import PRVAccountant, RDPAccountant

Event = tuple[float, float, int]  # (noise_multiplier, sample_rate, steps)
KINDS = ("rdp", "prv")


def compute_epsilon(history: Iterable[Event], *, delta: float, kind: str) -> float:
    """Epsilon at ``delta`` of a sequence of subsampled-Gaussian events (0 if empty)."""
    events = merged((float(s), float(q), int(n)) for s, q, n in history if n > 0)
    if not events:
        return 0.0
    if kind not in KINDS:
        raise ValueError(f"accountant {kind!r} is not one of {KINDS}")
    return _epsilon(tuple(events), delta=float(delta), kind=kind)


def merged(history: Iterable[Event]) -> list[Event]:
    """Consecutive events of the same (noise, rate) as one (the accountant sums steps)."""
    out: list[Event] = []
    for s, q, n in history:
        if out and out[-1][:2] == (s, q):
            out[-1] = (s, q, out[-1][2] + n)
        else:
            out.append((s, q, n))
    return out


@lru_cache(maxsize=1024)
def _epsilon(events: tuple[Event, ...], *, delta: float, kind: str) -> float:
    acc = RDPAccountant() if kind == "rdp" else PRVAccountant()
    acc.history = list(events)
    with np.errstate(divide="ignore"):  # Opacus' PRV takes log(1 - q) = log(0) at rate 1
        return float(acc.get_epsilon(delta=delta))
