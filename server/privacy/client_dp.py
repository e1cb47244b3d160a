"""Client-level DP at the server: clip each site's update, sum, divide by a fixed count,
add secret Gaussian noise (DP-FedAvg; McMahan et al. 2018, fixed-denominator estimator).

    released = global + (sum_i clip(update_i, C) + N(0, sigma^2 C^2 I)) / m

``m`` is the number of sites *sampled* for the round (a public decision made before any
reply), not the number that replied: a missing or refused reply counts as a zero update,
so one site's influence on the sum stays at most C and the noise, sigma C / m on the
average, is always what the accountant assumes (noise multiplier sigma). Averaging over
the m' < m replies instead would leave noise sigma C m' / m of sensitivity C / m'.

The noise comes from the OS's cryptographic source alone
(:func:`common.privacy.randomness.cryptographic_normal`), never from a generator whose state
could be recovered, nor from NumPy's global generator, which the server seeds with the
public ``seed``. Replies
are validated before they are clipped (the strategy does it), so a malformed update is
refused rather than crashing the mechanism.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from common.privacy.randomness import cryptographic_normal

Arrays = dict[str, np.ndarray]


def clip_update(update: Arrays, *, clip_norm: float) -> tuple[Arrays, float]:
    """``update`` scaled to L2 norm at most ``clip_norm`` (over all arrays); its norm."""
    squares = (float(np.sum(np.square(v, dtype=np.float64))) for v in update.values())
    norm = float(np.sqrt(sum(squares)))
    scale = min(1.0, clip_norm / (norm + 1e-12))
    return {k: (v * scale).astype(v.dtype) for k, v in update.items()}, norm


@dataclass(kw_only=True)  # a noise and a clip norm are never passed by position
class ClientLevelDP:
    noise_multiplier: float
    clip_norm: float

    def __post_init__(self) -> None:
        if not (self.noise_multiplier > 0 and np.isfinite(self.noise_multiplier)):
            raise ValueError(f"noise_multiplier={self.noise_multiplier!r} must be > 0")
        if not (self.clip_norm > 0 and np.isfinite(self.clip_norm)):
            raise ValueError(f"clip_norm={self.clip_norm!r} must be > 0")

    def release(
        self,
        current: Arrays,
        replies: Sequence[Arrays],
        *,
        num_sampled: int,
        rng: np.random.Generator | None = None,
    ) -> tuple[Arrays, list[float]]:
        """The noised new global model from the sites' models (``replies``) and the norms
        of their updates before clipping. ``rng`` is for tests only: by default the noise
        is drawn from the OS's cryptographic source."""
        if num_sampled < max(len(replies), 1):
            raise ValueError(f"{len(replies)} replies from {num_sampled} sampled sites")
        total = {k: np.zeros_like(v, dtype=np.float64) for k, v in current.items()}
        norms = []
        for reply in replies:
            if set(reply) != set(current):
                raise ValueError("a reply's arrays do not match the global model's")
            clipped, norm = clip_update(
                {k: reply[k] - current[k] for k in current}, clip_norm=self.clip_norm
            )
            norms.append(norm)
            for k, v in clipped.items():
                total[k] += v
        std = self.noise_multiplier * self.clip_norm
        out = {}
        for k, v in current.items():
            noise = (
                rng.normal(0.0, std, size=v.shape)
                if rng is not None
                else cryptographic_normal(v.shape, std=std)
            )
            noisy_sum = total[k] + noise
            out[k] = (v + noisy_sum / num_sampled).astype(v.dtype)
        return out, norms
