"""White-box audit of the private step itself, with gradient canaries (after Steinke,
Nasr & Jagielski 2023, Sec. 6, and Nasr et al. 2021/2023's hypothesis-test audits).

The mechanism under audit is the platform's own: :class:`~common.privacy.dp_step.DPStepper`
(ghost clipping, Opacus' noise in secure mode from the plan's secret generator) fed by
:func:`~common.training.batches.poisson_batches` with the plan's secret sampling
generator, exactly as a site trains. The model is an ``nn.Embedding(m, 1)``: canary ``i``
is the record "index i" whose per-sample loss ``-B w_i`` (B >> C) has a gradient of norm
B along coordinate i alone, clipped to C (a Dirac gradient canary). Each canary is included
in the private data by a fair coin; the auditor sees every step's privatised gradient
(white box) and, per canary, its coordinate ``o_t = b_t s + N(0, sigma^2)`` in units of C
(``b_t``: sampled at step t, ``s``: included).

Since noise is independent per coordinate and Poisson draws independent per record, the
m canaries are m independent trials of the same mechanism, so the classic audit applies.
Two bounds, at the stated confidence (Bonferroni over thresholds, scores and bounds):

- (eps, delta), family-free: for a test "IN when score > tau", (eps, delta)-DP implies
  FPR + e^eps FNR >= 1 - delta and FNR + e^eps FPR >= 1 - delta; with Clopper-Pearson upper
  bounds on FPR and FNR, eps_lb = max over tau of log((1 - delta - FNR_ub) / FPR_ub), ...
  Thresholds lie geometrically in the upper tail down to 1/m; (eps, delta) is decided in
  tails that m trials measure only to about 1/m: 73-81% of the true eps with 10^7 canaries
  at rate 1, about 2/3 with 10^6 at rate 0.5 (docs/notebook/results.md).
- mu-GDP (Dong, Roth & Su): a mu-GDP mechanism has FNR >= Phi(Phi^-1(1 - FPR) - mu) for
  every test, so each threshold certifies mu >= Phi^-1(1 - FPR_ub) - Phi^-1(FNR_ub): the
  step is not mu-GDP below that (family-free). The middle of the trade-off curve decides
  it, which m trials measure well. At rate 1 the claim is exactly sqrt(T)/sigma-GDP, and
  the eps of the certified mu bounds the true eps if the curve is Gaussian as claimed
  (Nasr et al. 2023's reading): 98-99% of the true eps at eps = 1-2 with 10^7 canaries.

Two scores: ``llr``, the likelihood ratio of the claimed mechanism (the best test if the
mechanism is what it claims), and ``spread``, each coordinate's spread over steps (what
noise repeated across steps leaves at rate < 1: included canaries move when sampled,
excluded ones do not). It detects broken mechanisms (noise off, too little noise,
noise repeated, predictable sampling) and measures the noise's calibration.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import torch
from scipy.optimize import brentq
from scipy.stats import beta, norm
from torch import nn

from common.data.types import Split
from common.privacy.accountant import compute_epsilon
from common.privacy.dp_step import DPPlan, DPStepper, dp_stepper_factory
from common.privacy.randomness import secret_numpy_generator
from common.training.batches import poisson_batches

log = logging.getLogger("fedreplay.audit")
CHUNK = 10_000_000  # canaries per run of the mechanism (about 3 GB at 4 steps)
StepperFactory = Callable[[torch.optim.Optimizer, nn.Module], DPStepper]


@dataclass(frozen=True)
class MechanismAudit:
    claimed_epsilon: float
    delta: float
    noise_multiplier: float
    sample_rate: float
    steps: int
    num_canaries: int
    confidence: float
    epsilon_lower_bound: float  # family-free: (eps, delta)-DP itself is refuted below it
    best_score: str
    bounds_by_score: dict[str, float]
    epsilon_prv: float  # the same mechanism under the PRV accountant (tighter than RDP)
    reachable_epsilon: float  # the family-free bound a perfectly separating score would give
    mu_lower_bound: float  # the step is not mu-GDP for any mu below it (family-free)
    mu_claimed: float | None  # sqrt(steps) / sigma: the exact GDP of the claim, at rate 1
    epsilon_exact: float | None  # eps of the claimed mu-GDP at delta (the true epsilon)
    epsilon_lower_bound_gaussian: float | None  # eps of mu_lower_bound, if the curve is Gaussian
    # rate < 1: whether two fresh plans draw different Poisson masks (None at rate 1). The
    # scores do not use the masks (the auditor does not know them, as no adversary should);
    # masks a fixed or public seed reproduces are what this catches
    masks_fresh: bool | None = None

    @property
    def verdict(self) -> str:
        bounds = [self.epsilon_lower_bound, self.epsilon_lower_bound_gaussian or 0.0]
        if max(bounds) > self.claimed_epsilon:
            return "VIOLATION: the mechanism leaks more than the claimed epsilon"
        if self.masks_fresh is False:
            return (
                "VIOLATION: the Poisson masks repeat across fresh plans (a fixed or public "
                "seed): whoever knows them scores with them, and the accountant's "
                "amplification by sampling does not hold"
            )
        if self.claimed_epsilon > self.reachable_epsilon and self.mu_claimed is None:
            return "not testable at this epsilon"
        return "consistent with the claimed epsilon"

    def to_dict(self) -> dict[str, Any]:
        return {"kind": "mechanism_audit", **asdict(self), "verdict": self.verdict}


def _cp_upper(k: int, n: int, alpha: float) -> float:
    """One-sided Clopper-Pearson upper bound on a rate with k of n at level alpha."""
    return 1.0 if k >= n else float(beta.ppf(1 - alpha, k + 1, n - k))


def _error_bounds(
    scores: np.ndarray, included: np.ndarray, quantiles: np.ndarray, alpha: float
) -> list[tuple[float, float]]:
    """Upper confidence bounds (FPR, FNR) of the tests "IN when score > tau" and "IN when
    score >= tau" (ties: a broken mechanism's scores can take a few values only), tau at
    the pooled scores' ``quantiles``, each test at level alpha / (number of tests)."""
    inc = np.asarray(included, dtype=bool)
    ins, outs = np.sort(scores[inc]), np.sort(scores[~inc])
    if not len(ins) or not len(outs):
        raise ValueError("need included and excluded canaries")
    per = alpha / (2 * len(quantiles)) / 2
    out = []
    for tau in np.quantile(scores, quantiles):
        for side in ("right", "left"):  # > tau, >= tau
            false_pos = len(outs) - int(np.searchsorted(outs, tau, side=side))
            false_neg = int(np.searchsorted(ins, tau, side=side))
            out.append((_cp_upper(false_pos, len(outs), per), _cp_upper(false_neg, len(ins), per)))
    return out


def hypothesis_test_bound(
    scores: np.ndarray,
    included: np.ndarray,
    *,
    delta: float,
    alpha: float,
    thresholds: int = 40,
) -> float:
    """Largest eps that thresholding ``scores`` refutes, at level alpha over all thresholds."""
    # upper tails from 1/2 down to 1/m, geometrically: (eps, delta) is decided far out
    quantiles = 1 - np.geomspace(0.5, 1.0 / len(scores), thresholds)
    best = 0.0
    for fpr, fnr in _error_bounds(scores, included, quantiles, alpha):
        for num, den in ((1 - delta - fnr, fpr), (1 - delta - fpr, fnr)):
            if num > 0 and den > 0:
                best = max(best, math.log(num / den))
    return best


def gaussian_test_bound(
    scores: np.ndarray, included: np.ndarray, *, alpha: float, thresholds: int = 20
) -> float:
    """Largest mu for which the thresholded ``scores`` refute mu-GDP (Dong, Roth & Su 2022),
    at level alpha over all thresholds.

    A mu-GDP mechanism's every test has FNR >= Phi(Phi^-1(1 - FPR) - mu), so each threshold
    certifies mu >= Phi^-1(1 - FPR_ub) - Phi^-1(FNR_ub). The middle of the trade-off curve
    decides mu, and it is measured well by a million trials (unlike the tails that decide
    (eps, delta))."""
    quantiles = np.linspace(0.05, 0.95, thresholds)
    best = 0.0
    for fpr, fnr in _error_bounds(scores, included, quantiles, alpha):
        best = max(best, float(norm.isf(fpr) - norm.ppf(fnr)))
    return best


def gdp_epsilon(mu: float, *, delta: float) -> float:
    """Epsilon at ``delta`` of mu-GDP: the root of
    delta = Phi(-eps/mu + mu/2) - e^eps Phi(-eps/mu - mu/2) (Dong, Roth & Su, Cor. 2.13)."""
    if mu <= 0:
        return 0.0

    def excess(eps: float) -> float:
        tail = math.exp(eps + float(norm.logcdf(-eps / mu - mu / 2)))
        return float(norm.cdf(-eps / mu + mu / 2)) - tail - delta

    if excess(0.0) <= 0:
        return 0.0
    upper = 1.0
    while excess(upper) > 0:
        upper *= 2
    return float(brentq(excess, 0.0, upper, xtol=1e-9))


def perfect_test_bound(
    included: np.ndarray, *, delta: float, alpha: float, thresholds: int = 40
) -> float:
    """The bound of a score that separates included from excluded canaries without error:
    the most this many canaries can certify at this confidence (the audit's reach)."""
    inc = np.asarray(included, dtype=bool)
    per = alpha / (2 * thresholds)  # as many tests as _error_bounds makes
    fpr = _cp_upper(0, int((~inc).sum()), per / 2)
    fnr = _cp_upper(0, int(inc.sum()), per / 2)
    return max(math.log((1 - delta - fnr) / fpr), math.log((1 - delta - fpr) / fnr))


def canary_observations(
    *,
    noise_multiplier: float,
    sample_rate: float,
    steps: int,
    include: np.ndarray,
    max_grad_norm: float = 1.0,
    make_stepper: StepperFactory | None = None,
) -> np.ndarray:
    """(steps, m) privatised gradient coordinates of the canaries, in units of C."""
    m = len(include)
    model = nn.Embedding(m, 1)
    nn.init.zeros_(model.weight)
    members = torch.from_numpy(np.flatnonzero(include)).long()
    split = Split.from_tensors(members.reshape(-1, 1, 1, 1).float(), members)
    plan = DPPlan(
        noise_multiplier=noise_multiplier,
        max_grad_norm=max_grad_norm,
        sample_rate=sample_rate,
        on_step=lambda: None,
    )
    expected = max(round(sample_rate * len(split)), 1)
    factory = make_stepper or dp_stepper_factory(plan, expected_batch_size=expected)
    stepper = factory(torch.optim.SGD(model.parameters(), lr=1.0), model)
    batches = poisson_batches(split, sample_rate=sample_rate, rng=plan.sampling)
    big = 100.0 * max_grad_norm  # every canary's gradient is clipped to exactly C
    out = np.empty((steps, m), dtype=np.float64)
    for t in range(steps):
        _, idx = next(batches)
        before = model.weight.detach().clone()

        def private(idx: torch.Tensor = idx) -> torch.Tensor:
            return -big * model(idx).reshape(-1)  # (B,) per-canary losses

        stepper.step(private=private, public=None, private_weight=1.0)
        # SGD(lr=1): w_t+1 - w_t = (C sum_i e_i - noise) / expected batch
        out[t] = ((model.weight.detach() - before).reshape(-1) * expected / max_grad_norm).numpy()
    stepper.close()
    return out


def scores_of(
    obs: np.ndarray, *, noise_multiplier: float, sample_rate: float
) -> dict[str, np.ndarray]:
    """Per-canary scores: the claimed mechanism's log-likelihood ratio, and the spread."""
    s2 = noise_multiplier**2
    if sample_rate < 1.0:
        llr = np.log1p(sample_rate * np.expm1((obs - 0.5) / s2)).sum(0)
    else:
        llr = obs.sum(0)
    return {"llr": llr, "spread": obs.std(0)}


def canary_scores(
    include: np.ndarray,
    *,
    noise_multiplier: float,
    sample_rate: float,
    steps: int,
    chunk: int = CHUNK,
    make_stepper: StepperFactory | None = None,
) -> dict[str, np.ndarray]:
    """Every canary's scores, the mechanism run on ``chunk`` canaries at a time (each chunk
    a fresh model and stepper: more independent trials, memory bounded by the chunk)."""
    parts: list[dict[str, np.ndarray]] = []
    for lo in range(0, len(include), chunk):
        obs = canary_observations(
            noise_multiplier=noise_multiplier,
            sample_rate=sample_rate,
            steps=steps,
            include=include[lo : lo + chunk],
            make_stepper=make_stepper,
        )
        parts.append(scores_of(obs, noise_multiplier=noise_multiplier, sample_rate=sample_rate))
        del obs
        if len(include) > chunk:
            log.info("mechanism audit: %d of %d canaries", lo + chunk, len(include))
    return {name: np.concatenate([p[name] for p in parts]) for name in parts[0]}


def masks_are_fresh(
    *, sample_rate: float, make_sampling: Callable[[], torch.Generator], records: int = 4096
) -> bool:
    """Whether two plans made the platform's way draw different Poisson masks: a sampling
    generator from a fixed or public seed draws the same ones, run after run."""
    split = Split.from_tensors(torch.zeros(records, 1, 1, 1), torch.zeros(records).long())
    draws = []
    for _ in range(2):
        batches = poisson_batches(split, sample_rate=sample_rate, rng=make_sampling())
        draws.append([next(batches)[1].tolist() for _ in range(4)])
    return draws[0] != draws[1]


def audit_mechanism(
    *,
    noise_multiplier: float,
    sample_rate: float,
    steps: int,
    delta: float,
    claimed_epsilon: float | None = None,
    num_canaries: int = 1_000_000,
    confidence: float = 0.95,
    accountant: str = "rdp",
    make_stepper: StepperFactory | None = None,
    make_sampling: Callable[[], torch.Generator] | None = None,
) -> MechanismAudit:
    """Audit the private step with ``num_canaries`` gradient canaries (module docstring).

    ``claimed_epsilon`` defaults to the accountant's epsilon of the mechanism;
    ``make_stepper`` and ``make_sampling`` (the Poisson masks' generator; default: the
    plan's own) let a test substitute a deliberately broken stepper or sampling."""
    sampling = make_sampling or (
        lambda: (
            DPPlan(
                noise_multiplier=1.0,
                max_grad_norm=1.0,
                sample_rate=sample_rate,
                on_step=lambda: None,
            ).sampling
        )
    )
    include = secret_numpy_generator().integers(0, 2, num_canaries).astype(bool)
    scores = canary_scores(
        include,
        noise_multiplier=noise_multiplier,
        sample_rate=sample_rate,
        steps=steps,
        make_stepper=make_stepper,
    )
    alpha = (1 - confidence) / (len(scores) + 1)  # the (eps, delta) tests and the mu test
    bounds = {
        name: hypothesis_test_bound(s, include, delta=delta, alpha=alpha)
        for name, s in scores.items()
    }
    best = max(bounds, key=lambda k: bounds[k])
    mu_lb = gaussian_test_bound(scores["llr"], include, alpha=alpha)
    # at rate 1 the claim is exactly Gaussian: T steps of noise sigma are sqrt(T)/sigma-GDP
    mu_claimed = math.sqrt(steps) / noise_multiplier if sample_rate >= 1.0 else None
    events = [(noise_multiplier, sample_rate, steps)]
    claimed = (
        claimed_epsilon
        if claimed_epsilon is not None
        else compute_epsilon(events, delta=delta, kind=accountant)
    )
    return MechanismAudit(
        claimed_epsilon=claimed,
        delta=delta,
        noise_multiplier=noise_multiplier,
        sample_rate=sample_rate,
        steps=steps,
        num_canaries=num_canaries,
        confidence=confidence,
        epsilon_lower_bound=bounds[best],
        best_score=best,
        bounds_by_score=bounds,
        epsilon_prv=compute_epsilon(events, delta=delta, kind="prv"),
        reachable_epsilon=perfect_test_bound(include, delta=delta, alpha=alpha),
        mu_lower_bound=mu_lb,
        mu_claimed=mu_claimed,
        epsilon_exact=gdp_epsilon(mu_claimed, delta=delta) if mu_claimed is not None else None,
        epsilon_lower_bound_gaussian=gdp_epsilon(mu_lb, delta=delta)
        if mu_claimed is not None
        else None,
        masks_fresh=masks_are_fresh(sample_rate=sample_rate, make_sampling=sampling)
        if sample_rate < 1.0
        else None,
    )
