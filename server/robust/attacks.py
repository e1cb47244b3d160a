"""Hostile sites, for the robustness suite (tests/server/test_hostile_sites.py and
simulations/bench_hostile.py): each attack rewrites an honest site's train reply the way
a poisoned, broken or impersonating site would.

    grid = InProcessGrid(client_app, run_config, num_nodes=5,
                         reply_hook=hostile_hook("flip10", node_id=1000))

Every attack is on the wire format (:mod:`common.wire`), so it exercises exactly what a
real SuperNode could send.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
from flwr.app import Array, ArrayRecord, ConfigRecord, Message, MetricRecord, RecordDict

from common import wire
from common.privacy.embedding import class_rows

# name -> what the hostile site does
ATTACKS: dict[str, str] = {
    "scale10": "sends its update x10",
    "scale100": "sends its update x100",
    "flip10": "sends its update sign-flipped x10",
    "huge": "sets every weight to 1e30",
    "count1e9": "reports num-examples = 1e9",
    "flip10-count1e9": "sign-flipped x10 update and num-examples = 1e9",
    "count-inf": "reports num-examples = inf",
    "nan": "sends NaN weights",
    "garbage-generator": "sends a generator of random weights (N(0, 1))",
    # inside the bounds (issue 34's review): updates at the site's own honest norm
    "flip1": "sends its update sign-flipped at its honest norm (= global minus its update)",
    "flip1-noise-generator": "solver update sign-flipped, generator update random, each "
    "tensor at its honest norm",
    "alie": "A Little Is Enough (Baruch et al. 2019): the mean of the round's updates it has "
    "seen (its own, and the sites that answered before it) moved by one standard deviation "
    "per coordinate against the mean's sign, inside the honest spread",
    "alie-count1e9": "alie, and reports num-examples = 1e9 (the most weight the cap allows)",
    "steal-id": "reports another site's site id and partition id",
    # generator.kind = "embedding" (the other attacks also scale or replace its release)
    "embedding-swap10": "sends its embedding release with the classes' rows swapped, x10",
}

Hook = Callable[[Message, Message], Message | None]
ALIE = ("alie", "alie-count1e9")  # attacks that read the round's other replies


def _swapped_classes(release: np.ndarray) -> np.ndarray:
    """x10, with the classes' rows in reverse order (a ridge release's Gram rows, below
    the classes', left in place)."""
    classes = class_rows(release.shape)
    out = release.copy()
    out[:classes] = release[:classes][::-1]
    return 10.0 * out


def _noise_at_norm(start: np.ndarray, trained: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A random update with the norm of the honest one (``trained - start``)."""
    noise = rng.standard_normal(trained.shape)
    norm = float(np.linalg.norm(noise))
    return start + noise * (float(np.linalg.norm(trained - start)) / norm if norm else 0.0)


def _update(sent: Message, reply: Message, fn: Callable[[str, np.ndarray, np.ndarray], np.ndarray]):
    start = wire.scholar_of(sent.content)
    arrays = wire.scholar_of(reply.content)

    def before(k: str, a: np.ndarray) -> np.ndarray:  # an embedding release starts from 0
        return start[k].numpy() if k in start else np.zeros_like(a)

    return ArrayRecord(
        {  # type: ignore[arg-type]
            k: Array(np.asarray(fn(k, before(k, a.numpy()), a.numpy()), dtype=np.float32))
            for k, a in arrays.items()
        }
    )


def attack_reply(
    name: str,
    sent: Message,
    reply: Message,
    *,
    victim: tuple[str, int],
    seen: list[dict[str, np.ndarray]] | None = None,
) -> Message:
    """The reply a hostile site sends instead of ``reply`` (an honest one); ``seen``: the
    round's updates the attacker could read (``alie``)."""
    if reply.has_error():
        return reply
    content = reply.content
    arrays = wire.scholar_of(content)
    metrics = dict(content.metric_records[wire.METRICS].items())
    site = dict(content.config_records[wire.SITE].items()) if wire.SITE in content else {}
    rng = np.random.default_rng(0)
    if name in ("scale10", "scale100"):
        k = 10.0 if name == "scale10" else 100.0
        arrays = _update(sent, reply, lambda _, s, a: s + k * (a - s))
    elif name in ("flip10", "flip10-count1e9"):
        arrays = _update(sent, reply, lambda _, s, a: s - 10.0 * (a - s))
    elif name == "flip1":
        arrays = _update(sent, reply, lambda _, s, a: s - (a - s))
    elif name == "flip1-noise-generator":
        arrays = _update(
            sent,
            reply,
            lambda k, s, a: (
                _noise_at_norm(s, a, rng) if k.startswith("generator.") else s - (a - s)
            ),
        )
    elif name == "huge":
        arrays = _update(sent, reply, lambda _, s, a: np.full_like(a, 1e30))
    elif name == "nan":
        arrays = _update(sent, reply, lambda _, s, a: np.full_like(a, np.nan))
    elif name == "garbage-generator":
        arrays = _update(
            sent,
            reply,
            lambda k, s, a: rng.standard_normal(a.shape) if k.startswith("generator.") else a,
        )
    elif name == "embedding-swap10":
        arrays = _update(
            sent, reply, lambda k, s, a: _swapped_classes(a) if k == wire.EMBEDDING_KEY else a
        )
    elif name == "steal-id":
        site = {wire.SITE_ID: victim[0]}
        metrics["partition-id"] = float(victim[1])
    elif name in ALIE:
        if not seen:
            raise ValueError("alie reads the round's other replies: use hostile_hook")
        arrays = _update(sent, reply, lambda k, s, a: s + _alie([u[k] for u in seen], z=1.0))
    elif name not in ATTACKS:
        raise ValueError(f"unknown attack {name!r}; known: {', '.join(ATTACKS)}")
    if name in ("count1e9", "flip10-count1e9", "alie-count1e9"):
        metrics["num-examples"] = 1e9
    elif name == "count-inf":
        metrics["num-examples"] = float("inf")
    records: dict[str, object] = {**wire.part_records(arrays), wire.METRICS: MetricRecord(metrics)}  # type: ignore[arg-type]
    if site:
        records[wire.SITE] = ConfigRecord(site)  # type: ignore[arg-type]
    return Message(RecordDict(records), reply_to=sent)  # type: ignore[arg-type]


def hostile_hook(name: str, *, node_id: int, victim: tuple[str, int] = ("site-0", 0)) -> Hook:
    """A reply hook for :class:`server.run.inprocess.InProcessGrid`: node ``node_id`` attacks
    (train replies only; ``victim`` is the (site id, partition id) that ``steal-id`` claims)."""

    seen: dict[str, list[dict[str, np.ndarray]]] = {}  # round -> the honest updates seen

    def hook(sent: Message, reply: Message) -> Message | None:
        if reply.has_error() or sent.metadata.message_type != "train":  # evaluate, query
            return reply
        rnd = str(sent.content.config_records[wire.CONFIG]["server-round"])
        if name in ALIE:  # the attacker reads every train reply it can (a colluder)
            start = wire.scholar_of(sent.content)
            seen.setdefault(rnd, []).append(
                {
                    k: a.numpy() - (start[k].numpy() if k in start else 0.0)
                    for k, a in wire.scholar_of(reply.content).items()
                }
            )
        if sent.metadata.dst_node_id != node_id:
            return reply
        return attack_reply(name, sent, reply, victim=victim, seen=seen.get(rnd))

    return hook


def _alie(updates: list[np.ndarray], *, z: float) -> np.ndarray:
    """mean - z x std x sign(mean), coordinate by coordinate, over ``updates``."""
    stacked = np.stack(updates)
    mean = stacked.mean(axis=0)
    return mean - z * stacked.std(axis=0) * np.sign(mean)
