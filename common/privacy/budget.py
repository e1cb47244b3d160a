"""A site's privacy budget for one run: calibrated once, spent write-ahead, never exceeded.

The state (one accountant history and noise multiplier per *partition*, the site's
ledger) lives in a JSON file on the site's own disk. A partition is a set of steps whose
privacy losses compose: one per task under per-task (parallel) composition, a single one
for the whole run under sequential composition (:mod:`common.privacy.composition`). The
noise multiplier of every partition is calibrated when the state is created, for all the
rounds and local steps the plan gives it, so that each partition ends at the target
epsilon. Before a round trains, its steps are checked against the budget and *recorded
first* (write-ahead): a client that crashes mid-round has over-counted, never
under-counted, and a restarted client continues from the file.

    privacy = SitePrivacy.open(path, dp=cfg.dp, plan={task: (q, steps)}, num_samples=n,
                               composition="per-task")
    sigma = privacy.noise_multiplier(task)
    privacy.spend(events, task=t, server_round=r)   # raises BudgetExceeded, or records
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from common.config import DPConfig
from common.privacy.accountant import Accountant, Event
from common.privacy.calibrate import noise_for_budget
from common.privacy.composition import PER_TASK, SEQUENTIAL, scope

STATE_VERSION = 2
Plan = Mapping[int, tuple[float, int]]  # task -> (sample rate, planned DP steps)


class BudgetExceeded(RuntimeError):
    """Training this round would spend more than the site's privacy budget."""


class PrivacyStateError(RuntimeError):
    """The saved privacy state does not match this run's privacy settings."""


def partition_of(task: int, composition: str) -> str:
    return f"task-{task}" if composition == PER_TASK else "run"


@dataclass
class Partition:
    """Steps whose privacy losses compose: their noise and the accountant of their history."""

    noise_multiplier: float
    accountant: Accountant

    def to_dict(self) -> dict[str, Any]:
        return {"noise_multiplier": self.noise_multiplier, "accountant": self.accountant.to_dict()}

    @staticmethod
    def from_dict(d: Mapping[str, Any]) -> Partition:
        return Partition(float(d["noise_multiplier"]), Accountant.from_dict(d["accountant"]))


def calibrate(plan: Plan, *, composition: str, dp: DPConfig, delta: float) -> dict[str, Partition]:
    """One partition per task (per-task) or one for the run, each with the smallest noise
    that keeps its planned steps within ``dp.target_epsilon``."""
    groups: dict[str, list[tuple[float, int]]] = {}
    for task, (q, steps) in sorted(plan.items()):
        if steps > 0:
            groups.setdefault(partition_of(task, composition), []).append((q, steps))
    return {
        key: Partition(
            noise_for_budget(
                events, target_epsilon=dp.target_epsilon, delta=delta, accountant=dp.accountant
            ),
            Accountant(dp.accountant),
        )
        for key, events in groups.items()
    }


@dataclass
class SitePrivacy:
    path: Path
    composition: str
    target_epsilon: float
    delta: float
    max_grad_norm: float
    accountant_kind: str
    partitions: dict[str, Partition]
    ledger: list[dict[str, Any]] = field(default_factory=list)
    plan: dict[int, tuple[float, int]] = field(default_factory=dict)

    @classmethod
    def open(
        cls,
        path: Path,
        *,
        dp: DPConfig,
        plan: Plan,
        num_samples: int,
        composition: str = SEQUENTIAL,
    ) -> SitePrivacy:
        """Load the site's state, or create it with noise calibrated for the whole plan."""
        if composition not in (PER_TASK, SEQUENTIAL):
            raise ValueError(f"composition {composition!r} is not {PER_TASK!r} or {SEQUENTIAL!r}")
        delta = dp.delta_for(num_samples)
        wanted = (dp.target_epsilon, delta, dp.accountant, dp.max_grad_norm, composition)
        if path.is_file():
            try:
                state = json.loads(path.read_text())
            except json.JSONDecodeError as exc:
                raise PrivacyStateError(
                    f"privacy state {path} is unreadable ({exc}); refusing to train rather "
                    "than forget what this site has spent"
                ) from None
            if state.get("version") != STATE_VERSION:
                raise PrivacyStateError(
                    f"privacy state {path} has format version {state.get('version')!r}, this "
                    f"fedreplay reads version {STATE_VERSION}; refusing to guess what was spent"
                )
            saved = (
                state["target_epsilon"],
                state["delta"],
                state["accountant"],
                state["max_grad_norm"],
                state["composition"],
            )
            if saved != wanted:
                raise PrivacyStateError(
                    f"privacy state {path} was made for (epsilon, delta, accountant, clip, "
                    f"composition) = {saved}, this run asks for {wanted}; refusing to mix budgets"
                )
            return cls(
                path,
                composition,
                dp.target_epsilon,
                delta,
                dp.max_grad_norm,
                dp.accountant,
                {k: Partition.from_dict(v) for k, v in state["partitions"].items()},
                state["ledger"],
                dict(plan),
            )
        if not any(steps > 0 for _, steps in plan.values()):
            raise ValueError("the privacy plan is empty: this site has no data to train on")
        # Sequential: one noise for the whole plan, now. Per task: each task's noise is
        # calibrated (for all of that task's planned rounds and steps) when the site first
        # trains on it, then kept; tasks are independent, so nothing is lost by waiting.
        partitions = (
            calibrate(plan, composition=composition, dp=dp, delta=delta)
            if composition == SEQUENTIAL
            else {}
        )
        privacy = cls(
            path,
            composition,
            dp.target_epsilon,
            delta,
            dp.max_grad_norm,
            dp.accountant,
            partitions,
            plan=dict(plan),
        )
        privacy.save()
        return privacy

    @property
    def scope(self) -> str:
        return scope(self.composition)

    def _partition(self, task: int) -> Partition:
        key = partition_of(task, self.composition)
        if key not in self.partitions and self.plan.get(task, (0.0, 0))[1] > 0:
            if self.composition == PER_TASK:  # first use of this task: calibrate, persist
                self.partitions[key] = Partition(
                    noise_for_budget(
                        [self.plan[task]],
                        target_epsilon=self.target_epsilon,
                        delta=self.delta,
                        accountant=self.accountant_kind,
                    ),
                    Accountant(self.accountant_kind),
                )
                self.save()
        if key not in self.partitions:
            raise BudgetExceeded(
                f"task {task} is not in this site's privacy plan ({sorted(self.partitions)}); "
                "refusing to train on data no budget was planned for"
            )
        return self.partitions[key]

    def noise_multiplier(self, task: int) -> float:
        """The calibrated noise multiplier of the steps that train on ``task``."""
        return self._partition(task).noise_multiplier

    def epsilon_of(self, task: int) -> float:
        """Epsilon spent so far on the records of ``task`` (its partition)."""
        return self._partition(task).accountant.epsilon(self.delta)

    @property
    def epsilon(self) -> float:
        """The site's epsilon: the largest of its partitions'."""
        return max(
            (p.accountant.epsilon(self.delta) for p in self.partitions.values()), default=0.0
        )

    @property
    def steps(self) -> int:
        return sum(p.accountant.steps for p in self.partitions.values())

    def spend(self, events: list[Event], *, task: int, server_round: int) -> None:
        """Check ``events`` against the budget, then record them (before training)."""
        part = self._partition(task)
        after = part.accountant.epsilon_after(events, self.delta)
        if after > self.target_epsilon * (1 + 1e-9):
            raise BudgetExceeded(
                f"this round ({sum(n for *_, n in events)} DP-SGD steps on task {task}) would "
                f"bring the site to epsilon={after:.3f} > budget {self.target_epsilon} at "
                f"delta={self.delta:.2e} ({self.accountant_kind}, {self.scope}); "
                "refusing to train"
            )
        for sigma, q, n in events:
            part.accountant.step(sigma, q, n)
        site_eps = self.epsilon
        self.ledger.append(
            {
                "task": task,
                "round": server_round,
                "partition": partition_of(task, self.composition),
                "noise_multiplier": part.noise_multiplier,
                "sample_rate": max(q for _, q, _ in events),
                "steps": sum(n for *_, n in events),
                "events": [list(e) for e in events],
                "max_grad_norm": self.max_grad_norm,
                "task_epsilon": after,
                "epsilon": site_eps,
                "budget_left": self.target_epsilon - site_eps,
            }
        )
        self.save()

    def metrics(self) -> dict[str, float]:
        """What the site reports about its privacy (scalars only)."""
        eps = self.epsilon
        last = self.ledger[-1] if self.ledger else {}
        return {
            "dp-epsilon": eps,
            "dp-task-epsilon": float(last.get("task_epsilon", 0.0)),
            "dp-delta": self.delta,
            "dp-noise-multiplier": float(last.get("noise_multiplier", 0.0)),
            "dp-sample-rate": float(last.get("sample_rate", 0.0)),
            "dp-steps": float(self.steps),
            "dp-max-grad-norm": self.max_grad_norm,
            "dp-budget-left": self.target_epsilon - eps,
            "dp-per-task": 1.0 if self.composition == PER_TASK else 0.0,
        }

    def save(self) -> None:
        """Atomic write: the file is always a complete, earlier or newer, state."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        state = {
            "version": STATE_VERSION,
            "scope": self.scope,
            "composition": self.composition,
            "target_epsilon": self.target_epsilon,
            "delta": self.delta,
            "max_grad_norm": self.max_grad_norm,
            "accountant": self.accountant_kind,
            "partitions": {k: p.to_dict() for k, p in self.partitions.items()},
            "plan": {str(t): list(e) for t, e in sorted(self.plan.items())},
            "ledger": self.ledger,
        }
        fd, tmp = tempfile.mkstemp(dir=self.path.parent, prefix=self.path.name, suffix=".tmp")
        with os.fdopen(fd, "w") as fh:
            json.dump(state, fh, indent=1)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, self.path)
