"""DGM at the server (``method = "dgm"``): the masks are the server's; what finished tasks
reserved stays the server's (masked aggregation), and a task's end binarises and grows.

Sites train only free weights (their gradients of reserved weights are zero) and the
current task's mask embeddings, and send only those (:func:`common.wire.packed_generator`);
the server fills in its own reserved weights and mask state (usage bit sets, class -> task
map, number of finished tasks) before validation (:func:`common.wire_packed.unpack_scholar`), so
a site cannot move what finished tasks use. After the round's rule has combined the
bounded updates, :func:`keep_reserved` puts every frozen element back to the server's own
bits once more (a mean of equal float32 values need not round back to the same bits). The
averaged embeddings of the current task are what the server binarises at the task's end
(:meth:`common.models.dgm.DGMGenerator.end_task`): the federated mask aggregation.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING

import numpy as np

from common import protocol, wire
from common.models.dgm import DGMGenerator
from common.models.growth import grow_
from server.methods.base import ServerSide

if TYPE_CHECKING:  # (the run calls the hooks with itself; nothing here imports it)
    from server.run.federation import FederatedRun

log = logging.getLogger("fedreplay.server")

Arrays = dict[str, np.ndarray]
PREFIX = f"{protocol.GENERATOR.name}."


def frozen_elements(generator: DGMGenerator) -> dict[str, np.ndarray]:
    """Wire key -> boolean array, True where the element is the server's (a reserved weight,
    or mask state)."""
    return {PREFIX + k: v.cpu().numpy() for k, v in generator.frozen_elements().items()}


def keep_reserved(
    current: Mapping[str, np.ndarray], aggregated: Arrays, generator: DGMGenerator
) -> Arrays:
    """``aggregated`` with every reserved weight and all mask state of ``generator`` taken
    from ``current`` (the global model the round started from)."""
    out = dict(aggregated)
    for key, frozen in frozen_elements(generator).items():
        if frozen.any():
            out[key] = np.where(frozen, current[key], aggregated[key]).astype(np.float32)
    return out


def consolidate(generator: DGMGenerator, classes: Sequence[int], *, task: int) -> dict[str, int]:
    """The end of task ``task`` (its ``classes``): binarise the aggregated masks into the
    usage sets, grow every layer by what they reserved; returns the
    generator's size after it (:meth:`~common.models.dgm.DGMGenerator.capacity`)."""
    claimed = generator.end_task(list(classes))
    before = generator.widths
    grow_(generator, claimed)
    size = generator.capacity()
    log.info(
        "DGM after task %d: reserved %s, widths %s -> %s, %d parameters",
        task + 1,
        ", ".join(f"{k} +{n}" for k, n in claimed.items()),
        before,
        generator.widths,
        size["parameters"],
    )
    return size


class DGMSide(ServerSide):
    """DGM (``method = "dgm"``): the server owns the masks. At a task's start it records
    the shapes of what a site sends (the elements free in the task, packed); at its end it
    binarises the task's masks and grows the generator (:func:`server.methods.dgm.
    consolidate`), which becomes the global model and the reference every reply is checked
    against."""

    def __init__(self, generator: DGMGenerator) -> None:
        super().__init__(generator)
        self.generator = generator

    def begin_task(self, run: FederatedRun, t: int) -> None:
        if len(run.state.upload_shapes) == t:  # (a resumed task has them from its checkpoint)
            shapes = wire.packed_shapes(self.generator)
            run.state.upload_shapes.append({k: list(v) for k, v in shapes.items()})

    def end_task(self, run: FederatedRun, t: int) -> None:
        size = consolidate(self.generator, list(run.stream.tasks[t].classes), task=t)
        run.state.generator_sizes.append(size)
        run.arrays = wire.scholar_record(run.solver, self.generator)
