"""A per-site privacy accountant whose whole history can be saved and restored.

Wraps Opacus' RDP and PRV accountants. The history is a list of
``(noise_multiplier, sample_rate, steps)``; epsilon is always recomputed from it, so a
restored accountant reports exactly what the original would.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
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
    return _epsilon(tuple(events), float(delta), kind)


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
def _epsilon(events: tuple[Event, ...], delta: float, kind: str) -> float:
    acc = RDPAccountant() if kind == "rdp" else PRVAccountant()
    acc.history = list(events)
    with np.errstate(divide="ignore"):  # Opacus' PRV takes log(1 - q) = log(0) at rate 1
        return float(acc.get_epsilon(delta=delta))


@dataclass
class Accountant:
    kind: str
    history: list[Event] = field(default_factory=list)

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"accountant {self.kind!r} is not one of {KINDS}")

    def step(self, noise_multiplier: float, sample_rate: float, steps: int = 1) -> None:
        """Record ``steps`` DP-SGD steps (merged with the last event when identical)."""
        if steps <= 0:
            return
        if self.history and self.history[-1][:2] == (noise_multiplier, sample_rate):
            s, q, n = self.history[-1]
            self.history[-1] = (s, q, n + steps)
        else:
            self.history.append((noise_multiplier, sample_rate, steps))

    @property
    def steps(self) -> int:
        return sum(n for _, _, n in self.history)

    def epsilon(self, delta: float) -> float:
        return compute_epsilon(self.history, delta=delta, kind=self.kind)

    def epsilon_after(self, events: Iterable[Event], delta: float) -> float:
        """What epsilon would be if ``events`` were spent too (nothing is recorded)."""
        return compute_epsilon([*self.history, *events], delta=delta, kind=self.kind)

    def to_dict(self) -> dict:
        return {"kind": self.kind, "history": [list(e) for e in self.history]}

    @staticmethod
    def from_dict(d: dict) -> Accountant:
        return Accountant(d["kind"], [(float(s), float(q), int(n)) for s, q, n in d["history"]])
