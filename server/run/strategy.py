"""FedReplay: FedAvg of solver and generator, plus once-per-task delivery of replay.

Differences from :class:`flwr.serverapp.strategy.FedAvg`:

- ``configure_train`` attaches the replay payload of the current task (frozen models of
  the finished tasks) to the messages of sites that do not have it yet; a site is marked
  as served once it replied successfully, and unmarked when a round of its fails, so a
  lost message or a lost replay file means a resend, not a site training without replay.
- ``aggregate_train`` validates every reply against the registered architectures
  (wrong keys, shapes, dtypes, NaN/inf are rejected and logged), ignores sites that had
  no data, bounds every site's influence and applies ``fed.aggregation``
  (:mod:`server.robust.aggregation`: capped counts, per-part norm bounds, a finite aggregate or
  the previous model), and keeps each site's latest *bounded* generator of the task for
  the ``ensemble`` replay mode.
- ``fed.min-sites`` is the number of sites needed to *start*; later rounds go on with the
  sites that are connected (a dead site does not stall the run); with
  ``fed.fraction-train < 1`` sites are sampled by site id (:mod:`server.sites.sampling`).
- Per-site metrics of every round are kept in ``round_records`` for the run's log.
- With ``client_dp`` (client-level DP), the accepted updates are clipped, summed, divided
  by the number of sites sampled and noised (:mod:`server.privacy.client_dp`), after validation.
- With a ``registry``, a site whose reported lifetime epsilon falls below one it reported
  before is refused (its privacy ledger was reset).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable

import numpy as np
import torch
from flwr.app import ArrayRecord, ConfigRecord, Message, MessageType, MetricRecord, RecordDict
from flwr.serverapp import Grid
from flwr.serverapp.strategy import FedAvg
from flwr.serverapp.strategy.strategy_utils import sample_nodes
from torch import nn

from common import protocol, wire, wire_packed
from common.class_counts import reported_counts
from common.models.dgm import DGMGenerator
from common.replay import ReplayPayload
from server.methods.dgm import keep_reserved
from server.privacy.client_dp import ClientLevelDP
from server.robust.aggregation import AggregationError, Bounds, aggregate, bounded_model
from server.robust.reply_checks import TrainReply, check_secure_reply, check_train_reply
from server.round_record import RoundRecord, SiteReply
from server.run.checkpoint import RunState, TaskState
from server.run.deliveries import Deliveries
from server.run.round_metrics import log_failures, per_task_accuracy, weighted_metrics
from server.sites.owners import BINDINGS, SiteOwners, read_bindings
from server.sites.registry import SiteRegistry, server_dir
from server.sites.sampling import QUERY_TIMEOUT, SiteSampler, wait_for_sites
from server.sites.status import pulled_against

log = logging.getLogger("fedreplay.server")


class FedReplay(FedAvg):
    """Reads and writes the run's :class:`~server.run.checkpoint.RunState` (``state``: what
    the replies of the task left, federated evaluations, each site's last update); what
    else it keeps is this process's bookkeeping of deliveries and node ids, which a resumed
    run starts afresh."""

    def __init__(
        self,
        *,
        state: RunState,
        solver: nn.Module,
        generator: nn.Module | None,
        fraction_train: float,
        min_train_nodes: int,
        min_available_nodes: int,
        fraction_evaluate: float = 0.0,
        client_dp: ClientLevelDP | None = None,
        registry: SiteRegistry | None = None,
        bounds: Bounds | None = None,
        start_timeout: float = 0.0,
        query_timeout: float = QUERY_TIMEOUT,
        secure: bool = False,
    ) -> None:
        super().__init__(
            fraction_train=fraction_train,
            fraction_evaluate=fraction_evaluate,
            min_train_nodes=min_train_nodes,
            min_evaluate_nodes=min_train_nodes if fraction_evaluate > 0 else 0,
            min_available_nodes=min_available_nodes,
            arrayrecord_key=protocol.SOLVER.name,  # evaluation: the solver alone travels
            configrecord_key=wire.CONFIG,
        )
        self.state = state  # the run's: checkpointed whole (server.run.checkpoint)
        self.solver_template, self.generator_template = solver, generator
        self.client_dp = client_dp  # client-level DP: clip, sum, / sampled, secret noise
        self.registry = registry  # sites' lifetime epsilons across runs
        self.bounds = bounds or Bounds()
        self.started = False  # fed.min-sites is waited for once, at the start
        self.start_timeout = start_timeout  # seconds; 0 = wait as long as it takes
        self.expected_sites: list[str] = []  # a resumed run's sites, named if they stay away
        # which node presents which site id; bound to registered keys where there are any
        self.sites = SiteOwners(read_bindings(server_dir() / BINDINGS))
        self.sampler = SiteSampler(query_timeout=query_timeout)  # key: set by the run
        self.instructions: list[Message] = []  # the round's messages to sites
        self.reported: dict[int, str] = {}  # node -> kind of failure already logged
        self.current_arrays: ArrayRecord | None = None
        self.round_offset = 0  # rounds of earlier tasks (start() counts from 1 per task)
        self.payload: ReplayPayload | None = None
        self.payload_records: dict[str, ArrayRecord | ConfigRecord] | None = None
        self.replay_sent = Deliveries()  # nodes holding the task's replay payload
        # DGM: nodes holding the task's frozen generator elements (they get the free ones)
        self.generator_sent = Deliveries()
        self.round_records: list[RoundRecord] = []
        self.embedding_shape: tuple[int, int] | None = None
        # fed.aggregation = "secure": replies carry no release, their sum arrives unmasked
        # (server.run.secure_aggregation calls receive_sum before the replies come)
        self.secure = secure

    # --- task boundaries ---------------------------------------------------------------
    def begin_task(
        self,
        payload: ReplayPayload | None,
        round_offset: int,
        *,
        embedding_shape: tuple[int, int] | None = None,
        resumed_mid_task: bool = False,
    ) -> None:
        """Called by the run before each task: the replay every site must receive (and,
        for generator.kind = "embedding", the shape of the task's releases). The replies
        collected of the task start empty, unless a resumed run goes on mid-task."""
        if not resumed_mid_task:
            self.state.task_replies = TaskState()
        self.embedding_shape = embedding_shape
        self.payload = payload
        self.payload_records = wire.replay_records(payload) if payload is not None else None
        self.replay_sent.reset()
        self.generator_sent.reset()  # a new task: new frozen elements
        self.round_offset = round_offset

    def receive_sum(self, total: np.ndarray, sites: int) -> None:
        """The round's releases, summed under SecAgg+ (``sites`` of them)."""
        self.state.task_replies.releases.receive_sum(total, sites)

    def replace_payload(self, payload: ReplayPayload) -> None:
        """Within a task (generator.kind = "embedding"): every site gets this one next."""
        self.payload, self.payload_records = payload, wire.replay_records(payload)
        self.replay_sent.reset()

    # --- training -------------------------------------------------------------------------
    def configure_train(
        self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Grid
    ) -> Iterable[Message]:
        # fed.min-sites must connect before the first round; afterwards a round goes on
        # with the sites that are connected (a dead site must not stall the run)
        if not self.started and self.start_timeout > 0:
            wait_for_sites(
                grid,
                self.min_available_nodes,
                timeout=self.start_timeout,
                expected=self.expected_sites,
                identify=lambda nodes: self.sampler.identify(grid, nodes),
            )
        self.sites.connected = set(grid.get_node_ids())
        num_nodes = int(len(self.sites.connected) * self.fraction_train)
        wanted = self.min_train_nodes if not self.started else 1
        sample_size = max(num_nodes, wanted)
        _, connected = sample_nodes(
            grid, self.min_available_nodes if not self.started else 1, sample_size
        )
        self.started = True
        global_round = self.round_offset + server_round
        # by site id, not node id: a resumed run samples the sites the run it continues would
        node_ids = self.sampler.choose(grid, connected, sample_size, server_round=global_round)
        self.current_arrays = arrays
        round_config = ConfigRecord(
            {**dict(config), "server-round": global_round, wire.RUN_KEY: self.state.run_key}
        )
        self.round_records.append(RoundRecord(global_round, sampled=list(node_ids)))
        messages: list[Message] = []
        self.instructions = messages  # their ids, once sent, attribute the SuperLink's errors
        self.replay_sent.begin_round()
        self.generator_sent.begin_round()
        packed = wire_packed.packed_instruction(arrays, round_config, self.generator_template)
        for node_id in node_ids:
            content = RecordDict({**wire.part_records(arrays), wire.CONFIG: round_config})
            if packed is not None and self.generator_sent.holds(node_id):
                content = RecordDict({**wire.part_records(packed[0]), wire.CONFIG: packed[1]})
            elif packed is not None:
                self.generator_sent.send(node_id)
            if self.payload_records is not None and not self.replay_sent.holds(node_id):
                for name, record in self.payload_records.items():  # one record per model
                    content[name] = record
                self.replay_sent.send(node_id)
            messages.append(
                Message(content=content, message_type=MessageType.TRAIN, dst_node_id=node_id)
            )
        log.info(
            "round %d: %d sites sampled, replay sent to %d%s",
            global_round,
            len(node_ids),
            len(self.replay_sent.sent),
            ""
            if packed is None
            else f", generator packed to {len(node_ids) - len(self.generator_sent.sent)}",
        )
        return messages

    def aggregate_train(
        self, server_round: int, replies: Iterable[Message]
    ) -> tuple[ArrayRecord | None, MetricRecord | None]:
        record = self.round_records[-1]
        accepted: list[tuple[SiteReply, TrainReply]] = []
        replies = list(replies)
        # every reply checked and decoded once, here; nothing below reads its records
        decoded = [self._decode(msg) for msg in replies]
        claims = [d.site_id if isinstance(d, TrainReply) else None for d in decoded]
        nodes = self.sites.begin_round(replies, claims, self.instructions, record.sampled)
        for node, got in zip(nodes, decoded, strict=True):
            if isinstance(got, str):
                record.failures[node] = got
                continue
            # who owns the id first: a reply claiming another node's site id must never
            # reach the registry, which would record (and quarantine) the victim
            refused = self.sites.check(node, got.site_id)
            if refused is None:
                refused = self._check_privacy(got, record.server_round)
            if refused is not None:
                record.failures[node] = f"rejected: {refused}"
                continue
            if got.site_id is not None:
                self.sampler.learn(node, got.site_id)
            self.replay_sent.confirm(node)
            self.generator_sent.confirm(node)
            reply = SiteReply(node, got.metrics, None, got.site_id)
            record.replies.append(reply)
            if got.metrics.get("num-examples", 0.0) > 0:
                accepted.append((reply, got))
                if got.release is not None:  # the task's first counts (server.methods.embedding)
                    self.state.task_replies.releases.receive(reply.key, got.release)
        missing = set(record.sampled) - {r.node_id for r in record.replies} - set(record.failures)
        for node in missing:
            record.failures[node] = "no reply before the round timeout"
        # a failed site may have lost what it held: the replay and the whole generator again
        self.replay_sent.forget(set(record.failures))
        self.generator_sent.forget(set(record.failures))
        log_failures(record, self.sites.owners, self.reported)
        if self.registry is not None:
            self.registry.save()
        if not accepted:
            return None, None
        if self.client_dp is not None:
            return self._release_client_dp(
                [got for _, got in accepted], num_sampled=len(record.sampled)
            )
        return self._aggregate_bounded(record, accepted)

    def _decode(self, msg: Message) -> TrainReply | str:
        """A reply checked and decoded (server.robust.reply_checks), else why it failed."""
        if msg.has_error():
            return f"error reply: {msg.error.reason}"
        try:
            if self.secure:  # its release went into the sum (server.run.secure_aggregation)
                assert self.current_arrays is not None  # (set when the round was configured)
                return check_secure_reply(msg.content, global_arrays=self.current_arrays)
            return check_train_reply(
                msg.content,
                solver=self.solver_template,
                generator=self.generator_template,
                embedding_shape=self.embedding_shape,
            )
        except (wire.WireError, KeyError) as exc:
            return f"rejected: {exc}"

    def _aggregate_bounded(
        self, record: RoundRecord, accepted: list[tuple[SiteReply, TrainReply]]
    ) -> tuple[ArrayRecord | None, MetricRecord | None]:
        """Capped counts, norm-bounded updates, the configured rule, a finite result."""
        assert self.current_arrays is not None
        keys = list(self.current_arrays.keys())
        current = {k: self.current_arrays[k].numpy() for k in keys}
        replies = [got.arrays(keys) for _, got in accepted]
        counts = [r.metrics["num-examples"] for r, _ in accepted]
        declared, caps = [], self.state.task_replies.declared
        for reply, _ in accepted:  # the count a site declared on joining the task is its cap
            declared.append(caps.setdefault(reply.key, reply.metrics["num-examples"]))
        try:
            arrays, reports = aggregate(
                current, replies, counts, bounds=self.bounds, declared=declared
            )
        except AggregationError as exc:
            record.refused_aggregate = str(exc)
            log.warning("round %d: aggregate refused, model kept: %s", record.server_round, exc)
            return None, None
        for (reply, got), report, values in zip(accepted, reports, replies, strict=True):
            reply.influence = {
                "weight": report.weight,
                "weight_capped": report.weight_capped,
                "update_norms": report.norms,
                "clipped": report.clipped,
                "against": report.against,
            }
            # honest sites above the median are cut a little every round (rounds.jsonl
            # has it); the console hears of a site cut hard or capped
            if report.against:
                log.warning(
                    "round %d: node %d %s",
                    record.server_round,
                    reply.node_id,
                    pulled_against(report.against),
                )
            if report.weight_capped or min(report.clipped.values(), default=1.0) < 0.5:
                log.warning(
                    "round %d: node %d bounded: weight %.4g of %.4g reported, clipped %s",
                    record.server_round,
                    reply.node_id,
                    report.weight,
                    reply.metrics["num-examples"],
                    report.clipped or "-",
                )
            if self.generator_template is not None:
                # the site's generator with its update bounded: what the ensemble replays
                generator_keys = [k for k in keys if protocol.part_of(k) == protocol.GENERATOR.name]
                bounded = bounded_model(
                    {k: current[k] for k in generator_keys}, values, report.clipped
                )
                generator = {k.split(".", 1)[1]: torch.from_numpy(v) for k, v in bounded.items()}
                reply.generator = generator
                self.state.task_replies.generators[reply.key] = (generator, report.weight)
                self.state.task_replies.class_counts[reply.key] = reported_counts(reply.metrics)
            # the privacy audit's view of a site's release (what it sent, un-bounded)
            parts = wire.split_record(got.scholar)
            partition = int(reply.metrics.get("partition-id", 0))
            self.state.site_updates[reply.key] = (record.server_round, partition, parts)
        if isinstance(self.generator_template, DGMGenerator):  # finished tasks are the server's
            arrays = keep_reserved(current, arrays, self.generator_template)
        out = ArrayRecord({k: wire.Array(v) for k, v in arrays.items()})  # type: ignore[arg-type]
        return out, weighted_metrics([got.metrics for _, got in accepted])

    def _check_privacy(self, got: TrainReply, server_round: int) -> str | None:
        """Refuse a site whose lifetime epsilon went backwards (None: fine)."""
        if self.registry is None or "dp-epsilon" not in got.metrics:
            return None
        if got.site_id is None:
            return "a DP reply without a site id"
        return self.registry.check(
            got.site_id,
            epsilon=got.metrics["dp-epsilon"],
            steps=got.metrics.get("dp-steps", 0.0),
            run=self.state.run_key,
            server_round=server_round,
        )

    def _release_client_dp(
        self, accepted: list[TrainReply], *, num_sampled: int
    ) -> tuple[ArrayRecord, MetricRecord]:
        """Client-level DP: every accepted site weighs the same, a missing one counts as a
        zero update, the noise is calibrated to the number sampled (server.privacy.client_dp)."""
        assert self.client_dp is not None and self.current_arrays is not None
        keys = list(self.current_arrays.keys())
        current = {k: self.current_arrays[k].numpy() for k in keys}
        replies = [got.arrays(keys) for got in accepted]
        released, norms = self.client_dp.release(current, replies, num_sampled=num_sampled)
        log.info(
            "client-level DP: %d of %d sampled updates (norms %s) clipped to %.3g, noise "
            "multiplier %.3g",
            len(replies),
            num_sampled,
            " ".join(f"{n:.3g}" for n in norms),
            self.client_dp.clip_norm,
            self.client_dp.noise_multiplier,
        )
        arrays = ArrayRecord({k: wire.Array(released[k]) for k in keys})  # type: ignore[arg-type]
        return arrays, weighted_metrics([got.metrics for got in accepted])

    # --- federated evaluation ------------------------------------------------------------
    def configure_evaluate(
        self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Grid
    ) -> Iterable[Message]:
        """Only the solver travels: it is what a site evaluates."""
        solver = wire.part_records(arrays)[protocol.SOLVER.name]
        return super().configure_evaluate(server_round, solver, config, grid)

    def aggregate_evaluate(
        self, server_round: int, replies: Iterable[Message]
    ) -> MetricRecord | None:
        records = []
        for m in replies:
            if not m.has_error():
                try:
                    records.append(wire.scalar_metrics(m.content.metric_records[wire.METRICS]))
                except (wire.WireError, KeyError) as exc:
                    log.warning(
                        "evaluation reply of node %d rejected: %s", m.metadata.src_node_id, exc
                    )
        if not records:
            return None
        merged = per_task_accuracy(records)
        self.state.evaluations[self.round_offset + server_round] = merged
        return MetricRecord(dict(merged))
