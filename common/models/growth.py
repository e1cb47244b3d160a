"""DGM's dynamic expansion: after each task every layer grows by what the task's masks newly
reserved, so the free capacity a new task finds stays (about) constant.

    DGMa: a layer gains as many units as its mask newly reserved.
    DGMw: a layer gains the units that hold as many weights as its masks newly reserved
          (the output layer cannot widen the image: its claim goes to the layer before).

Growth is deterministic (new weights drawn from a generator seeded by the run's seed and
the task), keeps every existing value, and gives new units no use by any finished task, so
every finished task draws exactly what it drew before. The server grows the aggregated
generator at the task boundary; a site's generator takes the server's shapes when it loads
the server's state (:func:`fit_state`).
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import torch
from torch import Tensor

from common.models.dgm import DGMGenerator


def extra_units(gen: DGMGenerator, claimed: Mapping[str, int]) -> tuple[int, int]:
    """(units for c1, units for c2) that the newly ``claimed`` elements call for."""
    if gen.variant == "activations":
        return claimed["fc"], claimed["up"]
    c1, _ = gen.widths
    spatial = gen.h4 * gen.w4
    per_c1 = (gen.latent_dim + gen.num_classes + 1) * spatial  # fc weights + bias per channel
    per_c2 = c1 * 16 + 1 + gen.shape[0] * 16  # up weights + bias, out weights per channel
    fc = claimed["fc_weight"] + claimed["fc_bias"]
    rest = claimed["up_weight"] + claimed["up_bias"] + claimed["out_weight"] + claimed["out_bias"]
    return math.ceil(fc / per_c1), math.ceil(rest / per_c2)


def widen_(gen: DGMGenerator, widths: tuple[int, int]) -> None:
    """Grow ``gen`` in place to ``widths``; existing values keep their place, new weights
    are drawn deterministically, new usage is 0 (no finished task uses a new element)."""
    old_widths = gen.widths
    if widths == old_widths:
        return
    if any(n < o for n, o in zip(widths, old_widths, strict=True)):
        raise ValueError(f"a DGM generator only grows: {old_widths} -> {widths}")
    old = {k: v.detach().clone() for k, v in gen.state_dict().items()}
    device = next(gen.parameters()).device
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(gen.seed * 1000 + gen.current_task + 7919)
        gen._build(*widths)
    gen.to(device)
    new = gen.state_dict()
    with torch.no_grad():
        for key, value in old.items():  # old values into the leading slice of each tensor
            new[key][tuple(slice(0, s) for s in value.shape)] = value.to(new[key].device)


def grow_(gen: DGMGenerator, claimed: Mapping[str, int]) -> tuple[int, int]:
    """Grow by what the finished task ``claimed``; returns the new widths."""
    a, b = extra_units(gen, claimed)
    widths = (gen.widths[0] + a, gen.widths[1] + b)
    widen_(gen, widths)
    return widths


def widths_of(gen: DGMGenerator, state: Mapping[str, Tensor]) -> tuple[int, int]:
    """The widths a state dict of ``gen``'s kind was saved with."""
    try:
        c1 = int(state["fc.weight"].shape[0]) // (gen.h4 * gen.w4)
        c2 = int(state["up.weight"].shape[1])
    except KeyError as exc:
        raise ValueError(f"not a DGM generator's state: no {exc.args[0]!r}") from None
    return c1, c2


def fit_state(gen: DGMGenerator, state: Mapping[str, Tensor]) -> None:
    """Widen ``gen`` to the shapes of ``state`` (the server's grown generator) before a
    strict load; a smaller state is refused (a generator never shrinks)."""
    widen_(gen, widths_of(gen, state))
