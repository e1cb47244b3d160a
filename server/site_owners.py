"""Which node presents which site id: a site id belongs to one node at a time.

Without node authentication the server cannot tell which of two nodes claiming one site id
is genuine, so both are refused in that round; a site id stays with its node while that node
is connected and answers, and moves with a site that restarted on a new node.
"""

from __future__ import annotations

import logging

from flwr.app import Message

from common import wire

log = logging.getLogger("fedreplay.server")


class SiteOwners:
    def __init__(self) -> None:
        self.owners: dict[str, int] = {}  # site id -> the node that presents it
        self.connected: set[int] = set()  # nodes connected when the round was configured
        self.gone: set[int] = set()  # sampled nodes without a usable reply this round
        self.contested: dict[str, set[int]] = {}  # site ids several nodes claim this round

    def begin_round(
        self, replies: list[Message], instructions: list[Message], sampled: list[int]
    ) -> list[int]:
        """The node each reply is about; notes the round's contested ids and absent nodes."""
        self.contested = _contested_claims(replies)
        sent = {m.metadata.message_id: m.metadata.dst_node_id for m in instructions}
        nodes = [self._node_of(msg, sent, sampled) for msg in replies]
        self.gone = set(sampled) - {
            n for n, m in zip(nodes, replies, strict=True) if not m.has_error()
        }
        return nodes

    @staticmethod
    def _node_of(msg: Message, sent: dict[str, int], sampled: list[int]) -> int:
        """The site a reply is about: the SuperLink answers for a node it found dead with
        an error of its own (from node 1); that error belongs to the node it was sent to."""
        node = msg.metadata.src_node_id
        if node not in sampled:
            node = sent.get(msg.metadata.reply_to_message_id, node)
        return node

    def check(self, node: int, site_id: str | None) -> str | None:
        """A site id belongs to the node that first presented it while that node is
        connected: another node claiming it is refused (None: fine). A site whose node went
        away, or failed to answer this round (a killed SuperNode is listed as connected
        until its heartbeat expires), may come back on a new node. Partition ids are not
        identities: sites with their own data all hold partition 0 of 1."""
        if site_id is None:
            return None
        if site_id in self.contested:
            nodes = sorted(self.contested[site_id])
            return f"site id {site_id!r} is claimed by nodes {nodes} in the same round"
        owner = self.owners.get(site_id)
        if owner is not None and owner != node:
            if owner in self.connected and owner not in self.gone:
                return f"site id {site_id!r} belongs to node {owner}, which is connected"
            log.info("site id %r moved from node %d to node %d", site_id, owner, node)
        self.owners[site_id] = node
        return None


def _claimed_site_id(msg: Message) -> str | None:
    """The site id a reply claims (None if it claims none or is malformed: validation
    refuses it)."""
    if msg.has_error():
        return None
    try:
        return wire.site_id_of(msg.content)
    except (wire.WireError, KeyError):
        return None


def _contested_claims(replies: list[Message]) -> dict[str, set[int]]:
    """Site ids claimed by more than one node in one round: all those replies are
    refused (without node authentication, which one is genuine cannot be told)."""
    claimed: dict[str, set[int]] = {}
    for msg in replies:
        site_id = _claimed_site_id(msg)
        if site_id is not None:
            claimed.setdefault(site_id, set()).add(msg.metadata.src_node_id)
    return {k: v for k, v in claimed.items() if len(v) > 1}
