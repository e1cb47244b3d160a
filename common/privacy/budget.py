"""A site's privacy budget for one run: calibrated once, spent write-ahead, never exceeded.

The state (accountant history, noise multiplier, the site's ledger) lives in a JSON file
on the site's own disk. Before a round trains, the steps it will take are checked against
the budget and *recorded first* (write-ahead): a client that crashes mid-round has
over-counted, never under-counted, and a restarted client continues from the file.

    privacy = SitePrivacy.open(path, dp=cfg.dp, plan=plan, num_samples=n)
    privacy.spend(events, task=t, server_round=r)   # raises BudgetExceeded, or records
"""

from __future__ import annotations

import json
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from common.config import DPConfig
from common.privacy.accountant import Accountant, Event
from common.privacy.calibrate import noise_for_budget

SCOPE = "sample-level, per site"


class BudgetExceeded(RuntimeError):
    """Training this round would spend more than the site's privacy budget."""


class PrivacyStateError(RuntimeError):
    """The saved privacy state does not match this run's privacy settings."""


@dataclass
class SitePrivacy:
    path: Path
    accountant: Accountant
    target_epsilon: float
    delta: float
    noise_multiplier: float
    max_grad_norm: float
    ledger: list[dict[str, Any]] = field(default_factory=list)

    @classmethod
    def open(
        cls, path: Path, *, dp: DPConfig, plan: list[tuple[float, int]], num_samples: int
    ) -> SitePrivacy:
        """Load the site's state, or create it with noise calibrated for the whole plan."""
        delta = dp.delta_for(num_samples)
        if path.is_file():
            try:
                state = json.loads(path.read_text())
            except json.JSONDecodeError as exc:
                raise PrivacyStateError(
                    f"privacy state {path} is unreadable ({exc}); refusing to train rather "
                    "than forget what this site has spent"
                ) from None
            saved = (
                state["target_epsilon"],
                state["delta"],
                state["accountant"]["kind"],
                state["max_grad_norm"],
            )
            wanted = (dp.target_epsilon, delta, dp.accountant, dp.max_grad_norm)
            if saved != wanted:
                raise PrivacyStateError(
                    f"privacy state {path} was made for (epsilon, delta, accountant, clip) = "
                    f"{saved}, this run asks for {wanted}; refusing to mix budgets"
                )
            return cls(
                path,
                Accountant.from_dict(state["accountant"]),
                dp.target_epsilon,
                delta,
                state["noise_multiplier"],
                dp.max_grad_norm,
                state["ledger"],
            )
        sigma = noise_for_budget(
            plan, target_epsilon=dp.target_epsilon, delta=delta, accountant=dp.accountant
        )
        privacy = cls(
            path, Accountant(dp.accountant), dp.target_epsilon, delta, sigma, dp.max_grad_norm
        )
        privacy.save()
        return privacy

    @property
    def epsilon(self) -> float:
        return self.accountant.epsilon(self.delta)

    def spend(self, events: list[Event], *, task: int, server_round: int) -> None:
        """Check ``events`` against the budget, then record them (before training)."""
        after = self.accountant.epsilon_after(events, self.delta)
        if after > self.target_epsilon * (1 + 1e-9):
            raise BudgetExceeded(
                f"this round ({sum(n for *_, n in events)} DP-SGD steps) would bring the "
                f"site to epsilon={after:.3f} > budget {self.target_epsilon} at "
                f"delta={self.delta:.2e} ({self.accountant.kind}, {SCOPE}); refusing to train"
            )
        for sigma, q, n in events:
            self.accountant.step(sigma, q, n)
        self.ledger.append(
            {
                "task": task,
                "round": server_round,
                "noise_multiplier": self.noise_multiplier,
                "sample_rate": max(q for _, q, _ in events),
                "steps": sum(n for *_, n in events),
                "events": [list(e) for e in events],
                "max_grad_norm": self.max_grad_norm,
                "epsilon": after,
                "budget_left": self.target_epsilon - after,
            }
        )
        self.save()

    def metrics(self) -> dict[str, float]:
        """What the site reports about its privacy (scalars only)."""
        eps = self.epsilon
        last = self.ledger[-1] if self.ledger else {}
        return {
            "dp-epsilon": eps,
            "dp-delta": self.delta,
            "dp-noise-multiplier": self.noise_multiplier,
            "dp-sample-rate": float(last.get("sample_rate", 0.0)),
            "dp-steps": float(self.accountant.steps),
            "dp-max-grad-norm": self.max_grad_norm,
            "dp-budget-left": self.target_epsilon - eps,
        }

    def save(self) -> None:
        """Atomic write: the file is always a complete, earlier or newer, state."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        state = {
            "scope": SCOPE,
            "target_epsilon": self.target_epsilon,
            "delta": self.delta,
            "noise_multiplier": self.noise_multiplier,
            "max_grad_norm": self.max_grad_norm,
            "accountant": self.accountant.to_dict(),
            "ledger": self.ledger,
        }
        fd, tmp = tempfile.mkstemp(dir=self.path.parent, prefix=self.path.name, suffix=".tmp")
        with os.fdopen(fd, "w") as fh:
            json.dump(state, fh, indent=1)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, self.path)
