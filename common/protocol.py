"""What travels between sites and server, declared once.

Every message of the protocol is a :class:`MessageSpec` (which records it carries, of which
kind, which are optional) and every model that travels is a :class:`Part` of the scholar,
in an array record of its own (which way it goes, how the server aggregates and bounds it,
how it is validated, its privacy role). The readers of this declaration:

- :mod:`common.wire` encodes the records and parts under these names;
- :mod:`server.strategy` checks a reply's records against :data:`TRAIN_REPLY` before any
  bound, aggregation or DP mechanism touches it; :mod:`server.aggregation` bounds and
  aggregates part by part (:func:`part_of`);
- :mod:`client.client_app` builds its replies from :data:`TRAIN_REPLY` /
  :data:`EVALUATE_REPLY`;
- :mod:`common.audit.egress_check` checks every logged message that left a site against
  :data:`REPLIES`;
- ``fedreplay protocol`` prints it (:func:`describe`), and docs/protocol.md is that text.

Plain Python: no flwr, no torch.
"""

from __future__ import annotations

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
        """What is wrong with a message carrying ``records`` (name -> kind); empty: fine."""
        allowed = self.allowed
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
REPLAY = Record(
    "replay",
    ARRAY,
    "frozen solver + generator(s) of the finished tasks (generator.kind = embedding: and the "
    "current task's, once the server has fitted it)",
    when="once per task (embedding: again after each refit)",
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

TRAIN_INSTRUCTION = MessageSpec(
    "train",
    "server -> site",
    (SOLVER_RECORD, TRAIN_CONFIG),
    optional=(GENERATOR_RECORD, REPLAY, REPLAY_META),
)
TRAIN_REPLY = MessageSpec(
    "train",
    "site -> server",
    (SOLVER_RECORD, METRICS, SITE),
    optional=(GENERATOR_RECORD, EMBEDDING_RECORD),
)
EVALUATE_INSTRUCTION = MessageSpec("evaluate", "server -> site", (SOLVER_RECORD, EVAL_CONFIG))
EVALUATE_REPLY = MessageSpec("evaluate", "site -> server", (METRICS,))
# which site a node holds, asked before sampling sites by id (server.site_sampling)
SITE_QUERY = MessageSpec("query", "server -> site", ())
QUERY_HOLDS = "nothing: asks which site the node holds (before sites are sampled by id)"
SITE_REPLY = MessageSpec("query", "site -> server", (SITE,))
MESSAGES = (
    TRAIN_INSTRUCTION,
    TRAIN_REPLY,
    EVALUATE_INSTRUCTION,
    EVALUATE_REPLY,
    SITE_QUERY,
    SITE_REPLY,
)
# what may leave a site
REPLIES = {m.message_type: m for m in (TRAIN_REPLY, EVALUATE_REPLY, SITE_REPLY)}

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
    "packed_generator; the server fills in its own before validation, server."
    "mask_aggregation). Down, a site gets the generator whole in its first round of a "
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
    "to at most fed.weight-cap x the median norm of the task's releases (from 3 on), "
    "each block (a class's sums, the Gram) held to the direction of the other sites' "
    "blocks, its part off it cut to fed.weight-cap x the median such part "
    "(server.release_consensus), summed over sites; after the task's first round (and "
    "when a late release arrives) the server fits the task's generator to the sum "
    "(server.embedding_sum) and sends it with "
    "the replay, its last generator: the sites' solvers learn the task from it; at the "
    "task's end it joins per-task replay. solver.arch = ridge: the sum also solves the "
    "solver, with the finished tasks' statistics (common.models.ridge), and joins them at "
    "the task's end",
    validation="shape (classes of the task [+ F for ridge], F = 2 generator.features + 1), "
    "float32, finite",
    privacy="per-class sums of norm-1 random features (L2 sensitivity 1) plus secret "
    "Gaussian noise, once per task, planned and recorded in the site's ledger before it "
    "exists (common.privacy.embedding); its count coordinate is a noised class count. "
    "ridge: with the features' Gram matrix (F x F, upper triangle moved <= 1 by a record), "
    "noise sigma x sqrt(2) on every value: the same one event",
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
    "error details (an error reply names the error without local paths)",
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
    lines += ["", "## Never leaves a site", ""]
    lines += [f"- {what}" for what in STAYS_AT_SITE]
    return "\n".join(lines) + "\n"
