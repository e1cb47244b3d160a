"""A site's lifetime privacy ledger: what its records have spent, across rounds, tasks and runs.

The budget belongs to the site and its records, not to a run. The ledger lives on the
site's own disk under ``<privacy root>/<site id>/`` (``ledger.json``, a copy in
``ledger.json.bak``, a ``TRAINED`` marker and ``releases/``, the long releases it must be
able to send again) and is keyed by a stable site id, never by a
run id or a data-share index.

*Lifetime partitions* hold the privacy loss of disjoint sets of records (their
fingerprints, :mod:`common.privacy.records`): a record's epsilon is that of the one
partition holding it, and the site's epsilon is the largest. Every step of every run
that samples from a partition's records is appended to its history (sequential
composition within a partition, across rounds and runs). A run declares its own
partitions when it first trains (one per task under per-task composition, one for the
run under sequential composition); a run partition with exactly the records of a
lifetime partition continues it, one disjoint from all starts a new one, and one that
overlaps others but differs (records added, tasks split differently) merges them all:
the merged history is every history that touched any of its records, which over-counts
but never under-counts.

Noise is calibrated per run partition on top of what its lifetime partition has already
spent, so that the run ends at ``dp.target-epsilon`` *lifetime*. A second run on the same
records with the same target therefore has nothing left and is refused. The site's
``budget`` (its lifetime cap) is the first run's target; a run asking for more is refused
until an operator raises it (:func:`common.privacy.operator.raise_budget`,
``fedreplay privacy raise-budget``),
which the ledger records. A ledger that is missing or unreadable for a site that has
trained before is an error naming the fix, never a fresh budget. Reads and writes happen
under an exclusive lock; writes are atomic (temp file, fsync, rename, directory fsync).

    with SiteLedger.open(root, "site-3", dp=cfg.dp) as ledger:
        ledger.join_run(run_key, composition="per-task", partitions={"task-0": fps, ...},
                        plan={0: (q, steps), ...}, run_target=8.0, max_grad_norm=1.0)
        sigma = ledger.noise_multiplier(run_key, task=0)
        ledger.spend(run_key, task=0, events=[(sigma, q, n)], server_round=3)
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from common.config import DPConfig
from common.fileio import atomic_write_text
from common.privacy import records as fp
from common.privacy.accountant import Event, compute_epsilon, merged
from common.privacy.calibrate import noise_for_budget
from common.privacy.composition import PER_TASK, SEQUENTIAL
from common.privacy.ledger_file import (
    BACKUP,
    LEDGER,
    LOCK,
    MARKER,
    PrivacyStateError,
    read_release,
    read_state,
    write_release,
)
from common.privacy.randomness import secret_gaussian
from common.privacy.record_index import add_spent, claimed_elsewhere
from common.sitestate import check_site_id

# A run left with less than this share of its target is refused: its noise would drown
# every signal (the site is told what it spent and how to proceed).
MIN_SHARE_LEFT = 0.1
# a task's one Gaussian release (the embedding) in the accountant's view: every record, one
# step; kept under the run's "histograms" key, the name ledgers were written with
TASK_RELEASE_RATE = 1.0
_WHAT = {"training": "DP-SGD steps", "count release": "record-count release"}
Plan = Mapping[int, tuple[float, int]]  # task -> (sample rate, planned DP steps)


class BudgetExceeded(RuntimeError):
    """Training this round would spend more than the site's privacy budget."""


def run_partition_of(task: int, composition: str) -> str:
    return f"task-{task}" if composition == PER_TASK else "run"


@dataclass
class LifetimePartition:
    records: np.ndarray  # sorted uint64 fingerprints
    history: list[Event] = field(default_factory=list)
    merged_into: str | None = None
    created: float = field(default_factory=time.time)
    # the same steps at the noise this site added itself, where that was a share of the
    # noise (distributed noise under secure aggregation); None: it always added it all
    own_history: list[Event] | None = None

    @property
    def own(self) -> list[Event]:
        """The history against a server that colludes with every other site."""
        return self.history if self.own_history is None else self.own_history

    def to_dict(self) -> dict[str, Any]:
        out = {
            "count": int(self.records.size),
            "digest": fp.digest_of(self.records),
            "records": fp.encode(self.records),
            "history": [list(e) for e in self.history],
            "merged_into": self.merged_into,
            "created": self.created,
        }
        if self.own_history is not None:
            out["own_history"] = [list(e) for e in self.own_history]
        return out

    @staticmethod
    def from_dict(d: Mapping[str, Any]) -> LifetimePartition:
        own = d.get("own_history")
        return LifetimePartition(
            fp.decode(d["records"]),
            _events(d["history"]),
            d.get("merged_into"),
            float(d.get("created", 0.0)),
            None if own is None else _events(own),
        )


class SiteLedger:
    """The lifetime ledger of one site, open under its lock (use as a context manager)."""

    def __init__(self, directory: Path, site_id: str, state: dict[str, Any]) -> None:
        self.directory, self.site_id, self.state = directory, site_id, state
        self.partitions = {
            k: LifetimePartition.from_dict(v) for k, v in state["partitions"].items()
        }
        self.dirty = False

    # --- opening ---------------------------------------------------------------------
    @classmethod
    @contextlib.contextmanager
    def open(cls, root: Path, site_id: str, *, dp: DPConfig | None) -> Iterator[SiteLedger]:
        """Lock, load (or create, for a site that never trained), yield, save if changed.

        ``dp=None`` (operator tools): the ledger must exist; nothing is checked against a run.
        """
        directory = Path(root) / check_site_id(site_id)
        directory.mkdir(parents=True, exist_ok=True)
        fd = os.open(directory / LOCK, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            ledger = cls(directory, site_id, read_state(directory, site_id, dp))
            yield ledger
            if ledger.dirty:
                ledger.save()
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)
            os.close(fd)

    # --- properties ---------------------------------------------------------------------
    @property
    def delta(self) -> float:
        return float(self.state["delta"])

    @property
    def accountant(self) -> str:
        return str(self.state["accountant"])

    @property
    def budget(self) -> float:
        return float(self.state["budget"])

    @property
    def rows(self) -> list[dict[str, Any]]:
        return list(self.state["ledger"])

    def _eps(self, history: list[Event]) -> float:
        return compute_epsilon(history, delta=self.delta, kind=self.accountant)

    def _live(self, key: str) -> str:
        while self.partitions[key].merged_into is not None:
            key = str(self.partitions[key].merged_into)
        return key

    @property
    def epsilon(self) -> float:
        """The site's lifetime epsilon: the largest of its live partitions'."""
        live = [p for p in self.partitions.values() if p.merged_into is None]
        return max((self._eps(p.history) for p in live), default=0.0)

    @property
    def own_epsilon(self) -> float:
        """The lifetime epsilon against a server colluding with every other site: from the
        noise this site added itself (the same as :attr:`epsilon` unless it added a share
        of the noise under secure aggregation)."""
        live = [p for p in self.partitions.values() if p.merged_into is None]
        return max((self._eps(p.own) for p in live), default=0.0)

    @property
    def steps(self) -> int:
        return sum(int(r["steps"]) for r in self.state["ledger"])

    # --- a run ----------------------------------------------------------------------------
    def join_run(
        self,
        run_key: str,
        *,
        composition: str,
        partitions: Mapping[str, np.ndarray],
        plan: Plan | None,
        run_target: float,
        max_grad_norm: float,
        histograms: bool = False,
    ) -> None:
        """Declare a run's partitions (once; later calls check they did not change).
        ``histograms``: every planned task also has one Gaussian release (generator.kind =
        "embedding"'s noised feature sums), planned
        as one more step at sampling rate 1. ``plan=None``: the plan follows from the run's
        released record counts (:meth:`release_counts`, then :meth:`set_plan`); every
        partition with records is declared, since each task's count is released."""
        if composition not in (PER_TASK, SEQUENTIAL):
            raise ValueError(f"composition {composition!r} is not {PER_TASK!r} or {SEQUENTIAL!r}")
        if run_target > self.budget * (1 + 1e-12):
            raise PrivacyStateError(
                f"dp.target-epsilon={run_target} exceeds the lifetime budget {self.budget} of "
                f"site {self.site_id!r}; raising it is an operator action, recorded in the "
                f"ledger: fedreplay privacy raise-budget {self.site_id} --to {run_target} "
                '--reason "..."'
            )
        digests = {k: fp.digest_of(v) for k, v in partitions.items()}
        runs: dict[str, Any] = self.state["runs"]
        if run_key in runs:
            known = {k: v["digest"] for k, v in runs[run_key]["partitions"].items()}
            if known != digests or runs[run_key]["composition"] != composition:
                raise PrivacyStateError(
                    f"site {self.site_id!r}: the records or composition of run {run_key} "
                    "changed since it started; refusing to mix budgets"
                )
            return
        claimed = claimed_elsewhere(
            self.directory.parent, self.site_id, fp.union(partitions.values())
        )
        if claimed:
            names = ", ".join(f"{k!r} ({n} records)" for k, n in sorted(claimed.items()))
            raise PrivacyStateError(
                f"site {self.site_id!r}: records of this run have spent privacy budget under "
                f"another site id of this site folder: {names}. A record keeps what it spent "
                "whatever the site is called: run as that site id (its ledger continues), "
                "or train on other records"
            )
        # write-ahead: the index knows these records before the ledger spends on them
        add_spent(self.directory.parent, self.site_id, fp.union(partitions.values()))
        run_parts: dict[str, Any] = {}
        for key, recs in sorted(partitions.items()):
            if not recs.size:
                continue
            if plan is not None:
                steps = [s for t, (_, s) in plan.items() if run_partition_of(t, composition) == key]
                if not (sum(steps) or histograms):
                    continue
            run_parts[key] = {
                "digest": digests[key],
                "count": int(recs.size),
                "lifetime": self._place(recs),
                "noise_multiplier": None,
                "events": [],
            }
        runs[run_key] = {
            "started": time.time(),
            "composition": composition,
            "target_epsilon": run_target,
            "max_grad_norm": max_grad_norm,
            "plan": None if plan is None else {str(t): list(e) for t, e in sorted(plan.items())},
            "counts": None,  # task -> its released (noised) record count
            "histograms": {} if histograms else None,  # task -> its one release (embedding)
            "partitions": run_parts,
        }
        self.dirty = True

    # --- record counts, released under DP ---------------------------------------------------
    def released_counts(self, run_key: str) -> dict[int, float] | None:
        """The run's released record count of every task (None: not released yet)."""
        counts = self.state["runs"][run_key].get("counts")
        return None if counts is None else {int(t): float(n) for t, n in counts.items()}

    def release_counts(
        self, run_key: str, true_counts: Mapping[int, int], *, sigma: float, server_round: int
    ) -> dict[int, float]:
        """Release every task's record count as a Gaussian mechanism (sensitivity 1 under
        add/remove): each task's partition spends it *before* it is drawn, in this
        transaction; the counts are kept for the run's later rounds and never drawn again.
        Everything that leaves the site about a task's size (its FedAvg weight, sampling
        rate, noise, sit-out) is computed from these counts, never from the true ones."""
        run = self.state["runs"][run_key]
        if run.get("counts") is not None:
            raise PrivacyStateError(f"run {run_key}'s record counts were already released")
        spending = [
            t
            for t, n in sorted(true_counts.items())
            if n > 0 and run_partition_of(t, run["composition"]) in run["partitions"]
        ]
        for task in spending:  # a spent site says so before it pays for a release
            lifetime = self._live(self._run_part(run_key, task)["lifetime"])
            self._require_useful_budget(run_key, lifetime)
        for task in spending:
            self.spend(
                run_key,
                task=task,
                events=[(sigma, 1.0, 1)],
                server_round=server_round,
                kind="count release",
            )
        tasks = sorted(true_counts)
        noise = secret_gaussian(len(tasks), sigma=sigma).tolist()
        released = {int(t): float(true_counts[t]) + z for t, z in zip(tasks, noise, strict=True)}
        run["counts"] = {str(t): c for t, c in released.items()}
        self.dirty = True
        return released

    def set_plan(self, run_key: str, plan: Plan) -> None:
        """The run's plan, once, from its released counts (:meth:`release_counts`)."""
        run = self.state["runs"][run_key]
        if run.get("plan") is not None:
            raise PrivacyStateError(f"run {run_key}'s plan was already set")
        run["plan"] = {str(t): list(e) for t, e in sorted(plan.items())}
        self.dirty = True

    def task_release(self, run_key: str, task: int) -> list[float] | None:
        """The task's one Gaussian release in this run, flat (None: not yet)."""
        found = (self.state["runs"][run_key].get("histograms") or {}).get(str(task))
        if isinstance(found, dict):  # a long release (an embedding): float32
            return np.frombuffer(read_release(self.directory, task, found), dtype="<f4").tolist()
        return None if found is None else [float(c) for c in found]

    def release_shares(self, run_key: str, task: int) -> int:
        """Of how many sites' noise the task's release carries a share (1: all of its own;
        more: it may leave only masked in a secure sum of at least that many sites)."""
        shares = self.state["runs"][run_key].get("release_shares") or {}
        return int(shares.get(str(task), 1))

    def record_task_release(
        self, run_key: str, task: int, counts: list[float], *, shares: int = 1
    ) -> None:
        """Keep a task's release (spent with :meth:`spend` in the same transaction) for
        the task's later rounds; a long one in its own file (:func:`write_release`).
        ``shares`` > 1: it carries 1/shares of the noise's variance (distributed noise)."""
        run = self.state["runs"][run_key]
        if shares > 1:
            run.setdefault("release_shares", {})[str(task)] = int(shares)
        histograms = run.get("histograms")
        if histograms is None:
            raise PrivacyStateError(f"run {run_key} did not plan a release per task")
        if str(task) in histograms:
            raise PrivacyStateError(f"task {task}'s release was already made")
        if len(counts) > 64:
            raw = np.asarray(counts, dtype="<f4").tobytes()
            histograms[str(task)] = write_release(self.directory, raw)
        else:
            histograms[str(task)] = [float(c) for c in counts]
        self.dirty = True

    def _place(self, recs: np.ndarray) -> str:
        """The lifetime partition that holds ``recs``: continued, new, or a merge."""
        touching = [
            k
            for k, p in self.partitions.items()
            if p.merged_into is None and fp.overlap(p.records, recs)
        ]
        if len(touching) == 1 and np.array_equal(self.partitions[touching[0]].records, recs):
            return touching[0]
        key = f"p{len(self.partitions)}"
        history = [e for k in touching for e in self.partitions[k].history]
        own = None
        if any(self.partitions[k].own_history is not None for k in touching):
            own = [e for k in touching for e in self.partitions[k].own]
        records = fp.union([recs, *(self.partitions[k].records for k in touching)])
        self.partitions[key] = LifetimePartition(records, history, own_history=own)
        for k in touching:
            self.partitions[k].merged_into = key
        return key

    def _run_part(self, run_key: str, task: int) -> dict[str, Any]:
        run = self.state["runs"].get(run_key)
        if run is None:
            raise PrivacyStateError(f"run {run_key} has not joined site {self.site_id!r}")
        part = run["partitions"].get(run_partition_of(task, run["composition"]))
        if part is None:
            raise BudgetExceeded(
                f"task {task} is not in site {self.site_id!r}'s privacy plan for run "
                f"{run_key}; refusing to train on data no budget was planned for"
            )
        return dict(part)

    def noise_multiplier(self, run_key: str, task: int) -> float:
        """The noise of ``task``'s steps in this run, calibrated at first use so that the
        run's planned steps end its lifetime partition at the run's target."""
        run = self.state["runs"][run_key]
        part = self._run_part(run_key, task)
        if part["noise_multiplier"] is not None:
            return float(part["noise_multiplier"])
        if run.get("plan") is None:
            raise PrivacyStateError(f"run {run_key} has no plan yet (its counts come first)")
        lifetime = self._live(part["lifetime"])
        # every run partition of this run on the same lifetime partition is calibrated
        # together: they spend from one history
        group = {
            k: p for k, p in run["partitions"].items() if self._live(p["lifetime"]) == lifetime
        }
        tasks = [t for t in run["plan"] if run_partition_of(int(t), run["composition"]) in group]
        plan = [tuple(run["plan"][t]) for t in tasks if int(run["plan"][t][1]) > 0]
        if run.get("histograms") is not None:  # one Gaussian release per task
            plan += [(TASK_RELEASE_RATE, 1)] * len(tasks)
        prior = self.partitions[lifetime].history
        self._require_useful_budget(run_key, lifetime)
        try:
            sigma = noise_for_budget(
                [(float(q), int(n)) for q, n in plan],
                target_epsilon=run["target_epsilon"],
                delta=self.delta,
                accountant=self.accountant,
                prior=prior,
            )
        except ValueError as exc:
            raise BudgetExceeded(f"site {self.site_id!r}: {exc}; refusing to train") from None
        for p in group.values():
            p["noise_multiplier"] = sigma
        self.dirty = True
        return sigma

    def _require_useful_budget(self, run_key: str, lifetime: str) -> None:
        """Refuse a run on a lifetime partition with under MIN_SHARE_LEFT of its target left."""
        target = float(self.state["runs"][run_key]["target_epsilon"])
        spent = self._eps(self.partitions[lifetime].history)
        if spent >= target * (1 - MIN_SHARE_LEFT):
            raise BudgetExceeded(
                f"site {self.site_id!r} has spent epsilon={spent:.3f} of its lifetime budget "
                f"on these records (target {target}, delta={self.delta:.2e}, "
                f"{self.accountant}); nothing useful is left for run {run_key} (under "
                f"{MIN_SHARE_LEFT:.0%} of its target). See "
                "fedreplay privacy show; raising the budget is an operator action"
            )

    def spend(
        self,
        run_key: str,
        *,
        task: int,
        events: list[Event],
        server_round: int,
        kind: str = "training",
        own_events: list[Event] | None = None,
    ) -> None:
        """Check ``events`` against the lifetime budget, then record them (before training).
        ``own_events``: the same steps at the noise this site adds itself, where that is a
        share of ``events``' noise (distributed noise: the others' shares make up the rest);
        the budget is held against ``events``, the guarantee without the others is kept
        beside it (:attr:`own_epsilon`)."""
        run = self.state["runs"][run_key]
        key = run_partition_of(task, run["composition"])
        part = run["partitions"].get(key)
        if part is None:
            self._run_part(run_key, task)  # raises with the reason
        lifetime = self._live(part["lifetime"])
        history = self.partitions[lifetime].history
        after = self._eps([*history, *events])
        target = float(run["target_epsilon"])
        if after > target * (1 + 1e-9):
            raise BudgetExceeded(
                f"this round ({sum(n for *_, n in events)} {_WHAT[kind]} on task {task}) would "
                f"bring site {self.site_id!r} to lifetime epsilon={after:.3f} > budget {target} "
                f"at delta={self.delta:.2e} ({self.accountant}); refusing to train"
            )
        partition = self.partitions[lifetime]
        if own_events is not None or partition.own_history is not None:
            mine = own_events if own_events is not None else events
            partition.own_history = merged([*partition.own, *_events(mine)])
        history[:] = merged([*history, *_events(events)])
        part["events"].extend([list(e) for e in events])
        (self.directory / MARKER).touch()
        site_eps = self.epsilon
        self.state["ledger"].append(
            {
                "time": time.time(),
                "run": run_key,
                "task": task,
                "round": server_round,
                "partition": key,
                "lifetime_partition": lifetime,
                "kind": kind,  # training (DP-SGD steps, a task's release) | count release
                "noise_multiplier": part["noise_multiplier"] or max(s for s, _, _ in events),
                "sample_rate": max(q for _, q, _ in events),
                "steps": sum(n for *_, n in events),
                "events": [list(e) for e in events],
                "max_grad_norm": run["max_grad_norm"],
                "task_epsilon": after,
                "run_epsilon": self.run_epsilon(run_key),
                "epsilon": site_eps,
                "budget_left": self.budget - site_eps,
                # against a server colluding with every other site (distributed noise)
                "own_epsilon": self.own_epsilon,
                "own_noise_multiplier": max(s for s, _, _ in (own_events or events)),
            }
        )
        self.dirty = True

    def run_epsilon(self, run_key: str) -> float:
        """This run's own share: its steps alone, per lifetime partition, the largest."""
        run = self.state["runs"].get(run_key, {"partitions": {}})
        by_lifetime: dict[str, list[Event]] = {}
        for p in run["partitions"].values():
            by_lifetime.setdefault(self._live(p["lifetime"]), []).extend(_events(p["events"]))
        return max((self._eps(h) for h in by_lifetime.values()), default=0.0)

    def metrics(self, run_key: str) -> dict[str, float]:
        """What the site reports about its privacy (scalars only, all public functions of
        the configuration and the declared per-task record counts)."""
        last: dict[str, Any] = next(
            (r for r in reversed(self.state["ledger"]) if r["run"] == run_key), {}
        )
        eps = self.epsilon
        run = self.state["runs"][run_key]
        return {
            "dp-epsilon": eps,
            "dp-run-epsilon": self.run_epsilon(run_key),
            "dp-task-epsilon": float(last.get("task_epsilon", 0.0)),
            "dp-delta": self.delta,
            "dp-noise-multiplier": float(last.get("noise_multiplier") or 0.0),
            "dp-sample-rate": float(last.get("sample_rate", 0.0)),
            "dp-steps": float(sum(int(r["steps"]) for r in self.state["ledger"])),
            "dp-max-grad-norm": float(run["max_grad_norm"]),
            "dp-budget-left": self.budget - eps,
            "dp-epsilon-own-noise": self.own_epsilon,
            "dp-per-task": 1.0 if run["composition"] == PER_TASK else 0.0,
        }

    # --- persistence -------------------------------------------------------------------
    def to_state(self) -> dict[str, Any]:
        return {**self.state, "partitions": {k: p.to_dict() for k, p in self.partitions.items()}}

    def save(self) -> None:
        """Atomic write of the ledger, then of its backup (the ledger is authoritative)."""
        text = json.dumps(self.to_state(), indent=1)
        atomic_write_text(self.directory / LEDGER, text)
        atomic_write_text(self.directory / BACKUP, text)
        self.dirty = False


def _events(events: Iterable[Sequence[Any]]) -> list[Event]:
    """Events as the accountant takes them (from JSON lists or tuples)."""
    return [(float(s), float(q), int(n)) for s, q, n in events]
