"""The metrics of a round, combined over the sites that answered: training metrics
weighted by example counts, federated evaluation by per-task test examples; and its
failures, logged once per site."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from flwr.app import MetricRecord

log = logging.getLogger("fedreplay.server")


def weighted_metrics(records: list[dict[str, float]]) -> MetricRecord:
    """Example-weighted mean of the metrics every reply has (keys may differ by site)."""
    weights = [r["num-examples"] for r in records]
    common_keys = set.intersection(*(set(r) for r in records)) - {"num-examples"}
    total = sum(weights)
    out = {
        k: sum(r[k] * w for r, w in zip(records, weights, strict=True)) / total
        for k in sorted(common_keys)
    }
    out["num-examples"] = total
    return MetricRecord(dict(out))


def per_task_accuracy(records: list[dict[str, float]]) -> dict[str, float]:
    """Sites' per-task accuracies weighted by their per-task test examples."""
    tasks = sorted(int(k.rsplit("-", 1)[1]) for k in records[0] if k.startswith("accuracy-task-"))
    out: dict[str, float] = {}
    for j in tasks:
        n = sum(r.get(f"examples-task-{j}", 0.0) for r in records)
        hits = sum(
            r.get(f"accuracy-task-{j}", 0.0) * r.get(f"examples-task-{j}", 0.0) for r in records
        )
        out[f"accuracy-task-{j}"] = hits / n if n else 0.0
    out["accuracy"] = sum(out.values()) / len(tasks) if tasks else 0.0
    return out


def log_failures(record: Any, owners: Mapping[str, int], reported: dict[int, str]) -> None:
    """Each failure of ``record`` (a round) once under the site's id: a dead site is not
    logged every round (rounds.jsonl keeps every round's failures); ``reported`` (node ->
    kind of failure logged) is updated, and a site that answers is reported again next
    time it fails."""
    sites = {node: site for site, node in owners.items()}
    for node, reason in sorted(record.failures.items()):
        kind = reason.split(":", 1)[0]
        if reported.get(node) == kind:
            continue
        reported[node] = kind
        who = f"site {sites[node]!r} (node {node})" if node in sites else f"node {node}"
        log.warning("round %d: %s failed: %s", record.server_round, who, reason)
    for reply in record.replies:
        reported.pop(reply.node_id, None)
