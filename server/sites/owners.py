"""Which node presents which site id: a site id belongs to one node at a time.

A site id is bound to a node where the server knows which node holds it: the key registered
for it (``fedreplay pki register``) in a deployment, its partition in an in-process
simulation. Without a binding, a site id stays with the node that first presented it while
that node is connected and answers, and moves with a site that restarted on a new node; only
when two nodes claim an id that neither held before are both refused (which one is genuine
cannot be told), so an impersonator can deny a new site's first rounds, never take over or
quarantine a site it did not hold.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import TYPE_CHECKING

from common.fileio import atomic_write_text

if TYPE_CHECKING:  # `fedreplay pki` reads and writes the bindings without Flower or torch
    from flwr.app import Message

log = logging.getLogger("fedreplay.server")


REGISTERED, PARTITION = "its registered key", "its partition"  # what binds a site id
BINDINGS = "site_nodes.json"  # in the server's folder: site id -> its registered node id


def read_bindings(path: Path) -> dict[str, int]:
    """Site ids bound to the node ids their keys were registered as (``fedreplay pki
    register`` writes them); empty where none are (simulation, no node authentication)."""
    if not path.is_file():
        return {}
    try:
        return {str(k): int(v) for k, v in json.loads(path.read_text(encoding="utf-8")).items()}
    except (ValueError, TypeError, AttributeError) as exc:
        raise RuntimeError(f"the server's site bindings {path} are unreadable ({exc})") from None


def bind(path: Path, site_id: str, node_id: int) -> None:
    """Record that ``site_id`` is the site whose key was registered as ``node_id``."""
    bindings = read_bindings(path)
    bindings[site_id] = int(node_id)
    atomic_write_text(path, json.dumps(bindings, indent=1, sort_keys=True))


class SiteOwners:
    def __init__(self, bound: dict[str, int] | None = None) -> None:
        # with node authentication: site id -> the node its registered key is. A reply whose
        # site id is bound to another node, or from a bound node claiming another id, is
        # refused before the registry, a ledger check or the aggregate sees it
        self.bound = dict(bound or {})
        self.why: dict[str, str] = {}  # site id -> what bound it, where not a registered key
        self.owners: dict[str, int] = {}  # site id -> the node that presents it
        self.connected: set[int] = set()  # nodes connected when the round was configured
        self.gone: set[int] = set()  # sampled nodes without a usable reply this round
        self.contested: dict[str, set[int]] = {}  # site ids several nodes claim this round

    def bind_all(self, bindings: dict[str, int]) -> None:
        """Bind site ids to nodes known to hold them (a simulation's partitions); a binding
        from a registered key wins over one given here."""
        for site_id, node in bindings.items():
            if site_id not in self.bound:
                self.bound[site_id], self.why[site_id] = int(node), PARTITION

    def begin_round(
        self,
        replies: list[Message],
        claims: list[str | None],
        instructions: list[Message],
        sampled: list[int],
    ) -> list[int]:
        """The node each reply is about; notes the round's contested ids (``claims``: the
        site id each reply declares, None for none or a malformed one) and absent nodes."""
        self.contested = _contested_claims(replies, claims)
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
        """A site id belongs to its bound node (a registered key, a simulation's partition);
        an unbound one to the node that first presented it while that node is connected:
        another node claiming it is refused (None: fine), also when both claim it in the
        same round. Only when neither held it before are both refused. A site whose node
        went away, or failed to answer this round (a killed SuperNode is listed as connected
        until its heartbeat expires), may come back on a new node. Partition ids are not
        identities: sites with their own data all hold partition 0 of 1."""
        if site_id is None:
            return None
        if site_id in self.bound and self.bound[site_id] != node:
            return (
                f"site id {site_id!r} is bound to node {self.bound[site_id]} "
                f"({self.why.get(site_id, REGISTERED)}); node {node} claims it"
            )
        claimed = [s for s, n in self.bound.items() if n == node and s != site_id]
        if claimed:
            return (
                f"node {node} is bound to site {claimed[0]!r} "
                f"({self.why.get(claimed[0], REGISTERED)}), but claims {site_id!r}"
            )
        if site_id in self.bound:  # its own bound node: another's claim does not
            self.owners[site_id] = node  # contest it (that claim is refused above)
            return None
        owner = self.owners.get(site_id)
        held = owner is not None and owner in self.connected and owner not in self.gone
        if site_id in self.contested and not (held and owner in self.contested[site_id]):
            nodes = sorted(self.contested[site_id])
            return f"site id {site_id!r} is claimed by nodes {nodes} in the same round"
        if owner is not None and owner != node:
            if held:
                return f"site id {site_id!r} belongs to node {owner}, which is connected"
            log.info("site id %r moved from node %d to node %d", site_id, owner, node)
        self.owners[site_id] = node
        return None


def _contested_claims(replies: list[Message], claims: list[str | None]) -> dict[str, set[int]]:
    """Site ids claimed by more than one node in one round (SiteOwners.check refuses all
    of them unless one is the id's holder or bound node)."""
    claimed: dict[str, set[int]] = {}
    for msg, site_id in zip(replies, claims, strict=True):
        if site_id is not None:
            claimed.setdefault(site_id, set()).add(msg.metadata.src_node_id)
    return {k: v for k, v in claimed.items() if len(v) > 1}
