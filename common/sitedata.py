"""What a site is and which records it holds, in plain PyTorch (no Flower): its identity
(stable site id, simulated data share) and its share of every task. Shared by the site
(client.site) and the audits (common.audit), so common/ never imports client/.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace
from functools import lru_cache

from common.config import ExperimentConfig
from common.data.canaries import run_canaries
from common.data.holdout import withhold
from common.data.partition import site_stream
from common.data.streams import build_stream
from common.data.types import TaskStream, concat
from common.sitestate import SITE_ID_KEY, check_site_id, default_site_id


@dataclass(frozen=True)
class SiteIdentity:
    """Which share of the data this site holds (simulation: from node_config) and its
    stable site id, which keys everything the site keeps about itself (its lifetime
    privacy ledger): ``site-id`` from the node config, else ``site-<partition-id>``."""

    partition_id: int
    num_partitions: int
    site_id: str = ""

    def __post_init__(self) -> None:
        if not self.site_id:
            object.__setattr__(self, "site_id", default_site_id(self.partition_id))
        check_site_id(self.site_id)

    @staticmethod
    def from_node_config(node_config: Mapping[str, object], default_sites: int) -> SiteIdentity:
        pid = int(node_config.get("partition-id", 0))  # type: ignore[call-overload]
        num = int(node_config.get("num-partitions", default_sites))  # type: ignore[call-overload]
        if not 0 <= pid < num:
            raise ValueError(f"node_config partition-id={pid} is outside 0..{num - 1}")
        return SiteIdentity(pid, num, str(node_config.get(SITE_ID_KEY, "") or ""))


@lru_cache(maxsize=4)
def _global_stream(cfg: ExperimentConfig) -> TaskStream:
    """Every task's records that sites may train on: the audit holdout is cut off first."""
    stream, _ = withhold(build_stream(cfg), fraction=cfg.audit.holdout, seed=cfg.seed)
    return stream


@lru_cache(maxsize=64)
def site_records(cfg: ExperimentConfig, identity: SiteIdentity) -> TaskStream:
    """This site's share of every task (train and test) of the real data, no canaries."""
    stream = _global_stream(cfg)
    if identity.num_partitions > 1:
        stream = site_stream(
            stream,
            site=identity.partition_id,
            num_sites=identity.num_partitions,
            cfg=cfg.partition,
            seed=cfg.seed,
        )
    return stream


@lru_cache(maxsize=64)
def local_stream(cfg: ExperimentConfig, identity: SiteIdentity) -> TaskStream:
    """What this site trains and tests on, identical in every process: its share of every
    task plus, at the canary site, the included canaries in the canary task."""
    stream = site_records(cfg, identity)
    canaries = run_canaries(cfg, stream.shape, stream.num_classes)
    if canaries is not None and identity.partition_id == cfg.audit.canary_site:
        at = cfg.audit.task_index(len(stream))  # one task: a canary is one record of one task
        inserted = canaries.included  # a private record like any other: clipped, counted
        tasks = tuple(
            replace(t, train=concat([t.train, inserted])) if i == at else t
            for i, t in enumerate(stream.tasks)
        )
        stream = replace(stream, tasks=tasks)
    return stream
