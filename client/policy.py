"""A site's own privacy policy: the rules its operator sets and the server cannot weaken.

The server's run config says how a run trains; it does not decide a site's privacy. Before
a site touches a record it checks the instruction against its policy, and a run that asks
for less privacy than the policy allows gets an error reply naming the policy and the key:
nothing is trained, nothing leaves. A run may always ask for *more* privacy (a lower
target, a smaller delta, fewer metrics, more records per task).

Where the policy comes from, in order:

1. ``<site dir>/policy.toml`` (written by ``fedreplay site init``; the site dir is
   ``$FEDREPLAY_SITE_DIR``), or the file the node config names with
   ``policy="/path/policy.toml"``. The site's operator controls both;
   the server controls neither.
2. A site that names itself (``site-id`` in its node config, as every deployed site must)
   and has no policy file refuses to train: a real site never takes its privacy rules
   from the server.
3. A simulated site (no ``site-id``: Flower's simulation gives only ``partition-id``) has
   no operator of its own: the experiment config plays every site's operator. So does a
   site whose operator wrote the run config (``fedreplay single``), which says so with
   ``policy="run-config"`` in the node config. One rule
   holds even there: records that have spent privacy budget (the site has a lifetime
   ledger) are never trained on without DP unless a policy file says ``dp-required =
   false``.

    [policy]              # <site dir>/policy.toml
    dp-required = true    # refuse any run without sample- or client-level DP
    max-epsilon = 8.0     # lifetime cap: a run's dp.target-epsilon may not exceed it
    max-delta = 1e-5      # a run's dp.delta may not exceed it
    min-records = 256     # a run's dp.min-records may not be lower
    release-metrics = []  # metrics beyond the protocol a run may ask this site to send
    own-noise = false     # true: add all the noise itself, also under secure aggregation

Distributed noise: in a run that sums the releases under secure aggregation
(``fed.aggregation = "secure"``), a site adds only its share of the noise (1/m of its
variance, m the protocol's threshold: a majority of the run's sites), so the unmasked sum
carries the noise once instead of once per site. Its epsilon then holds against anyone who
sees the sum, with at least m honest sites' shares in it; against a server colluding with
every other site, its own share is all there is (``dp-epsilon-own-noise``, kept in its
ledger). ``own-noise = true`` makes that the guarantee: the site adds all the noise itself.
"""

from __future__ import annotations

import math
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from common.config import RELEASABLE_METRICS, ExperimentConfig
from common.fileio import atomic_write_text
from common.protocol import secure_threshold
from common.sitestate import SITE_ID_KEY

POLICY_FILE = "policy.toml"
POLICY_KEY = "policy"  # node config: the path of this site's policy file
RUN_CONFIG = "run-config"  # node config policy="run-config": the operator wrote the run config
KEYS = ("dp-required", "max-epsilon", "max-delta", "min-records", "release-metrics", "own-noise")


class PolicyError(ValueError):
    """A policy file is missing where one is required, or unreadable, or malformed."""


class PolicyRefused(PermissionError):
    """The server's instruction asks for less privacy than this site's policy allows."""


@dataclass(frozen=True)
class SitePolicy:
    dp_required: bool
    max_epsilon: float | None  # None: no cap of the policy's own (the ledger's budget holds)
    max_delta: float | None
    min_records: int
    release_metrics: frozenset[str] = field(default_factory=frozenset)
    source: str = ""  # where it came from, said in every refusal
    own_noise: bool = False  # add all the noise itself, also under secure aggregation

    def __post_init__(self) -> None:
        for key, value in (("max-epsilon", self.max_epsilon), ("max-delta", self.max_delta)):
            if value is not None and not (math.isfinite(value) and value > 0):
                raise PolicyError(f"{self.source}: {key} = {value!r} must be a positive number")
        if self.max_delta is not None and self.max_delta >= 1:
            raise PolicyError(f"{self.source}: max-delta = {self.max_delta!r} must be below 1")
        if self.min_records < 0:
            raise PolicyError(f"{self.source}: min-records = {self.min_records} is negative")
        unknown = self.release_metrics - RELEASABLE_METRICS
        if unknown:
            raise PolicyError(
                f"{self.source}: release-metrics names {sorted(unknown)}; releasable: "
                f"{', '.join(sorted(RELEASABLE_METRICS))}"
            )

    # --- the check ------------------------------------------------------------------
    def refusal(self, cfg: ExperimentConfig) -> str | None:
        """Why ``cfg`` asks for less privacy than this policy allows (None: it does not)."""
        dp = cfg.dp
        private = dp.enabled or dp.client_level
        if self.dp_required and not private:
            return (
                f"the site's privacy policy ({self.source}) has dp-required = true; the run "
                "asks dp.enabled = false"
            )
        if not dp.enabled:
            return None  # client-level DP only: the server's noise, nothing of the site's
        if self.max_epsilon is not None and dp.target_epsilon > self.max_epsilon * (1 + 1e-12):
            return (
                f"the site's privacy policy ({self.source}) caps epsilon at max-epsilon = "
                f"{self.max_epsilon}; the run asks dp.target-epsilon = {dp.target_epsilon}"
            )
        if self.max_delta is not None and dp.delta > self.max_delta * (1 + 1e-12):
            return (
                f"the site's privacy policy ({self.source}) has max-delta = {self.max_delta}; "
                f"the run asks dp.delta = {dp.delta}"
            )
        if dp.min_records < self.min_records:
            return (
                f"the site's privacy policy ({self.source}) has min-records = "
                f"{self.min_records}; the run asks dp.min-records = {dp.min_records}"
            )
        more = dp.released_metrics - self.release_metrics
        if more:
            return (
                f"the site's privacy policy ({self.source}) allows release-metrics = "
                f"{sorted(self.release_metrics)}; the run asks dp.release-metrics to add "
                f"{sorted(more)}"
            )
        return None

    def noise_shares(self, cfg: ExperimentConfig) -> int:
        """Of how many sites' noise this site's release is a share: 1 (it adds all the
        noise) unless the run sums releases under secure aggregation with sample-level DP
        and this policy allows distributed noise: then the protocol's threshold, the fewest
        sites whose releases an unmasked sum holds (common.protocol.secure_threshold)."""
        if self.own_noise or not (cfg.secure_aggregation and cfg.dp.enabled):
            return 1
        return secure_threshold(cfg.fed.num_sites)

    def check(self, cfg: ExperimentConfig) -> None:
        reason = self.refusal(cfg)
        if reason is not None:
            raise PolicyRefused(f"{reason}: refusing the instruction, nothing trained or sent")

    # --- files ------------------------------------------------------------------------
    def to_toml(self) -> str:
        lines = [
            "# fedreplay site privacy policy: this site's own rules; the server cannot weaken",
            "# them (a run asking for less privacy is refused before any record is read).",
            "[policy]",
            f"dp-required = {'true' if self.dp_required else 'false'}",
        ]
        if self.max_epsilon is not None:
            lines.append(f"max-epsilon = {self.max_epsilon!r}")
        if self.max_delta is not None:
            lines.append(f"max-delta = {self.max_delta!r}")
        lines.append(f"min-records = {self.min_records}")
        metrics = ", ".join(f'"{m}"' for m in sorted(self.release_metrics))
        lines.append(f"release-metrics = [{metrics}]")
        lines.append(f"own-noise = {'true' if self.own_noise else 'false'}")
        return "\n".join(lines) + "\n"


def read_policy(path: Path) -> SitePolicy:
    """The policy in ``path``; a clear :class:`PolicyError` naming the file and the key."""
    try:
        doc = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise PolicyError(f"site privacy policy {path} is unreadable ({exc})") from None
    table: Mapping[str, Any] = doc.get("policy", doc)
    unknown = set(table) - set(KEYS)
    if unknown:
        raise PolicyError(
            f"site privacy policy {path}: unknown keys {sorted(unknown)}; known: {', '.join(KEYS)}"
        )
    if "dp-required" not in table:
        raise PolicyError(f"site privacy policy {path} must say dp-required = true or false")

    def number(key: str) -> float | None:
        value = table.get(key)
        if value is None:
            return None
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise PolicyError(f"site privacy policy {path}: {key} = {value!r} is not a number")
        return float(value)

    required = table["dp-required"]
    if not isinstance(required, bool):
        raise PolicyError(f"site privacy policy {path}: dp-required = {required!r} is not a bool")
    metrics = table.get("release-metrics", [])
    if isinstance(metrics, str):
        metrics = [m.strip() for m in metrics.split(",") if m.strip()]
    if not isinstance(metrics, list) or not all(isinstance(m, str) for m in metrics):
        raise PolicyError(f"site privacy policy {path}: release-metrics must be a list of names")
    min_records = table.get("min-records", 0)
    if isinstance(min_records, bool) or not isinstance(min_records, int):
        raise PolicyError(
            f"site privacy policy {path}: min-records = {min_records!r} is not a whole number"
        )
    own_noise = table.get("own-noise", False)
    if not isinstance(own_noise, bool):
        raise PolicyError(f"site privacy policy {path}: own-noise = {own_noise!r} is not a bool")
    return SitePolicy(
        dp_required=required,
        max_epsilon=number("max-epsilon"),
        max_delta=number("max-delta"),
        min_records=min_records,
        release_metrics=frozenset(metrics),
        source=str(path),
        own_noise=own_noise,
    )


def write_policy(site_dir: Path, policy: SitePolicy, *, force: bool = False) -> Path:
    """Write ``<site_dir>/policy.toml`` (atomically); an existing one only with ``force``."""
    path = Path(site_dir) / POLICY_FILE
    if path.exists() and not force:
        raise PolicyError(f"{path} exists; edit it, or pass --force to replace it")
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(path, policy.to_toml())
    return path


def policy_path(site_dir: Path, node_config: Mapping[str, object]) -> Path:
    """The node config's ``policy`` file, else ``<site dir>/policy.toml`` (also where
    ``policy="run-config"`` looks first)."""
    given = str(node_config.get(POLICY_KEY, "") or "")
    if given and given != RUN_CONFIG:
        return Path(given).expanduser()
    return Path(site_dir) / POLICY_FILE


def site_policy(
    cfg: ExperimentConfig,
    node_config: Mapping[str, object],
    *,
    site_dir: Path,
    has_spent: bool,
) -> SitePolicy:
    """This site's policy (see the module's docstring for where it comes from).

    ``has_spent``: the site keeps a lifetime privacy ledger (its records have spent budget)."""
    operator_config = node_config.get(POLICY_KEY) == RUN_CONFIG
    path = policy_path(site_dir, node_config)
    if path.is_file():
        return read_policy(path)
    named = bool(str(node_config.get(SITE_ID_KEY, "") or "")) or POLICY_KEY in node_config
    if named and not operator_config:
        raise PolicyError(
            f"this site has no privacy policy at {path}; a deployed site never takes its "
            "privacy rules from the server. Its operator writes one: fedreplay site init "
            "--dp-required --max-epsilon 8 --max-delta 1e-5 (see docs/deployment.md)"
        )
    # a simulated site: the experiment config is its operator's word; spent records stay DP
    return SitePolicy(
        dp_required=has_spent or cfg.dp.enabled or cfg.dp.client_level,
        max_epsilon=None,
        max_delta=None,
        min_records=0,
        release_metrics=cfg.dp.released_metrics,
        source=(
            (
                "the operator's run config"
                if operator_config
                else "simulated site: the experiment config"
            )
            + (", with DP required for records that have spent budget" if has_spent else "")
        ),
    )
