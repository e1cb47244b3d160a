"""Masked aggregation of a DGM generator: what finished tasks reserved is the server's.

Sites train only free weights (their gradients of reserved weights are zero) and the
current task's mask embeddings, and send only those (:func:`common.wire.packed_generator`);
the server fills in its own reserved weights and mask state (usage bit sets, class -> task
map, number of finished tasks) before validation (:func:`common.wire.unpack_scholar`), so
a site cannot move what finished tasks use. After the round's rule has combined the
bounded updates, :func:`keep_reserved` puts every frozen element back to the server's own
bits once more (a mean of equal float32 values need not round back to the same bits). The
averaged embeddings of the current task are what the server binarises at the task's end
(:meth:`common.models.dgm.DGMGenerator.end_task`): the federated mask aggregation.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from common import protocol
from common.models.dgm import DGMGenerator

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
