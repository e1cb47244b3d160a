"""What the server keeps of one round: whom it sampled, each site's reply (its metrics,
its bounded generator, what the bounds did to it) and each failure. The run writes it to
``rounds.jsonl`` (server.run.federation) and logs failures once (server.run.round_metrics)."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch


def site_key(site_id: str | None, node_id: object) -> str:
    """The name a reply is kept under: its site id, or its node for a reply that declares
    none (a SiteReply, or its ``rounds.jsonl`` entry)."""
    return site_id or f"node-{node_id}"


@dataclass
class SiteReply:
    node_id: int
    metrics: dict[str, float]
    generator: dict[str, torch.Tensor] | None = None
    site_id: str | None = None
    influence: dict[str, object] = field(default_factory=dict)  # what the bounds did

    @property
    def key(self) -> str:
        """The site id, or the node for a reply that declares none."""
        return site_key(self.site_id, self.node_id)


@dataclass
class RoundRecord:
    server_round: int
    sampled: list[int] = field(default_factory=list)
    replies: list[SiteReply] = field(default_factory=list)
    failures: dict[int, str] = field(default_factory=dict)  # node_id -> reason
    refused_aggregate: str | None = None  # why the round kept the previous model
