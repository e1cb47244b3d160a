"""What the server checks of a site's training reply before anything reads it: only the
declared records, finite metrics, a sane count and partition id, and every array of the
scholar with the registered keys, shapes and dtypes (a DGM generator made whole first).
A reply that passes is decoded here, once, into a :class:`TrainReply`; nothing after this
edge reads the message's records again."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from flwr.app import ArrayRecord, RecordDict
from torch import nn

from common import protocol, wire, wire_packed


@dataclass(frozen=True)
class TrainReply:
    """A site's training reply, checked and decoded once."""

    site_id: str | None  # None: the reply declares none (a simulation without site ids)
    metrics: dict[str, float]  # finite, with a non-negative num-examples
    scholar: ArrayRecord  # every part's arrays under "<part>.<name>", DGM made whole
    release: np.ndarray | None  # generator.kind = "embedding": the task's release, checked

    def arrays(self, keys: list[str]) -> dict[str, np.ndarray]:
        """The scholar's arrays under ``keys`` (the global model's), as NumPy."""
        return {k: self.scholar[k].numpy() for k in keys}


def check_train_reply(
    content: RecordDict,
    *,
    solver: nn.Module,
    generator: nn.Module | None,
    embedding_shape: tuple[int, int] | None = None,
) -> TrainReply:
    """The reply decoded, or a :class:`wire.WireError` naming what is wrong. A packed DGM
    generator (its free elements only) is made whole with the server's own frozen elements
    before any check, bound or aggregation sees it."""
    wire.check_message(content, protocol.TRAIN_REPLY)  # the declared records only
    site_id, metrics = _identity_and_metrics(content)
    scholar, release = wire.without_embedding(wire.scholar_of(content))
    if release is not None:  # generator.kind = "embedding" (server.methods.embedding)
        check_release(release, embedding_shape)
    scholar = wire_packed.unpack_scholar(scholar, generator)
    wire.check_scholar_arrays(scholar, solver, generator)
    return TrainReply(site_id, metrics, scholar, release)


def check_secure_reply(content: RecordDict, *, global_arrays: ArrayRecord) -> TrainReply:
    """A reply of a SecAgg+ round (fed.aggregation = "secure") decoded, once its masked
    release has gone into the sum (server.run.secure_aggregation): its site id and
    metrics. It carries no model: the ridge solver a site would send back is the server's
    own, ``global_arrays``."""
    wire.check_message(content, protocol.SECURE_SUMMED_REPLY)
    site_id, metrics = _identity_and_metrics(content)
    return TrainReply(site_id, metrics, global_arrays, None)


def _identity_and_metrics(content: RecordDict) -> tuple[str | None, dict[str, float]]:
    site_id = wire.site_id_of(content)  # a malformed site record is a WireError
    metrics = wire.scalar_metrics(content.metric_records[wire.METRICS])
    for key, value in metrics.items():
        if not math.isfinite(value):
            raise wire.WireError(f"metric {key!r} is {value!r}, not a finite number")
    if metrics.get("num-examples", -1.0) < 0:
        raise wire.WireError("reply metrics lack a non-negative num-examples")
    pid = metrics.get("partition-id", 0.0)
    if pid < 0 or pid != int(pid):
        raise wire.WireError(f"partition-id {pid!r} is not a non-negative integer")
    return site_id, metrics


def check_release(release: np.ndarray, shape: tuple[int, int] | None) -> None:
    """Raise :class:`wire.WireError` naming what is wrong with a received release."""
    if shape is None:
        raise wire.WireError("an embedding release in a run whose generator.kind is not embedding")
    if tuple(release.shape) != tuple(shape):
        raise wire.WireError(f"embedding has shape {list(release.shape)}, expected {list(shape)}")
    if release.dtype != np.float32:
        raise wire.WireError(f"embedding has dtype {release.dtype}, expected float32")
    if not np.isfinite(release).all():
        raise wire.WireError("embedding holds NaN or infinite values")
