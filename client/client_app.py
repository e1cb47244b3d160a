"""The ClientApp: a thin edge that turns Flower messages into calls of :class:`client.site.Site`.

What stays at the site between rounds lives on the site's own disk, keyed by site id and
run key (:mod:`client.site_store`): the critic, the replay payload of the current task and
the last reply. What leaves is exactly the wire format of :mod:`common.wire`.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable

from flwr.app import ArrayRecord, Context, Message, RecordDict
from flwr.app.error import Error
from flwr.clientapp import ClientApp
from flwr.common.constant import ErrorCode

from client import secure_aggregation, site_log
from client.policy import SitePolicy, site_policy
from client.site import Site, SiteIdentity, apply_node_config
from client.site_store import CachedReply, SiteStore, instruction_digest
from common import egress, protocol, wire, wire_packed
from common.config import ExperimentConfig, load_config
from common.models.dgm import DGMGenerator
from common.privacy.ledger_file import has_spent
from common.privacy.session import privacy_root
from common.sitestate import site_dir, site_id_for

log = logging.getLogger("fedreplay.client")
# fed.aggregation = "secure": a train round's four SecAgg+ stages pass Flower's mod
app = ClientApp(mods=[secure_aggregation.secure_aggregation_mod(lambda c: _noise_shares(c))])


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
            _log_failure(context, handler.__name__, reason)
            return Message(
                Error(code=ErrorCode.CLIENT_APP_RAISED_EXCEPTION, reason=reason), reply_to=msg
            )

    return wrapper


def _log_failure(context: Context, what: str, reason: str) -> None:
    """The site's own line for a failed instruction (never fails itself)."""
    try:
        site_log.write(site_dir(), site_id_for(context.node_config), f"{what} failed: {reason}")
    except Exception:  # a bad site id or an unwritable folder: the reply still goes out
        log.exception("could not write the site's log line")


def _log_train(
    site: Site, server_round: int, task: int, metrics: dict[str, float], *, again: bool
) -> None:
    """The site's own line for a train instruction it answered (client.site_log)."""
    line = site_log.train_line(site.identity.site_id, server_round, task, metrics, again=again)
    site_log.write(site_dir(), site.identity.site_id, line)


def _identity(context: Context) -> tuple[ExperimentConfig, SiteIdentity]:
    cfg: ExperimentConfig = apply_node_config(
        load_config(dict(context.run_config)), context.node_config
    )
    return cfg, SiteIdentity.from_node_config(context.node_config, cfg.fed.num_sites)


def _policy(context: Context) -> tuple[ExperimentConfig, SiteIdentity, SitePolicy]:
    cfg, identity = _identity(context)
    policy = site_policy(
        cfg,
        context.node_config,
        site_dir=site_dir(),
        has_spent=has_spent(privacy_root(), identity.site_id),
    )
    return cfg, identity, policy


def _noise_shares(context: Context) -> int:
    """Of how many sites' noise this site's release is a share (its policy's)."""
    cfg, _, policy = _policy(context)
    return policy.noise_shares(cfg)


def _site(context: Context) -> Site:
    """The site, once the server's instruction has passed this site's own privacy policy
    (:mod:`client.policy`): a run asking for less privacy is refused before any record is
    read, with an error reply naming the policy and the key."""
    cfg, identity, policy = _policy(context)
    policy.check(cfg)
    return Site(cfg, identity, noise_shares=policy.noise_shares(cfg))


@app.train()
@_guarded
def train(msg: Message, context: Context) -> Message:
    """One round of local training on the current task with generative replay.

    What the site needs between rounds (critic, replay of the task, its last reply) is on
    its own disk (:class:`client.site_store.SiteStore`), keyed by site id and run key, so a
    restarted site or a resumed run goes on where it stopped. An instruction answered
    before (same run, round, config and global arrays) gets the same reply again, without
    training or spending privacy budget a second time."""
    site = _site(context)
    secure = secure_aggregation.requested(msg.content)  # a stage of SecAgg+
    if site.cfg.secure_aggregation and not secure:
        raise PermissionError(
            "this run declares fed.aggregation = 'secure': the site sends its release only "
            "masked in a SecAgg+ sum, and this instruction is not one; nothing trained or sent"
        )
    config = msg.content.config_records[wire.CONFIG]
    wire.check_input_shape(config, site.stream.shape, data=site.cfg.data.name)
    task, seed = wire.config_int(config, "task"), wire.config_int(config, "seed")
    server_round = wire.config_int(config, "server-round")
    run_key = wire.config_str(config, wire.RUN_KEY)
    store = SiteStore(site_dir(), site_id=site.identity.site_id, run_key=run_key)
    scholar_in = _whole_scholar(msg, store, site)  # DGM: may come packed
    # the instruction as a whole, however it travelled: a resumed server sends whole what
    # it had sent packed, and must get the same reply
    plain = {k: v for k, v in config.items() if k != wire_packed.GENERATOR_BASE}
    digest = instruction_digest(plain, wire.numpy_arrays(scholar_in), run_key=run_key)
    cached = store.reply_for(digest)
    if cached is not None:
        log.info("round %d: answered before; sending the same reply again", server_round)
        _log_train(site, server_round, task, cached.metrics, again=True)
        return _reply(msg, context, site, wire.array_record(cached.scholar), cached.metrics, task)
    bytes_down = wire.record_bytes(msg.content)

    wire.load_scholar(scholar_in, site.solver, site.shared_generator, adopt_shapes=True)
    critic = store.critic()
    if critic is not None:
        site.load_critic_state(critic)
    if wire.has_replay(msg.content):  # once per task: keep it at the site
        store.save_replay(wire.payload_of(msg.content))
    memory = store.memory()  # (a regularisation method's: EWC's Fisher information)
    metrics = site.train(
        task,
        payload=store.replay(),
        iterations=wire.config_int(config, "iterations"),
        seed=seed + 7919 * site.identity.partition_id,
        run_id=run_key,
        server_round=server_round,
        memory=memory,
    )
    if memory:
        store.save_memory(memory)

    critic = site.critic_state()
    if critic is not None:
        store.save_critic(critic)
    scholar = wire.scholar_record(site.solver, site.shared_generator, packed=True)  # DGM: free
    if site.release is not None:  # generator.kind = "embedding": its release, not its generator
        scholar = ArrayRecord({**scholar, **wire.embedding_arrays(site.release)})
    up = wire.record_bytes(scholar)
    if secure:  # the release alone, masked: 8 bytes a value
        up = 8 * (site.release.numel() if site.release is not None else 0)
    metrics.update({"bytes-down": float(bytes_down), "bytes-up": float(up)})
    metrics["partition-id"] = float(site.identity.partition_id)
    # before it is sent: a site killed after sending answers a repeated instruction the same
    store.save_reply(CachedReply(server_round, digest, wire.numpy_arrays(scholar), metrics))
    _log_train(site, server_round, task, metrics, again=False)
    return _reply(msg, context, site, scholar, metrics, task)


def _whole_scholar(msg: Message, store: SiteStore, site: Site) -> ArrayRecord:
    """The instruction's global scholar, whole. DGM within a task: the server may send only
    the generator's free elements (``generator-base`` in the config: the digest of the
    frozen ones), filled in from the whole generator this site keeps from earlier in the
    task; a whole DGM generator is kept for that."""
    record = wire.scholar_of(msg.content)
    config = msg.content.config_records[wire.CONFIG]
    if wire_packed.GENERATOR_BASE in config:
        if site.generator is None:
            raise wire.WireError("a packed generator was sent to a site of a method without one")
        base = store.generator_base()
        return wire_packed.unpack_with_base(
            record,
            None if base is None else wire.array_record(base),
            site.generator,
            digest=wire.config_str(config, wire_packed.GENERATOR_BASE),
        )
    if isinstance(site.generator, DGMGenerator):
        store.save_generator_base(
            {k: v for k, v in wire.numpy_arrays(record).items() if protocol.part_of(k) == wire.GEN}
        )
    return record


def _reply(
    msg: Message,
    context: Context,
    site: Site,
    scholar: ArrayRecord,
    metrics: dict[str, float],
    task: int,
) -> Message:
    records = RecordDict(
        {
            wire.METRICS: wire.metrics_record(metrics),
            wire.SITE: wire.site_record(site.identity.site_id),
        }
    )
    if secure_aggregation.requested(msg.content):  # SecAgg+ masks the release; its mod logs
        _, release = wire.without_embedding(scholar)  # what leaves (client.secure_aggregation)
        return secure_aggregation.masked_reply(
            msg, site.cfg, release, site.release_shape(task), records
        )
    content = RecordDict({**wire.part_records(scholar), **records})
    wire.check_message(content, protocol.TRAIN_REPLY)  # nothing undeclared leaves the site
    return egress.logged(Message(content=content, reply_to=msg), context)


@app.evaluate()
@_guarded
def evaluate(msg: Message, context: Context) -> Message:
    """Federated evaluation: the global solver on this site's own test data of seen tasks."""
    site = _site(context)
    config = msg.content.config_records[wire.CONFIG]
    wire.check_input_shape(config, site.stream.shape, data=site.cfg.data.name)
    wire.load_scholar(wire.scholar_of(msg.content), site.solver, None)  # the solver only
    metrics = site.evaluate(wire.config_int(config, "task"))
    content = RecordDict({wire.METRICS: wire.metrics_record(metrics)})
    wire.check_message(content, protocol.EVALUATE_REPLY)
    return egress.logged(Message(content=content, reply_to=msg), context)


@app.query()
@_guarded
def query(msg: Message, context: Context) -> Message:
    """Which site this node holds, so that the server samples sites by id (a resumed run
    trains the sites the run it continues would have): the site id and nothing else."""
    _, identity = _identity(context)  # no data is read
    content = RecordDict({wire.SITE: wire.site_record(identity.site_id)})
    wire.check_message(content, protocol.SITE_REPLY)
    return egress.logged(Message(content=content, reply_to=msg), context)
