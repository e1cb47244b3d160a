"""What the server checks of a site's training reply before anything reads it: only the
declared records, finite metrics, a sane count and partition id, and every array of the
scholar with the registered keys, shapes and dtypes (a DGM generator made whole first)."""

from __future__ import annotations

import math

import numpy as np
from flwr.app import RecordDict
from torch import nn

from common import protocol, wire, wire_packed
from server.embedding_sum import check_release


def check_train_reply(
    content: RecordDict,
    *,
    solver: nn.Module,
    generator: nn.Module | None,
    embedding_shape: tuple[int, int] | None = None,
) -> np.ndarray | None:
    """Raise :class:`wire.WireError` naming what is wrong. A packed DGM generator (its free
    elements only) is replaced in ``content`` by the whole one, made with the server's own
    frozen elements, before any check, bound or aggregation sees it. Returns the reply's
    embedding release, checked (None: it carries none)."""
    wire.check_message(content, protocol.TRAIN_REPLY)  # the declared records only
    wire.site_id_of(content)  # a malformed site record is a WireError
    metrics = wire.scalar_metrics(content.metric_records[wire.METRICS])
    for key, value in metrics.items():
        if not math.isfinite(value):
            raise wire.WireError(f"metric {key!r} is {value!r}, not a finite number")
    if metrics.get("num-examples", -1.0) < 0:
        raise wire.WireError("reply metrics lack a non-negative num-examples")
    pid = metrics.get("partition-id", 0.0)
    if pid < 0 or pid != int(pid):
        raise wire.WireError(f"partition-id {pid!r} is not a non-negative integer")
    scholar, release = wire.without_embedding(wire.scholar_of(content))
    if release is not None:  # generator.kind = "embedding" (server.embedding_sum)
        check_release(release, embedding_shape)
    scholar = wire_packed.unpack_scholar(scholar, generator)
    content.array_records.update(wire.part_records(scholar))
    wire.check_scholar_arrays(scholar, solver, generator)
    return release
