"""A site's side of secure aggregation (``fed.aggregation = "secure"``): its release leaves
masked by Flower's SecAgg+ (``secaggplus_mod``), so the server learns only the sum over sites
(:mod:`server.run.secure_aggregation` has the protocol and what it guarantees).

:func:`secure_aggregation_mod` is the ClientApp's mod: a train instruction that carries
the SecAgg+ record goes through Flower's mod (which answers three of the four stages itself
and calls the site's train handler in the fourth); any other message passes through
untouched. What the mod sends is checked against the declared replies
(:data:`common.protocol.SECURE_TRAIN_REPLY`, :data:`~common.protocol.SECURE_STAGE_REPLY`)
and logged in the site's egress log as it leaves: masked, never the release itself.

The train handler, asked under SecAgg+, answers with :func:`masked_reply`: the release as
the one array (every value clipped to the protocol's range before it is masked; zeros when
the site sits the task out, so its share of the sum is nothing), weight 1 (no count leaves),
its metrics and site id. A run that is not a secure-aggregation run is refused.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

import numpy as np
from flwr.app import Context, Message, RecordDict
from flwr.app.error import Error
from flwr.app.message_type import MessageType
from flwr.client.mod import secaggplus_mod
from flwr.clientapp.typing import ClientAppCallable
from flwr.common.secure_aggregation.secaggplus_constants import RECORD_KEY_CONFIGS, Key, Stage

from common import egress, protocol, wire
from common.config import ExperimentConfig

log = logging.getLogger("fedreplay.client")
assert protocol.SECAGG.name == RECORD_KEY_CONFIGS  # (declared once, in the protocol)


class _HandlerFailed(Exception):
    def __init__(self, reply: Message) -> None:
        super().__init__(reply.error.reason)
        self.reply = reply


def requested(content: RecordDict) -> bool:
    """The instruction is a stage of SecAgg+."""
    return protocol.SECAGG.name in content.config_records


def secure_aggregation_mod(
    noise_shares: Callable[[Context], int],
) -> Callable[[Message, Context, ClientAppCallable], Message]:
    """The mod; ``noise_shares(context)``: of how many sites' noise this site's release
    is a share (its policy's, :meth:`client.policy.SitePolicy.noise_shares`). A server that
    sets up a sum of fewer sites than that (its threshold: the fewest releases an unmasked
    sum may hold) is refused at the first stage, before any record is read."""

    def mod(msg: Message, context: Context, call_next: ClientAppCallable) -> Message:
        if msg.metadata.message_type != MessageType.TRAIN or not requested(msg.content):
            return call_next(msg, context)
        refused = _too_few(msg, noise_shares, context)
        if refused is not None:
            return Message(Error(code=0, reason=refused), reply_to=msg)
        return _secure(msg, context, call_next)

    return mod


def _too_few(msg: Message, noise_shares: Callable[[Context], int], context: Context) -> str | None:
    configs = msg.content.config_records[protocol.SECAGG.name]
    if configs.get(Key.STAGE) != Stage.SETUP:
        return None
    need = noise_shares(context)
    threshold, sites = configs.get(Key.THRESHOLD), configs.get(Key.SAMPLE_NUMBER)
    if not (isinstance(threshold, int) and isinstance(sites, int)) or min(threshold, sites) < need:
        return (
            f"the secure sum's threshold is {threshold!r} of {sites!r} sites; this site's release "
            f"carries 1/{need} of its noise and leaves only in a sum of at least {need}"
        )
    return None


def _secure(msg: Message, context: Context, call_next: ClientAppCallable) -> Message:

    def handler(m: Message, c: Context) -> Message:
        out = call_next(m, c)
        if out.has_error():  # the site's own failure, passed on as it is
            raise _HandlerFailed(out)
        return out

    try:
        reply = secaggplus_mod(msg, context, handler)
    except _HandlerFailed as failed:
        return failed.reply
    for name in wire.FITRES_RECORDS:  # (Flower's mod leaves them emptied; none is sent)
        if name in reply.content:
            del reply.content[name]
    spec = protocol.reply_spec(MessageType.TRAIN, set(reply.content))
    assert spec is not None
    wire.check_message(reply.content, spec)  # nothing undeclared leaves the site
    return egress.logged(reply, context)


def masked_reply(
    msg: Message,
    cfg: ExperimentConfig,
    release: np.ndarray | None,
    shape: tuple[int, int],
    records: RecordDict,
) -> Message:
    """The train handler's answer under SecAgg+ (for Flower's mod to mask, not sent as it
    is): ``release`` (None: zeros of ``shape``) as the one array, weight 1, and ``records``
    (the reply's metrics and site id)."""
    if not cfg.secure_aggregation:
        raise PermissionError(
            "the server asked for a SecAgg+ exchange in a run whose fed.aggregation is "
            f"{cfg.fed.aggregation!r}: this site sends its release only as the run declares"
        )
    values = np.zeros(shape, np.float32) if release is None else np.asarray(release, np.float32)
    if values.shape != tuple(shape):
        raise ValueError(f"release of shape {list(values.shape)}, expected {list(shape)}")
    if np.abs(values).max(initial=0.0) > protocol.SECURE_CLIP:  # (over 2^16 records a task)
        log.warning("release values beyond the secure sum's range clipped to +-2^16")
    values = np.clip(values, -protocol.SECURE_CLIP, protocol.SECURE_CLIP)
    return Message(content=RecordDict({**wire.fitres_records([values]), **records}), reply_to=msg)
