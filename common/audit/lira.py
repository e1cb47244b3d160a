"""The Likelihood Ratio Attack (LiRA) of Carlini et al. (2022), online and offline.

"Membership Inference Attacks From First Principles" (IEEE S&P 2022). K shadow models of
the target's architecture are trained, each on a random half of ``candidates ∪ population``
chosen so that every record is IN for exactly ``K // 2`` shadows. For every candidate and
model the logit-scaled confidence of the true class is

    phi = log(p_y / (1 - p_y)) = z_y - logsumexp_{k != y} z_k     (z = logits, stable form)

and Gaussians are fitted per candidate to its IN and OUT shadow values. With few shadows
(the default rule: K < 64, as in the paper) the variance is one global value (the pooled
within-candidate variance) while the means stay per candidate. Scores (higher = member):

    online:  log N(phi_t; mu_in, s_in^2) - log N(phi_t; mu_out, s_out^2)
    offline: (phi_t - mu_out) / s_out   (one-sided test, monotone in 1 - p-value)
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from common.audit.membership import AttackResult
from common.data.types import Split, concat
from common.metrics import batched_logits

TrainFn = Callable[[Split, int], nn.Module]  # (training split, seed) -> trained model
MIN_STD = 1e-4
log = logging.getLogger("fedreplay.audit.lira")


@torch.no_grad()
def logit_confidence(
    model: nn.Module, split: Split, *, device: torch.device, batch_size: int = 1024
) -> np.ndarray:
    """phi = log(p_y / (1 - p_y)) of the true label of every record, computed stably."""
    out = []
    for logits, y in batched_logits(model, split, device=device, batch_size=batch_size):
        logits, y = logits.double().cpu(), y.cpu()
        rows = torch.arange(len(y))
        true = logits[rows, y]
        logits[rows, y] = -torch.inf
        out.append(true - torch.logsumexp(logits, dim=1))
    return torch.cat(out).numpy() if out else np.zeros(0)


@dataclass(frozen=True)
class ShadowStats:
    """phi of the target (n,) and of the shadows (K, n); ``keep[k, i]``: i trained shadow k."""

    target: np.ndarray
    shadows: np.ndarray
    keep: np.ndarray


def shadow_confidences(
    target: nn.Module,
    train_fn: TrainFn,
    *,
    candidates: Split,
    population: Split | None = None,
    num_shadows: int = 8,
    seed: int = 0,
    device: torch.device,
) -> ShadowStats:
    """Train the shadows and measure phi of every candidate under them and the target."""
    if num_shadows < 2:
        raise ValueError(f"LiRA needs at least 2 shadow models, got {num_shadows}")
    pool = concat([candidates, population]) if population is not None else candidates
    rng = np.random.default_rng(seed)
    # Each column is a random permutation of the shadows: every record IN for exactly K//2.
    keep_all = rng.random((num_shadows, len(pool))).argsort(axis=0) < num_shadows // 2
    seeds = rng.integers(0, 2**31 - 1, size=num_shadows)
    shadows = np.empty((num_shadows, len(candidates)))
    for k in range(num_shadows):
        start = time.perf_counter()
        rows = torch.from_numpy(np.flatnonzero(keep_all[k]))
        model = train_fn(pool.subset(rows), int(seeds[k]))
        shadows[k] = logit_confidence(model, candidates, device=device)
        took = time.perf_counter() - start
        log.info(
            "LiRA shadow %d/%d trained on %d records (%.1f s)", k + 1, num_shadows, len(rows), took
        )
    target_phi = logit_confidence(target, candidates, device=device)
    return ShadowStats(target_phi, shadows, keep_all[:, : len(candidates)])


def _gaussian(values: np.ndarray, mask: np.ndarray, fixed: bool) -> tuple[np.ndarray, np.ndarray]:
    """Per-candidate mean and std of ``values[k, i]`` over the k where ``mask[k, i]``."""
    count = mask.sum(axis=0)
    mean = np.where(mask, values, 0.0).sum(axis=0) / np.maximum(count, 1)
    sq = np.where(mask, (values - mean) ** 2, 0.0)
    if fixed:
        dof = max(int(count.sum() - (count > 0).sum()), 1)
        std = np.full_like(mean, np.sqrt(sq.sum() / dof))
    else:
        std = np.sqrt(sq.sum(axis=0) / np.maximum(count - 1, 1))
    return mean, np.maximum(std, MIN_STD)


def _log_normal(x: np.ndarray, mean: np.ndarray, std: np.ndarray) -> np.ndarray:
    return -0.5 * ((x - mean) / std) ** 2 - np.log(std)  # constant dropped (cancels)


def lira_scores(
    stats: ShadowStats, *, online: bool = True, fixed_variance: bool | None = None
) -> np.ndarray:
    """Membership scores of the candidates (see the module docstring)."""
    fixed = stats.shadows.shape[0] < 64 if fixed_variance is None else fixed_variance
    mu_out, s_out = _gaussian(stats.shadows, ~stats.keep, fixed)
    if not online:
        return (stats.target - mu_out) / s_out
    mu_in, s_in = _gaussian(stats.shadows, stats.keep, fixed)
    return _log_normal(stats.target, mu_in, s_in) - _log_normal(stats.target, mu_out, s_out)


def lira_attacks(
    target: nn.Module,
    train_fn: TrainFn,
    *,
    candidates: Split,
    is_member: np.ndarray,
    population: Split | None = None,
    num_shadows: int = 8,
    seed: int = 0,
    fixed_variance: bool | None = None,
    device: torch.device,
) -> dict[str, AttackResult]:
    """Online and offline LiRA from one set of shadows: ``{"lira_online", "lira_offline"}``.

    ``is_member[i]`` (ground truth, used only for evaluation) says whether candidate i is
    in the target's training set; ``population`` adds records to the shadows' pool.
    """
    return lira_attacks_many(
        {"": target},
        train_fn,
        candidates=candidates,
        is_member=is_member,
        population=population,
        num_shadows=num_shadows,
        seed=seed,
        fixed_variance=fixed_variance,
        device=device,
    )[""]


def lira_attacks_many(
    targets: Mapping[str, nn.Module],
    train_fn: TrainFn,
    *,
    candidates: Split,
    is_member: np.ndarray,
    population: Split | None = None,
    num_shadows: int = 8,
    seed: int = 0,
    fixed_variance: bool | None = None,
    device: torch.device,
) -> dict[str, dict[str, AttackResult]]:
    """:func:`lira_attacks` against several targets with one set of shadows (the costly
    part): ``{target name: {"lira_online": ..., "lira_offline": ...}}``."""
    member = np.asarray(is_member, dtype=bool)
    if member.shape != (len(candidates),):
        raise ValueError(f"is_member has shape {member.shape}, expected ({len(candidates)},)")
    if not targets:
        raise ValueError("no target models to attack")
    names = list(targets)
    stats = shadow_confidences(
        targets[names[0]],
        train_fn,
        candidates=candidates,
        population=population,
        num_shadows=num_shadows,
        seed=seed,
        device=device,
    )
    out: dict[str, dict[str, AttackResult]] = {}
    for label in names:
        phi = stats.target if label == names[0] else None
        if phi is None:
            phi = logit_confidence(targets[label], candidates, device=device)
        own = ShadowStats(phi, stats.shadows, stats.keep)
        out[label] = {}
        for name, online in (("lira_online", True), ("lira_offline", False)):
            s = lira_scores(own, online=online, fixed_variance=fixed_variance)
            out[label][name] = AttackResult(name, s[member], s[~member])
    return out


def lira_attack(
    target: nn.Module,
    train_fn: TrainFn,
    *,
    candidates: Split,
    is_member: np.ndarray,
    num_shadows: int = 8,
    seed: int = 0,
    population: Split | None = None,
    online: bool = True,
    device: torch.device,
) -> AttackResult:
    """One LiRA variant (online by default); see :func:`lira_attacks` for the arguments."""
    results = lira_attacks(
        target,
        train_fn,
        candidates=candidates,
        is_member=is_member,
        population=population,
        num_shadows=num_shadows,
        seed=seed,
        device=device,
    )
    return results["lira_online" if online else "lira_offline"]
