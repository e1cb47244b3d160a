"""Masked aggregation of a DGM generator: what finished tasks reserved is the server's.

Sites train only free weights (their gradients of reserved weights are zero) and the
current task's mask embeddings. An honest site's update is therefore zero wherever a
finished task reserved a weight, and the mask state (usage bit sets, class -> task map,
number of finished tasks) never changes within a task. The server does not take a site's
word for that: after the round's rule has combined the bounded updates, every reserved
weight and all mask state are put back to the server's own values, so a hostile or broken
site cannot move what finished tasks use (their samples stay exactly as they were). The
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
    """Wire key -> boolean array, True where the element is the server's (reserved weight,
    or mask state), for every array of the generator that holds any."""
    out: dict[str, np.ndarray] = {}
    scales = generator.reserved_scale()
    trainable = {name for name, _ in generator.named_parameters()}
    for name, value in generator.state_dict().items():
        if name in scales:
            out[PREFIX + name] = (scales[name] == 0).cpu().numpy()
        elif name not in trainable:  # buffers: usage sets, class -> task, tasks done
            out[PREFIX + name] = np.ones(tuple(value.shape), dtype=bool)
    return out


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


def free_share(generator: DGMGenerator) -> float:
    """The share of the generator's values that change within a task (free weights and
    the current embeddings): what a masked transfer would need to send."""
    frozen = frozen_elements(generator)
    total = sum(v.numel() for v in generator.state_dict().values())
    fixed = sum(int(f.sum()) for f in frozen.values())
    return (total - fixed) / max(total, 1)
