"""Secure aggregation of the sites' releases (``fed.aggregation = "secure"``): the server
learns the sum over sites, never one site's release. Flower's SecAgg+ protocol
(:class:`flwr.server.workflow.SecAggPlusWorkflow` here, ``secaggplus_mod`` at the site,
:mod:`client.secure_aggregation`) runs around the round's train instructions.

:class:`SecureAggregationGrid` wraps the run's grid: every batch of train instructions it
is asked to send becomes one SecAgg+ exchange of four stages (each site makes two key pairs;
they exchange Shamir shares of a mask seed and of a key, encrypted site to site; each site
trains as instructed and sends its release masked, as integers mod 2^40; the sites still
there send the shares that remove the masks). The server unmasks the sum alone and hands it
to ``on_sum``; the strategy then gets the sites' replies without any release (their metrics
and site ids only). Every reply of every stage is checked before the workflow reads it
(its keys and types; a masked release of the release's shape, in the ring); a site that
fails or is refused drops out: before the collect stage it is left out of the round, from
it on its pairwise masks are rebuilt from the others' shares (threshold: a majority of the
sampled sites) and the sum is of the sites that sent. Fewer sites than the threshold, or
shares that do not combine: the exchange halts, the round's replies become failures naming
why, nothing is summed, and the server goes on.

What bounds a hostile site here: nothing. The server cannot see a site's release, so no
per-site bound (norm cap, direction consensus, trimmed mean) can apply; an honest site
clips each value to [-2^16, 2^16] before it is masked (:data:`common.protocol.SECURE_CLIP`,
far above any honest value, so an honest sum cannot overflow), but a hostile site's masked
integers can encode any value in the ring. Secure aggregation keeps the releases from the
server; it does not keep the sum from a site (docs/privacy.md). The masks' pseudo-random
generator is Flower's: ``numpy.random.RandomState`` seeded with 32 bits of each key.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any, cast

import numpy as np
from flwr.app import ConfigRecord, Message, RecordDict
from flwr.app.error import Error
from flwr.common import (
    FitIns,
    FitRes,
    Parameters,
    bytes_to_ndarray,
    parameters_to_ndarrays,
)
from flwr.common.secure_aggregation.secaggplus_constants import RECORD_KEY_CONFIGS, Key, Stage
from flwr.compat.common import recorddict_compat as compat
from flwr.server.compat.legacy_context import LegacyContext
from flwr.server.workflow import SecAggPlusWorkflow
from flwr.server.workflow.constant import MAIN_CONFIGS_RECORD, MAIN_PARAMS_RECORD
from flwr.server.workflow.constant import Key as WorkflowKey
from flwr.server.workflow.secure_aggregation.secaggplus_workflow import WorkflowState
from flwr.serverapp import Grid

from common import protocol, wire
from server.run.grid_wrapper import GridWrapper

log = logging.getLogger("fedreplay.server")

SECAGG_RECORD = RECORD_KEY_CONFIGS  # the protocol's record in every stage's message


OnSum = Callable[[np.ndarray, int], None]  # (the sum over the sites that sent, how many)


@dataclass
class _Proxy:  # what the workflow reads of a ClientProxy: the node it stands for
    node_id: int


class _Manager:
    def __init__(self, n: int) -> None:
        self.n = n

    def num_available(self) -> int:
        return self.n


@dataclass
class _Strategy:
    """The workflow's view of a strategy: the sites to instruct, and where the sum goes."""

    nodes: list[int]
    total: np.ndarray | None = None  # the sum over the sites that sent
    summed: int = 0  # how many sent

    def configure_fit(self, *_: Any) -> list[tuple[_Proxy, Any]]:
        empty = FitIns(Parameters([], "numpy.ndarray"), {})  # (the instructions are ours)
        return [(_Proxy(n), empty) for n in self.nodes]

    def aggregate_fit(
        self, _round: int, results: list[tuple[_Proxy, FitRes]], _failures: list[Any]
    ) -> tuple[None, dict[str, Any]]:
        # the workflow hands the weighted mean (every site weighs 1) on each result
        if results:
            (mean,) = parameters_to_ndarrays(results[0][1].parameters)
            self.summed = len(results)
            self.total = np.asarray(mean, dtype=np.float64) * self.summed
        return None, {}


class _Context:
    """The parts of a LegacyContext the workflow's stages read."""

    def __init__(self, strategy: _Strategy, server_round: int) -> None:
        self.strategy = strategy
        self.client_manager = _Manager(len(strategy.nodes))
        self.state = RecordDict(
            {
                MAIN_CONFIGS_RECORD: ConfigRecord({WorkflowKey.CURRENT_ROUND: server_round}),
                MAIN_PARAMS_RECORD: compat.parameters_to_arrayrecord(
                    Parameters(tensors=[], tensor_type="numpy.ndarray"), keep_input=True
                ),
            }
        )


class _Workflow(SecAggPlusWorkflow):
    """SecAgg+ with the round's own instructions in its collect stage."""

    def exchange(
        self, grid: _StageGrid, instructions: list[Message], server_round: int
    ) -> tuple[np.ndarray, int] | None:
        """The sum of the sites' releases and how many sent (None: the exchange halted)."""
        nodes = [m.metadata.dst_node_id for m in instructions]
        strategy = _Strategy(nodes)
        context = cast(LegacyContext, _Context(strategy, server_round))
        state = WorkflowState()
        if not self.setup_stage(grid, context, state):
            return None
        _forget_gone(state)
        state.nid_to_fitins = {m.metadata.dst_node_id: m.content for m in instructions}
        if not self.share_keys_stage(grid, context, state):
            return None
        _forget_gone(state)
        for stage in (self.collect_masked_vectors_stage, self.unmask_stage):
            if not stage(grid, context, state):
                return None
        return None if strategy.total is None else (strategy.total, strategy.summed)


def _forget_gone(state: WorkflowState) -> None:
    """Sites that failed before the collect stage made no masks with the others and hold
    no shares of theirs: out of the round, as if never sampled (Flower's workflow would
    wait for their shares at the end and halt). Dropouts from the collect stage on stay
    the workflow's: their masks are rebuilt from the others' shares."""
    live = set(state.active_node_ids)
    state.sampled_node_ids = live
    state.nid_to_neighbours = {
        n: hood & live for n, hood in state.nid_to_neighbours.items() if n in live
    }


class _StageGrid(GridWrapper):
    """The grid as the workflow sees it: each stage's errors kept for the round's record,
    the collect stage's replies kept (our metrics and site id) and completed with the
    legacy records the workflow reads (every site weighs 1: no count leaves a site)."""

    def __init__(self, grid: Grid, timeout: float | None, shape: tuple[int, ...]) -> None:
        super().__init__(grid)
        self.timeout, self.shape = timeout, shape  # (shape: a site's release)
        self.errors: dict[int, Message] = {}
        self.collected: list[Message] = []

    def send_and_receive(
        self, messages: Iterable[Message], *, timeout: float | None = None
    ) -> Iterable[Message]:
        messages = list(messages)
        stage = _stage_of(messages)  # (before sending: an in-process site's mod pops it)
        by_node = {m.metadata.dst_node_id: m for m in messages}
        replies = []
        for reply in self.grid.send_and_receive(messages, timeout=self.timeout):
            node = reply.metadata.src_node_id
            wrong = None if reply.has_error() else _malformed(stage, reply, self.shape)
            if wrong is not None and node in by_node:  # untrusted: as if it dropped out
                log.warning("SecAgg+ %s: node %d's reply refused: %s", stage, node, wrong)
                reply = _failed(by_node[node], f"rejected: {wrong}")
            elif wrong is not None:
                continue  # (a reply from a node not asked: nothing of it is read)
            replies.append(reply)
            if reply.has_error():
                self.errors[reply.metadata.src_node_id] = reply
            elif stage == Stage.COLLECT_MASKED_VECTORS:
                self.collected.append(reply)
                for name, record in wire.fitres_records([]).items():
                    reply.content[name] = record
        return replies


_EXPECTED: dict[str, dict[str, Any]] = {  # each stage's reply: key -> bytes | [bytes] | [int]
    Stage.SETUP: {Key.PUBLIC_KEY_1: bytes, Key.PUBLIC_KEY_2: bytes},
    Stage.SHARE_KEYS: {Key.DESTINATION_LIST: [int], Key.CIPHERTEXT_LIST: [bytes]},
    Stage.COLLECT_MASKED_VECTORS: {Key.MASKED_PARAMETERS: [bytes]},
    Stage.UNMASK: {Key.NODE_ID_LIST: [int], Key.SHARE_LIST: [bytes]},
}


def _malformed(stage: str, reply: Message, shape: tuple[int, ...]) -> str | None:
    """What is wrong with a site's reply to a SecAgg+ stage (None: the workflow may read
    it): the keys and types the stage expects, equal list lengths, and a masked release of
    the release's shape, integers in the ring."""
    if SECAGG_RECORD not in reply.content.config_records:
        return "no SecAgg+ record"
    record = reply.content.config_records[SECAGG_RECORD]
    for key, kind in _EXPECTED.get(stage, {}).items():
        value = record.get(key)
        if isinstance(kind, list):
            if not isinstance(value, list) or not all(type(v) is kind[0] for v in value):
                return f"{key} is not a list of {kind[0].__name__}"
        elif type(value) is not kind:
            return f"{key} is not {kind.__name__}"
    lengths = {
        len(cast(list, record[k])) for k, t in _EXPECTED[stage].items() if isinstance(t, list)
    }
    if stage in (Stage.SHARE_KEYS, Stage.UNMASK) and len(lengths) > 1:
        return "lists of different lengths"
    if stage == Stage.COLLECT_MASKED_VECTORS:
        return _masked_problem(cast(list[bytes], record[Key.MASKED_PARAMETERS]), shape)
    return None


def _masked_problem(parts: list[bytes], shape: tuple[int, ...]) -> str | None:
    try:
        arrays = [bytes_to_ndarray(b) for b in parts]
    except Exception as exc:  # (untrusted bytes)
        return f"masked release unreadable ({type(exc).__name__})"
    want = [(1,), tuple(shape)]  # (the weight, then the release)
    got = [tuple(a.shape) for a in arrays]
    if got != want or any(a.dtype != np.int64 for a in arrays):
        kinds = [str(a.dtype) for a in arrays]
        return f"masked release of shapes {got} ({kinds}), expected {want} (int64)"
    if any(int(a.min()) < 0 or int(a.max()) >= protocol.SECURE_MODULUS for a in arrays):
        return "masked release outside the ring"
    return None


def _stage_of(messages: list[Message]) -> str:
    stages = {str(m.content.config_records[SECAGG_RECORD][Key.STAGE]) for m in messages}
    return stages.pop() if len(stages) == 1 else ""


class SecureAggregationGrid(GridWrapper):
    """``grid`` with every batch of train instructions sent under SecAgg+ (module doc);
    everything else passes through."""

    def __init__(
        self,
        grid: Grid,
        *,
        on_sum: OnSum,
        shape: Callable[[], tuple[int, ...] | None],
        timeout: float | None = None,
    ) -> None:
        super().__init__(grid)
        self.on_sum, self.shape, self.timeout = on_sum, shape, timeout

    def send_and_receive(
        self, messages: Iterable[Message], *, timeout: float | None = None
    ) -> Iterable[Message]:
        messages = list(messages)
        if not messages or any(m.metadata.message_type != "train" for m in messages):
            return self.grid.send_and_receive(messages, timeout=timeout)
        return list(self._secure_round(messages, timeout))

    def _secure_round(self, messages: list[Message], timeout: float | None) -> Iterator[Message]:
        n = len(messages)
        server_round = _round_of(messages[0])
        if n < 3:
            reason = f"secure aggregation needs at least 3 sites in a round; {n} were sampled"
            yield from (_failed(m, reason) for m in messages)
            return
        workflow = _Workflow(
            num_shares=n,
            reconstruction_threshold=protocol.secure_threshold(n),
            max_weight=1.0,
            clipping_range=protocol.SECURE_CLIP,
            quantization_range=protocol.SECURE_LEVELS,
            modulus_range=protocol.SECURE_MODULUS,
            timeout=timeout if timeout is not None else self.timeout,
        )
        shape = self.shape()
        if shape is None:
            raise RuntimeError("a secure round of a task whose release shape is not set")
        stages = _StageGrid(self.grid, timeout if timeout is not None else self.timeout, shape)
        failure = ""
        try:
            result = workflow.exchange(stages, messages, server_round)
        except Exception as exc:  # a site's shares that do not combine, say: no sum, no crash
            log.exception("round %d: the secure sum failed", server_round)
            result, failure = None, f"{type(exc).__name__}: {exc}"[:300]
        answered = {r.metadata.src_node_id for r in stages.collected}
        for node, error in stages.errors.items():
            if node not in answered:
                yield error  # (a site that dropped out: its own error says why)
        if result is None:
            reason = (
                f"secure aggregation halted: {len(answered)} of {n} sites sent a masked "
                f"release, at least {protocol.secure_threshold(n)} must send and unmask"
                + (f" ({failure})" if failure else "")
            )
            log.error("round %d: %s", server_round, reason)
            by_node = {m.metadata.dst_node_id: m for m in messages}
            for reply in stages.collected:
                yield _failed(by_node[reply.metadata.src_node_id], reason)
            return
        total, summed = result
        log.info("round %d: secure sum of %d sites' releases unmasked", server_round, summed)
        self.on_sum(total, summed)
        for reply in stages.collected:
            yield _plain(reply)


def _round_of(message: Message) -> int:
    config = message.content.config_records.get(wire.CONFIG)
    return int(cast(int, config["server-round"])) if config and "server-round" in config else 0


def _plain(reply: Message) -> Message:
    """The reply as the strategy reads it: its metrics and site id (the masked vector and
    the workflow's legacy records removed)."""
    for name in (SECAGG_RECORD, *wire.FITRES_RECORDS):
        if name in reply.content:
            del reply.content[name]
    return reply


def _failed(instruction: Message, reason: str) -> Message:
    return Message(Error(code=0, reason=reason), reply_to=instruction)
