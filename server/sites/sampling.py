"""Which sites train in a round when ``fed.fraction-train < 1``: chosen by site id, not node id.

Node ids are not identities: a restarted SuperNode, a restarted SuperLink or a resumed
simulation gives the same sites other node ids, in another order. Sampling node ids (as
Flower's ``sample_nodes`` does) would make a resumed run train other sites than the run it
continues, so a site could spend budget on a round the uninterrupted run would never have
given it. Here a round's sites are the first ones of the connected sites' ids ranked by

    sha256(sampling key | global round | site id)

with the run's sampling key: made by the server when the run starts, kept in the run's
checkpoint (a resume ranks the same way) and never sent to a site, so a site cannot pick an
id that puts itself first. The same sites connected in the same round are the same
sample, however their nodes are numbered.

The server learns which site a node holds from its accepted train replies; a node it has
not heard from yet (the run's first round, a resumed run, a restarted site) is asked with a
``query`` message, answered with the site's id and nothing else (common.protocol,
``SITE_QUERY``). A node that does not answer ranks last.

Privacy: the choice is not secret from the server and its run folder, and the sites'
reports count no amplification by sampling (client-level DP accounts with q = 1).
"""

from __future__ import annotations

import hashlib
import logging
import time
from collections.abc import Callable, Iterable, Mapping, Sequence

from flwr.app import Message, MessageType, RecordDict
from flwr.serverapp import Grid

from common import protocol, wire

log = logging.getLogger("fedreplay.server")


class SitesMissing(RuntimeError):
    """Fewer than fed.min-sites sites connected within fed.start-timeout."""


def wait_for_sites(
    grid: Grid,
    minimum: int,
    *,
    timeout: float,
    expected: Sequence[str] = (),
    identify: Callable[[list[int]], Mapping[int, str]] | None = None,
) -> None:
    """``minimum`` sites (fed.min-sites) connected within ``timeout`` seconds, else
    SitesMissing. A resumed run knows its sites (``expected``): the error then names those
    that did not come back, asking the connected nodes which site they hold (``identify``)."""
    deadline = time.monotonic() + timeout
    while len(list(grid.get_node_ids())) < minimum:
        if time.monotonic() > deadline:
            connected = list(grid.get_node_ids())
            message = (
                f"{len(connected)} of fed.min-sites={minimum} sites connected after "
                f"fed.start-timeout={timeout:g} s"
            )
            if expected:
                present = set(identify(connected).values()) if identify and connected else set()
                missing = sorted(set(expected) - present)
                message += (
                    f"; missing: {', '.join(missing) or 'none'} (the run's "
                    f"sites: {', '.join(sorted(expected))}; connected: "
                    f"{', '.join(sorted(present)) or 'none'})"
                )
            raise SitesMissing(message)
        time.sleep(1.0)


def ranked(site_ids: Iterable[str], *, key: str, server_round: int) -> list[str]:
    """``site_ids`` in the order a round samples them (the first k are the round's sites)."""

    def rank(site_id: str) -> bytes:
        return hashlib.sha256(f"{key}\x00{server_round}\x00{site_id}".encode()).digest()

    return sorted(set(site_ids), key=rank)


QUERY_TIMEOUT = 300.0  # seconds a site query waits (fed.round-timeout when set)


class SiteSampler:
    def __init__(self, key: str = "", *, query_timeout: float = QUERY_TIMEOUT) -> None:
        self.key = key  # the run's sampling key (server.run.checkpoint keeps it)
        self.query_timeout = query_timeout
        self.site_of: dict[int, str] = {}  # node -> the site id it presented

    def learn(self, node: int, site_id: str) -> None:
        """``node`` presented ``site_id`` in an accepted reply."""
        self.site_of[node] = site_id

    def choose(
        self, grid: Grid, nodes: Sequence[int], size: int, *, server_round: int
    ) -> list[int]:
        """``size`` of the connected ``nodes`` for global round ``server_round``."""
        if size >= len(nodes):
            return list(nodes)
        if not self.key:
            raise ValueError("the run's sampling key is not set")
        self._ask(grid, [n for n in nodes if n not in self.site_of])
        known = [self.site_of[n] for n in nodes if n in self.site_of]
        order = {s: i for i, s in enumerate(ranked(known, key=self.key, server_round=server_round))}
        last = len(order)
        chosen = sorted(nodes, key=lambda n: (order.get(self.site_of.get(n, ""), last), n))
        return chosen[:size]

    def identify(self, grid: Grid, nodes: list[int]) -> dict[int, str]:
        """The site id each of ``nodes`` holds (asked once; a node that does not say is
        left out)."""
        self._ask(grid, [n for n in nodes if n not in self.site_of])
        return {n: self.site_of[n] for n in nodes if n in self.site_of}

    def _ask(self, grid: Grid, nodes: list[int]) -> None:
        """Ask ``nodes`` which site they hold (a query message: its reply is the site id)."""
        if not nodes:
            return
        messages = [
            Message(content=RecordDict(), message_type=MessageType.QUERY, dst_node_id=n)
            for n in nodes
        ]
        sent = {}
        for reply in grid.send_and_receive(messages, timeout=self.query_timeout):
            node = reply.metadata.src_node_id
            if reply.has_error():
                log.info("node %d did not say which site it holds: %s", node, reply.error.reason)
                continue
            try:
                wire.check_message(reply.content, protocol.SITE_REPLY)
                site_id = wire.site_id_of(reply.content)
            except (wire.WireError, KeyError) as exc:
                log.warning("node %d answered the site query wrongly: %s", node, exc)
                continue
            if site_id is not None and node in nodes:
                sent[node] = site_id
        self.site_of.update(sent)
        log.info("asked %d nodes which site they hold: %d answered", len(nodes), len(sent))
