"""Secret, fresh randomness for every private mechanism.

DP-SGD's guarantee assumes that whoever sees the released models does not know the noise
or which records were sampled. Anything derived from ``cfg.seed`` is public (the server
picks it, ``config.json`` and ``summary.json`` record it), so the noise and the Poisson
masks of a private step are drawn from generators seeded here from the operating
system's cryptographic source (:mod:`secrets`), fresh for every round and every site,
never stored or sent. ``seed`` keeps its meaning for initialisation and for everything
non-private (replay draws, fakes' labels, non-DP batches).

Limits, stated: torch's CPU generator is a Mersenne Twister; seeded with 64 secret bits
it is unpredictable to anyone who does not observe its raw outputs (the noise is only
ever released summed with clipped gradients), but it is not a cryptographic stream
(``torchcsprng``, Opacus' secure mode, has no installable release for this stack). The
floating-point attack on Gaussian sampling (Mironov 2012; Opacus' note) is countered by
the optimizer's ``secure_mode`` (each noise value a sum of 4 Gaussians), always on.
"""

from __future__ import annotations

import os
import secrets

import numpy as np
import torch


def secret_seed() -> int:
    """64 bits from the OS's cryptographic source (never logged)."""
    return secrets.randbits(64)


def secret_generator(device: torch.device | str = "cpu") -> torch.Generator:
    """A torch generator seeded from the OS, for one private mechanism of one round."""
    gen = torch.Generator(device=device)
    gen.manual_seed(secret_seed())
    return gen


def secret_gaussian(size: int, *, sigma: float) -> torch.Tensor:
    """``size`` values of N(0, sigma^2) from a fresh secret generator, each a sum of 4
    Gaussians as in Opacus' secure mode (against floating-point attacks), float64."""
    gen = secret_generator()
    return torch.randn(4, size, generator=gen, dtype=torch.float64).sum(0) * sigma / 2


def secret_numpy_generator() -> np.random.Generator:
    """A NumPy generator seeded with 128 secret bits (server-side client-level noise)."""
    return np.random.default_rng(secrets.randbits(128))


def cryptographic_normal(shape: tuple[int, ...], *, std: float) -> np.ndarray:
    """N(0, std^2) noise drawn from the OS's cryptographic source alone (``os.urandom``):
    uniforms of 53 random bits, Box-Muller, and each value a sum of 4 Gaussians (as Opacus'
    secure mode, against floating-point attacks on the sampler). For the server's
    client-level noise, which no generator's state can reproduce."""
    size = int(np.prod(shape, dtype=np.int64)) * 4
    pairs = (size + 1) // 2
    bits = np.frombuffer(os.urandom(16 * pairs), dtype="<u8").reshape(2, pairs) >> np.uint64(11)
    u1 = (bits[0].astype(np.float64) + 1.0) / 2.0**53  # in (0, 1]: log is finite
    u2 = bits[1].astype(np.float64) / 2.0**53
    radius = np.sqrt(-2.0 * np.log(u1))
    z = np.concatenate([radius * np.cos(2 * np.pi * u2), radius * np.sin(2 * np.pi * u2)])
    return (z[:size].reshape(4, *shape).sum(0) * (std / 2.0)).astype(np.float64)
