"""An in-process Grid: the ServerApp talks to ClientApps in the same process, without Ray.

For fast tests and debugging of the apps' logic (a whole small run in seconds). It is not
Flower's simulation engine: every node's ClientApp is called directly, one after another,
with a ``Context`` that persists per node across rounds, as Flower's does.

    grid = InProcessGrid(client_app, run_config, num_nodes=2)
    FederatedRun(cfg).run(grid)

``reply_hook(instruction, reply)`` may replace or drop (return None) a reply, to test
failed, missing or hostile sites (``instruction.metadata.dst_node_id`` is the site).

Site ids are bound to partitions, as node keys bind them in a deployment: the grid knows
which node holds which partition, so :meth:`site_bindings` tells the server, and a reply from
one node claiming another's site id is refused before any registry or aggregate sees it
(hostile sites are simulated here, by ``reply_hook``; Flower's simulation engine runs only
the honest ClientApp and does not tell the ServerApp which node holds which partition).

Privacy state is per site, not per run: sites spend from their lifetime ledgers under
``$FEDREPLAY_SITE_DIR`` whatever ``run_id`` is (default 1); give independent experiments
their own ``FEDREPLAY_SITE_DIR`` and ``FEDREPLAY_SERVER_DIR``.
"""

from __future__ import annotations

import copy
import itertools
from collections.abc import Callable, Iterable
from typing import Any

from flwr.app import ConfigRecord, Context, Message, RecordDict
from flwr.app.error import Error
from flwr.clientapp import ClientApp
from flwr.serverapp import Grid
from flwr.supercore.run import Run
from flwr.supercore.task_identity import TaskIdentity

ReplyHook = Callable[[Message, Message], Message | None]


class InProcessGrid(Grid):
    def __init__(
        self,
        client_app: ClientApp,
        run_config: dict[str, Any],
        *,
        num_nodes: int,
        node_configs: list[dict[str, Any]] | None = None,
        reply_hook: ReplyHook | None = None,
        run_id: int = 1,
        node_ids: list[int] | None = None,
    ) -> None:
        self.client_app = client_app
        self.reply_hook = reply_hook
        self._ids = itertools.count(1)
        # node i holds node_configs[i] (default: partition i); a restarted federation may
        # number the same sites otherwise
        self.node_ids = list(node_ids) if node_ids else [1000 + i for i in range(num_nodes)]
        if len(self.node_ids) != num_nodes:
            raise ValueError(f"{len(self.node_ids)} node ids for {num_nodes} nodes")
        configs = node_configs or [
            {"partition-id": i, "num-partitions": num_nodes} for i in range(num_nodes)
        ]
        self.contexts = {
            nid: Context(
                run_id=run_id,
                node_id=nid,
                node_config=cfg,
                state=RecordDict(),
                run_config=dict(run_config),
            )
            for nid, cfg in zip(self.node_ids, configs, strict=True)
        }
        self._run = Run.create_empty(run_id)
        self.sent: list[Message] = []  # every instruction, for tests that inspect traffic
        TaskIdentity.run_id, TaskIdentity.node_id, TaskIdentity.task_id = run_id, 0, 0

    def site_bindings(self) -> dict[str, int]:
        """{site id: the node holding it}, from each node's config (``site-id``, else
        ``site-<partition-id>``); an id two nodes' configs share is bound to neither."""
        from common.sitestate import site_id_for

        nodes: dict[str, list[int]] = {}
        for nid, context in self.contexts.items():
            nodes.setdefault(site_id_for(context.node_config), []).append(nid)
        return {site: held[0] for site, held in nodes.items() if len(held) == 1}

    def set_run(self, run: Run) -> None:
        self._run = run

    @property
    def run(self) -> Run:
        return self._run

    def create_message(
        self,
        content: RecordDict,
        message_type: str,
        dst_node_id: int,
        group_id: str,
        ttl: float | None = None,
    ) -> Message:
        return Message(
            content=content,
            message_type=message_type,
            dst_node_id=dst_node_id,
            group_id=group_id,
            ttl=ttl,
        )

    def get_node_ids(self) -> Iterable[int]:
        return list(self.node_ids)

    def push_messages(self, messages: Iterable[Message]) -> Iterable[str]:
        raise NotImplementedError("InProcessGrid only supports send_and_receive")

    def pull_messages(self, message_ids: Iterable[str]) -> Iterable[Message]:
        raise NotImplementedError("InProcessGrid only supports send_and_receive")

    def send_and_receive(
        self, messages: Iterable[Message], *, timeout: float | None = None
    ) -> Iterable[Message]:
        replies = []
        for msg in messages:
            # The SuperLink assigns message ids; Metadata has no public setter for it.
            msg.metadata.__dict__["_message_id"] = f"m{next(self._ids)}"
            self.sent.append(msg)
            node = msg.metadata.dst_node_id
            try:
                reply = self.client_app(_delivered(msg), self.contexts[node])
            except Exception as exc:  # a crashing ClientApp becomes an error reply
                reply = Message(Error(code=0, reason=f"{type(exc).__name__}: {exc}"), reply_to=msg)
            if self.reply_hook is not None:
                hooked = self.reply_hook(msg, reply)
                if hooked is None:
                    continue
                reply = hooked
            replies.append(reply)
        return replies


def _delivered(msg: Message) -> Message:
    """``msg`` as a site receives it: its own copy of the config records (a site's mod may
    change them, as SecAgg+'s does; on the wire every site gets its own), the arrays shared
    (read only)."""
    content = RecordDict(
        {
            name: copy.deepcopy(rec) if isinstance(rec, ConfigRecord) else rec
            for name, rec in msg.content.items()
        }
    )
    out = Message(
        content=content,
        dst_node_id=msg.metadata.dst_node_id,
        message_type=msg.metadata.message_type,
        group_id=msg.metadata.group_id,
    )
    out.metadata.__dict__["_message_id"] = msg.metadata.message_id
    return out
