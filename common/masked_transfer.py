"""Masked transfer of a DGM generator: within a task only the elements free in it travel.

A DGM generator's weights reserved by finished tasks, and its mask state, cannot change
within a task (common.models.dgm ``frozen_elements``). Whoever already holds them needs
only the free elements: a site sends only those up (the server fills in its own), and a
site that received the generator whole earlier in the task gets only those down (it fills
in its own, after checking by digest that they are the server's).

Plain numpy on state dicts (state key -> array); :mod:`common.wire` puts them on the wire.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping

import numpy as np
from torch import nn

from common.models.dgm import DGMGenerator

State = Mapping[str, np.ndarray]


class PackError(ValueError):
    """Packed values that do not fit the generator's free elements."""


def frozen_of(generator: nn.Module | None) -> dict[str, np.ndarray]:
    """State key -> boolean array, True where frozen in the current task (DGM only)."""
    if not isinstance(generator, DGMGenerator):
        return {}
    return {k: f.cpu().numpy() for k, f in generator.frozen_elements().items()}


def module_state(module: nn.Module) -> dict[str, np.ndarray]:
    return {n: t.detach().cpu().float().numpy() for n, t in module.state_dict().items()}


def pack(state: State, frozen: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Per key, the free elements flattened in row-major order; a key frozen everywhere is
    left out; a key without frozen elements travels whole."""
    out = {}
    for name, value in state.items():
        f = frozen.get(name)
        if f is None:
            out[name] = np.array(value, dtype=np.float32)
        elif not bool(f.all()):
            out[name] = np.array(value[~f], dtype=np.float32)
    return out


def unpack(
    sent: State, reference: State, frozen: Mapping[str, np.ndarray]
) -> dict[str, np.ndarray]:
    """The whole state: ``reference``'s frozen elements, ``sent``'s values in the free
    places. PackError names a key, dtype or number of values that does not fit."""
    expected = {n for n in reference if n not in frozen or not bool(frozen[n].all())}
    if set(sent) != expected:
        raise PackError(
            f"packed generator: missing {sorted(expected - set(sent))[:5]}, "
            f"not expected {sorted(set(sent) - expected)[:5]}"
        )
    out = {}
    for name, ref in reference.items():
        f, full = frozen.get(name), np.array(ref, dtype=np.float32)
        if f is None or not bool(f.all()):
            values = sent[name]
            if values.dtype != np.float32:
                raise PackError(f"array {name!r} has dtype {values.dtype}, expected float32")
            if f is None:
                full = values
            else:
                if values.shape != (int((~f).sum()),):
                    raise PackError(
                        f"packed {name!r} has shape {list(values.shape)}, expected "
                        f"[{int((~f).sum())}]: the elements free in this task"
                    )
                full[~f] = values
        out[name] = np.ascontiguousarray(full)
    return out


def frozen_digest(state: State, frozen: Mapping[str, np.ndarray]) -> str:
    """SHA-256 of the frozen elements of ``state`` (keys, shapes, values): what a site must
    hold to take the generator packed. "" without frozen elements."""
    if not frozen:
        return ""
    h = hashlib.sha256()
    for name, f in sorted(frozen.items()):
        if name not in state:
            raise PackError(f"generator state lacks {name!r}")
        values = state[name]
        if values.shape != f.shape:
            raise PackError(f"{name!r} has shape {list(values.shape)}, expected {list(f.shape)}")
        h.update(f"{name}:{values.shape};".encode())
        h.update(np.ascontiguousarray(values[f], dtype=np.float32).tobytes())
    return h.hexdigest()
