"""What travels between sites and server, declared once.

Every message of the protocol is a :class:`MessageSpec` (which records it carries, of which
kind, which are optional), every model that travels is a :class:`Part` of the scholar,
in an array record of its own (which way it goes, how the server aggregates and bounds it,
how it is validated, its privacy role), and every metric a site may send is a
:class:`Metric` (its name, what it holds, when it may leave under DP). The readers:

- :mod:`common.wire` encodes the records and parts under these names;
- :mod:`server.run.strategy` checks a reply's records against :data:`TRAIN_REPLY` before any
  bound, aggregation or DP mechanism touches it; :mod:`server.robust.aggregation` bounds and
  aggregates part by part (:func:`part_of`);
- :mod:`client.client_app` builds its replies from :data:`TRAIN_REPLY` /
  :data:`EVALUATE_REPLY`;
- :mod:`common.audit.egress_check` checks every logged message that left a site against
  :data:`REPLIES`;
- :mod:`common.privacy.release` (what a site sends under DP) and
  :mod:`common.config` (what ``dp.release-metrics`` may name) read :data:`METRIC_LIST`;
- ``fedreplay protocol`` prints it (:func:`describe`), and docs/protocol.md is that text.

Plain Python: no flwr, no torch.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass

ARRAY, METRIC, CONFIG = "array", "metric", "config"


@dataclass(frozen=True)
class Record:
    name: str
    kind: str  # array | metric | config
    holds: str
    when: str = ""  # for an optional record: when it travels


@dataclass(frozen=True)
class Part:
    """A model of the scholar: it travels as the array record ``<name>``, under
    ``<name>.<parameter>`` keys."""

    name: str
    present: str  # when it travels
    aggregation: str
    validation: str
    privacy: str


def _declared_name(name: str, allowed: Mapping[str, str]) -> str:
    """``replay.generator.3`` -> ``replay.generator.<i>`` where that is declared."""
    head, _, index = name.rpartition(".")
    if index.isdigit() and f"{head}.<i>" in allowed:
        return f"{head}.<i>"
    return name


@dataclass(frozen=True)
class MessageSpec:
    message_type: str  # Flower's message type: train | evaluate
    direction: str  # "server -> site" | "site -> server"
    required: tuple[Record, ...]
    optional: tuple[Record, ...] = ()

    @property
    def allowed(self) -> dict[str, str]:
        """Record name -> kind, for every record the message may carry."""
        return {r.name: r.kind for r in (*self.required, *self.optional)}

    def problems(self, records: Mapping[str, str]) -> list[str]:
        """What is wrong with a message carrying ``records`` (name -> kind); empty: fine.
        A declared name ending in ``<i>`` stands for that name with each index 0, 1, ..."""
        allowed = self.allowed
        records = {_declared_name(name, allowed): kind for name, kind in records.items()}
        out = []
        missing = sorted(r.name for r in self.required if r.name not in records)
        extra = sorted(set(records) - set(allowed))
        if missing or extra:
            out.append(
                f"{self.message_type} {self.direction} has records {sorted(records)}: "
                f"missing {missing}, not allowed {extra}"
            )
        for name, kind in sorted(records.items()):
            if name in allowed and kind != allowed[name]:
                out.append(f"record {name!r} is a {kind} record, expected {allowed[name]}")
        return out


# the scholar travels as one record per part (below), keys ``<part>.<parameter>``
SOLVER_RECORD = Record(
    "solver", ARRAY, "the solver part: the global model down, the site's trained one up"
)
GENERATOR_RECORD = Record(
    "generator",
    ARRAY,
    "the generator part: the global model down, the site's trained one up (DGM: packed)",
    when="methods with a generator; not in evaluate",
)
EMBEDDING_RECORD = Record(
    "embedding",
    ARRAY,
    "the site's noised per-class sums of random features of the task (up only)",
    when='generator.kind = "embedding"',
)
TRAIN_CONFIG = Record(
    "config",
    CONFIG,
    "task, iterations, seed, input-shape, server-round, run-key[, generator-base]",
)
EVAL_CONFIG = Record("config", CONFIG, "task, input-shape")
REPLAY_SOLVER = Record(
    "replay.solver",
    ARRAY,
    "the frozen solver of the finished tasks (method = lwf / ewc: all that is replayed)",
    when="once per task (embedding: again after each refit)",
)
REPLAY_GENERATORS = Record(
    "replay.generator.<i>",
    ARRAY,
    "one record per frozen generator of the replay, i = 0, 1, ... (generator.kind = "
    "embedding: the last is the current task's, once the server has fitted it)",
    when="with replay.solver, for a method with a generator",
)
REPLAY_META = Record(
    "replay-meta",
    CONFIG,
    "task, ensemble weights, classes replayed (class-counts: weights per class)",
    when="once per task",
)
METRICS = Record(
    "metrics",
    METRIC,
    "num-examples (class-counts: class-count-<c>) and the metrics common.privacy.release allows",
)
SITE = Record("site", CONFIG, "site-id: the stable id the site's ledger and state are kept under")
# fed.aggregation = "secure": Flower's SecAgg+ (server.run.secure_aggregation,
# client.secure_aggregation); the record's name is Flower's
SECAGG = Record(
    "secaggplus_configs",
    CONFIG,
    "SecAgg+, by stage: the site's two public keys; its Shamir shares for the other sites, "
    "each encrypted to its site; its release masked (integers mod 2^40, bytes); the shares "
    "that unmask the sum. Bytes and integers only (the egress log keeps their sizes and "
    "SHA-256, not their values)",
    when='fed.aggregation = "secure": the four stages of a round',
)

TRAIN_INSTRUCTION = MessageSpec(
    "train",
    "server -> site",
    (SOLVER_RECORD, TRAIN_CONFIG),
    optional=(GENERATOR_RECORD, REPLAY_SOLVER, REPLAY_GENERATORS, REPLAY_META),
)
TRAIN_REPLY = MessageSpec(
    "train",
    "site -> server",
    (SOLVER_RECORD, METRICS, SITE),
    optional=(GENERATOR_RECORD, EMBEDDING_RECORD),
)
# SecAgg+'s numbers, the same at the server and every site: each value an honest site sends
# is clipped to [-SECURE_CLIP, SECURE_CLIP] (far above an honest value: a sum over 2^16
# records of norm-1 features), quantized to SECURE_LEVELS levels over that range (a step of 2^-13,
# stochastic rounding) and masked in the integers mod SECURE_MODULUS (room for a sum over
# 2^10 sites without overflow)
SECURE_CLIP = float(2**16)
SECURE_LEVELS = 2**30
SECURE_MODULUS = 2**40


def secure_threshold(sites: int) -> int:
    """SecAgg+'s threshold for ``sites`` sampled sites: the shares needed to unmask, so the
    fewest sites a sum holds. A majority (at least 2): the server cannot rebuild both the
    mask seed and the key of a site from fewer."""
    return max(2, sites // 2 + 1)


# fed.aggregation = "secure": the train reply that carries the masked release (the release
# is the only array: the ridge solver a site would send back is the server's own), and the
# replies of the protocol's other three stages
SECURE_TRAIN_REPLY = MessageSpec("train", "site -> server", (SECAGG, METRICS, SITE))
SECURE_STAGE_REPLY = MessageSpec("train", "site -> server", (SECAGG,))
# (the secure train reply as the strategy gets it: its masked release went into the sum)
SECURE_SUMMED_REPLY = MessageSpec("train", "site -> server", (METRICS, SITE))
EVALUATE_INSTRUCTION = MessageSpec("evaluate", "server -> site", (SOLVER_RECORD, EVAL_CONFIG))
EVALUATE_REPLY = MessageSpec("evaluate", "site -> server", (METRICS,))
# which site a node holds, asked before sampling sites by id (server.sites.sampling)
SITE_QUERY = MessageSpec("query", "server -> site", ())
QUERY_HOLDS = "nothing: asks which site the node holds (before sites are sampled by id)"
SITE_REPLY = MessageSpec("query", "site -> server", (SITE,))
MESSAGES = (
    TRAIN_INSTRUCTION,
    TRAIN_REPLY,
    SECURE_TRAIN_REPLY,
    SECURE_STAGE_REPLY,
    EVALUATE_INSTRUCTION,
    EVALUATE_REPLY,
    SITE_QUERY,
    SITE_REPLY,
)
# what may leave a site
REPLIES = {m.message_type: m for m in (TRAIN_REPLY, EVALUATE_REPLY, SITE_REPLY)}


def reply_spec(message_type: str, records: set[str]) -> MessageSpec | None:
    """The declared reply a message of ``message_type`` carrying ``records`` must be: a
    train reply with the SecAgg+ record is one of secure aggregation's (None: no such
    reply may leave a site)."""
    if message_type == TRAIN_REPLY.message_type and SECAGG.name in records:
        return SECURE_TRAIN_REPLY if METRICS.name in records else SECURE_STAGE_REPLY
    return REPLIES.get(message_type)


SOLVER = Part(
    "solver",
    present="always",
    aggregation="fed.aggregation over update-norm-bounded, count-capped updates "
    "(client-level DP: clipped sum + secret Gaussian noise / sites sampled); solver.arch = "
    "ridge: a site sends back what it got, and the server replaces the aggregate with its "
    "own solve from the embedding releases (it never takes a site's)",
    validation="the registered architecture's keys and shapes, float32, finite",
    privacy="trained on the site's records: sample-level DP-SGD, or client-level DP "
    "(ridge: trained on nothing at a site; the server's solve is post-processing of the "
    "releases)",
)
GENERATOR = Part(
    "generator",
    present="methods with a generator (dgr, dgm)",
    aggregation="as the solver; replay.mode=ensemble also keeps every site's bounded "
    "generator of the task as replay for all sites (per-task: of every finished task, each "
    "drawing its task's classes). DGM: weights reserved by finished tasks "
    "and the mask state (usage bit sets, class -> task) stay the server's and do not travel "
    "up: a site sends only the elements free in the task, packed (common.wire."
    "packed_generator; the server fills in its own before validation, server.methods."
    "dgm). Down, a site gets the generator whole in its first round of a "
    "task and after a failure, else packed the same way with the digest of the frozen "
    "elements it must hold (config `generator-base`; common.wire_packed.unpack_with_base; "
    "a site without them refuses the round and gets the whole generator next round); "
    "the current task's mask embeddings are averaged, and at the "
    "task's end the server binarises them and grows the generator (common.models.growth)",
    validation="as the solver (DGM: against the server's generator, grown at every task "
    "boundary; a site takes the server's shapes, the server never takes a site's)",
    privacy="its critic (VAE encoder / GAN discriminator) trains on records under DP-SGD; "
    "the generator is released as post-processing",
)
EMBEDDING = Part(
    "embedding",
    present='generator.kind = "embedding", up only (key embedding.sums)',
    aggregation="one release per site and task (the first one received), each scaled down "
    "to at most robust.weight-cap x the median norm of the task's releases (from 3 on), "
    "each block (a class's sums, the Gram) held to the direction of the other sites' "
    "blocks, its part off it cut to robust.weight-cap x the median such part "
    "(server.robust.release_consensus), summed over sites; after the task's first round (and "
    "when a late release arrives) the server fits the task's generator to the sum "
    "(server.methods.embedding) and sends it with "
    "the replay, its last generator: the sites' solvers learn the task from it; at the "
    "task's end it joins per-task replay. solver.arch = ridge: the sum also solves the "
    "solver, with the finished tasks' statistics (common.models.ridge), and joins them at "
    "the task's end",
    validation="shape (classes of the task [+ F for ridge], F = 2 embedding.features + 1), "
    "float32, finite",
    privacy="per-class sums of norm-1 random features (L2 sensitivity 1) plus secret "
    "Gaussian noise, once per task, planned and recorded in the site's ledger before it "
    "exists (common.privacy.embedding); its count coordinate is a noised class count. "
    "ridge: with the features' Gram matrix (F x F, moved <= 1 in Frobenius norm by a record), "
    "noise sigma x sqrt(2) on every sum and diagonal value, sigma above the diagonal "
    "(mirrored): the same one event",
)
PARTS = (SOLVER, GENERATOR, EMBEDDING)
PART_NAMES = tuple(p.name for p in PARTS)
PART_RECORDS = (SOLVER_RECORD, GENERATOR_RECORD, EMBEDDING_RECORD)  # carries its part's name
assert tuple(r.name for r in PART_RECORDS) == PART_NAMES

STAYS_AT_SITE = (
    "the data and its fingerprints",
    "the critic (VAE encoder / GAN discriminator), except with "
    '`solver.arch = "discriminator"`, where the discriminator is the solver and travels '
    "as the `solver` part",
    "optimizer state",
    "the privacy ledger",
    "the replay cache and last reply (client.site_store)",
    "a regularisation method's memory (method = ewc: each finished task's Fisher information)",
    "error details (an error reply names the error without local paths)",
)


# ---------------------------------------------------------------- metrics
# When a metric may leave a site under DP (sample- or client-level); without DP every
# declared metric may.
PROTOCOL = "protocol"  # public, or a count the privacy scope lists as released
ACCOUNTANT = "accountant"  # the site's ledger's numbers: functions of the public plan
OPT_IN = "opt-in"  # from private data, not covered by DP: only if dp.release-metrics names it
NEVER_DP = "never under DP"  # refused by the configuration under DP


@dataclass(frozen=True)
class Metric:
    """A metric a site may send: ``name`` (a ``<j>`` / ``<c>`` suffix: one per task / class)."""

    name: str
    message: str  # train | evaluate
    holds: str
    under_dp: str  # PROTOCOL | ACCOUNTANT | OPT_IN | NEVER_DP

    @property
    def pattern(self) -> re.Pattern[str]:
        """The names it covers (``accuracy-task-<j>``: ``accuracy-task-0``, ...)."""
        pieces = re.split(r"(<\w>)", self.name)
        return re.compile("".join(r"\d+" if p[:1] == "<" else re.escape(p) for p in pieces))


NUM_EXAMPLES = "num-examples"
EMPTY = "empty"
PARTITION_ID = "partition-id"
BYTES_UP, BYTES_DOWN = "bytes-up", "bytes-down"
DP_EPSILON, DP_BUDGET_LEFT, DP_STEPS = "dp-epsilon", "dp-budget-left", "dp-steps"
ACCURACY = "accuracy"
CLASS_COUNT_PREFIX = "class-count-"

METRIC_LIST = (
    Metric(NUM_EXAMPLES, "train", "records trained on (under DP: the released, noised count; "
           "0 when the site sat out)", PROTOCOL),
    Metric(EMPTY, "train", "1 when the site sat out the round (the sit-out decision)", PROTOCOL),
    Metric("iterations", "train", "solver steps of the round (from the instruction)", PROTOCOL),
    Metric("replay-ratio", "train", "the share of real records in a solver batch (from the "
           "configuration and the task)", PROTOCOL),
    Metric(BYTES_DOWN, "train", "bytes of the instruction received", PROTOCOL),
    Metric(BYTES_UP, "train", "bytes of the scholar sent", PROTOCOL),
    Metric(PARTITION_ID, "train", "the simulated partition (its node config)", PROTOCOL),
    Metric(DP_EPSILON, "train", "lifetime epsilon spent (the site's ledger)", ACCOUNTANT),
    Metric("dp-run-epsilon", "train", "epsilon spent in this run", ACCOUNTANT),
    Metric("dp-task-epsilon", "train", "epsilon spent on the task's records", ACCOUNTANT),
    Metric("dp-delta", "train", "the ledger's delta", ACCOUNTANT),
    Metric("dp-noise-multiplier", "train", "the round's noise multiplier", ACCOUNTANT),
    Metric("dp-sample-rate", "train", "the round's Poisson sampling rate", ACCOUNTANT),
    Metric(DP_STEPS, "train", "DP steps in the site's lifetime", ACCOUNTANT),
    Metric("dp-max-grad-norm", "train", "the clip norm", ACCOUNTANT),
    Metric(DP_BUDGET_LEFT, "train", "lifetime budget left", ACCOUNTANT),
    Metric("dp-epsilon-own-noise", "train", "lifetime epsilon from the noise the site added "
           "itself: against a server colluding with every other site (dp-epsilon unless it "
           "added a share of the noise under secure aggregation)", ACCOUNTANT),
    Metric("dp-per-task", "train", "1 when composition is per task", ACCOUNTANT),
    Metric("loss-solver", "train", "mean solver loss of the round", OPT_IN),
    Metric("loss-generator", "train", "mean generator loss of the round", OPT_IN),
    Metric("loss-discriminator", "train", "mean critic loss of the round", OPT_IN),
    Metric("train-time-s", "train", "seconds the round's training took", OPT_IN),
    Metric(f"{CLASS_COUNT_PREFIX}<c>", "train", 'records of class c in the task (replay.mixture '
           '= "class-counts")', NEVER_DP),
    Metric(ACCURACY, "evaluate", "accuracy on the site's own test records", OPT_IN),
    Metric(NUM_EXAMPLES, "evaluate", "test records evaluated", OPT_IN),
    Metric("eval-time-s", "evaluate", "seconds the evaluation took", OPT_IN),
    Metric("accuracy-task-<j>", "evaluate", "accuracy on task j's test records", OPT_IN),
    Metric("examples-task-<j>", "evaluate", "test records of task j", OPT_IN),
)  # fmt: skip
# answering a federated evaluation at all is opted in under DP by this name
EVALUATION = "evaluation"


def metrics_of(message: str, *, under_dp: tuple[str, ...] = ()) -> frozenset[str]:
    """Names (without a ``<j>`` / ``<c>`` suffix) of ``message``'s metrics, of the
    ``under_dp`` kinds (all kinds when empty)."""
    return frozenset(
        m.name
        for m in METRIC_LIST
        if m.message == message and "<" not in m.name and (not under_dp or m.under_dp in under_dp)
    )


def metric_declared(message: str, name: str) -> Metric | None:
    """The declaration of metric ``name`` of ``message`` (None: not declared)."""
    return next(
        (m for m in METRIC_LIST if m.message == message and m.pattern.fullmatch(name)), None
    )


def part_of(key: str) -> str:
    """The part an array of the scholar belongs to: ``solver.fc.weight`` -> ``solver``."""
    return key.split(".", 1)[0]


def describe() -> str:
    """The protocol as Markdown (``fedreplay protocol``; docs/protocol.md holds this text)."""
    lines = [
        "## Messages",
        "",
        "| message | direction | record | kind | holds |",
        "|---|---|---|---|---|",
    ]
    for m in MESSAGES:
        if not m.allowed:
            lines.append(f"| {m.message_type} | {m.direction} | (none) | | {QUERY_HOLDS} |")
        for r in m.required:
            lines.append(
                f"| {m.message_type} | {m.direction} | `{r.name}` | {r.kind} | {r.holds} |"
            )
        for r in m.optional:
            lines.append(
                f"| {m.message_type} | {m.direction} | `{r.name}` ({r.when}) | {r.kind} "
                f"| {r.holds} |"
            )
    lines += ["", "## Parts of the scholar (each travels as its own record)", ""]
    lines += ["| part | travels | aggregation | validation | privacy |", "|---|---|---|---|---|"]
    for p in PARTS:
        lines.append(
            f"| `{p.name}` | {p.present} | {p.aggregation} | {p.validation} | {p.privacy} |"
        )
    lines += ["", "## Metrics (a site's numbers; every other name is refused)", ""]
    lines += ["| message | metric | holds | under DP |", "|---|---|---|---|"]
    for metric in METRIC_LIST:
        lines.append(f"| {metric.message} | `{metric.name}` | {metric.holds} | {metric.under_dp} |")
    lines += ["", "## Never leaves a site", ""]
    lines += [f"- {what}" for what in STAYS_AT_SITE]
    return "\n".join(lines) + "\n"
