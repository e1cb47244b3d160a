"""The ClientApp: a thin edge that turns Flower messages into calls of :class:`client.site.Site`.

What stays at the site lives in ``context.state`` (per node and run, persisted across
rounds): the critic (``critic``) and the replay payload of the current task (``replay``,
``replay-meta``). What leaves is exactly the wire format of :mod:`common.wire`.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable

from flwr.app import ArrayRecord, Context, Message, RecordDict
from flwr.app.error import Error
from flwr.clientapp import ClientApp
from flwr.common.constant import ErrorCode

from client.site import Site, SiteIdentity, apply_node_config
from common import egress, wire
from common.config import ExperimentConfig, load_config

log = logging.getLogger("fedreplay.client")
app = ClientApp()

CRITIC = "critic"


def _guarded(
    handler: Callable[[Message, Context], Message],
) -> Callable[[Message, Context], Message]:
    """A failure at the site is logged here in full and answered with an error reply that
    names the error without local paths (common.egress.public_reason)."""

    @functools.wraps(handler)
    def wrapper(msg: Message, context: Context) -> Message:
        try:
            return handler(msg, context)
        except Exception as exc:
            log.exception("%s failed at this site", handler.__name__)
            reason = egress.public_reason(exc)
            return Message(
                Error(code=ErrorCode.CLIENT_APP_RAISED_EXCEPTION, reason=reason), reply_to=msg
            )

    return wrapper


def _site(context: Context) -> Site:
    cfg: ExperimentConfig = apply_node_config(
        load_config(dict(context.run_config)), context.node_config
    )
    identity = SiteIdentity.from_node_config(context.node_config, cfg.fed.num_sites)
    return Site(cfg, identity)


@app.train()
@_guarded
def train(msg: Message, context: Context) -> Message:
    """One round of local training on the current task with generative replay."""
    site = _site(context)
    config = msg.content.config_records[wire.CONFIG]
    task, seed = wire.config_int(config, "task"), wire.config_int(config, "seed")
    bytes_down = wire.record_bytes(msg.content)

    wire.load_scholar(msg.content.array_records[wire.SCHOLAR], site.solver, site.generator)
    if CRITIC in context.state.array_records:
        site.load_critic_state(wire.split_record(context.state.array_records[CRITIC])["critic"])
    if wire.REPLAY in msg.content.array_records:  # once per task: cache it at the site
        context.state[wire.REPLAY] = msg.content.array_records[wire.REPLAY]
        context.state[wire.REPLAY_META] = msg.content.config_records[wire.REPLAY_META]
    payload = None
    if wire.REPLAY in context.state.array_records:
        payload = wire.payload_from_records(
            context.state.array_records[wire.REPLAY], context.state.config_records[wire.REPLAY_META]
        )

    metrics = site.train(
        task,
        payload=payload,
        iterations=wire.config_int(config, "iterations"),
        seed=seed + 7919 * site.identity.partition_id,
        run_id=context.run_id,
        server_round=wire.config_int(config, "server-round"),
    )

    critic = site.critic_state()
    if critic is not None:
        context.state[CRITIC] = ArrayRecord(
            {f"critic.{k}": wire.Array(v.numpy().copy()) for k, v in critic.items()}  # type: ignore[misc]
        )
    scholar = wire.scholar_record(site.solver, site.generator)
    metrics.update({"bytes-down": float(bytes_down), "bytes-up": float(wire.record_bytes(scholar))})
    metrics["partition-id"] = float(site.identity.partition_id)
    content = RecordDict(
        {
            wire.SCHOLAR: scholar,
            wire.METRICS: wire.metrics_record(metrics),
            wire.SITE: wire.site_record(site.identity.site_id),
        }
    )
    return egress.logged(Message(content=content, reply_to=msg), context)


@app.evaluate()
@_guarded
def evaluate(msg: Message, context: Context) -> Message:
    """Federated evaluation: the global solver on this site's own test data of seen tasks."""
    site = _site(context)
    config = msg.content.config_records[wire.CONFIG]
    wire.load_scholar(msg.content.array_records[wire.SCHOLAR], site.solver, site.generator)
    metrics = site.evaluate(wire.config_int(config, "task"))
    content = RecordDict({wire.METRICS: wire.metrics_record(metrics)})
    return egress.logged(Message(content=content, reply_to=msg), context)
