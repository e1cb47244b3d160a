"""The wire format's packed scholar (masked transfer of a DGM generator, down and up):
the encoding of :mod:`common.masked_transfer` in records (docs/protocol.md). A receiver
that holds the frozen generator elements gets only the free ones and the digest of the
frozen ones (``generator-base`` in the train config); :func:`unpack_with_base` makes the
scholar whole at a site, :func:`unpack_scholar` at the server."""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import torch
from flwr.app import Array, ArrayRecord, ConfigRecord
from torch import nn

from common import masked_transfer as masked
from common import protocol
from common.wire import GEN, WireError, load_module

GENERATOR_BASE = "generator-base"  # train config: the generator travels packed (its digest)


def _generator_state(record: ArrayRecord) -> dict[str, np.ndarray]:
    return {k.split(".", 1)[1]: v.numpy() for k, v in record.items() if protocol.part_of(k) == GEN}


def _with_generator(record: ArrayRecord, state: Mapping[str, np.ndarray]) -> ArrayRecord:
    out = {k: v for k, v in record.items() if protocol.part_of(k) != GEN}
    out.update({f"{GEN}.{n}": Array(np.ascontiguousarray(v)) for n, v in state.items()})
    return ArrayRecord(out)  # type: ignore[arg-type]


def pack_scholar(record: ArrayRecord, generator: nn.Module | None) -> ArrayRecord:
    """Masked transfer down: the global scholar with its DGM generator cut to the free
    elements (``generator``, the server's, says which), for a site that holds the frozen
    ones (:func:`unpack_with_base`). Without frozen elements: ``record`` itself."""
    frozen = masked.frozen_of(generator)
    if not frozen:
        return record
    return _with_generator(record, masked.pack(_generator_state(record), frozen))


def frozen_digest(record: ArrayRecord, generator: nn.Module | None) -> str:
    """Digest of the frozen generator elements in ``record`` ("" without any)."""
    try:
        return masked.frozen_digest(_generator_state(record), masked.frozen_of(generator))
    except masked.PackError as exc:
        raise WireError(str(exc)) from None


def unpack_scholar(record: ArrayRecord, generator: nn.Module | None) -> ArrayRecord:
    """A packed scholar made whole: frozen elements from ``generator`` (the receiver's
    own), the sent values in the free places. A WireError names any generator array whose
    key, dtype or number of values does not fit."""
    frozen = masked.frozen_of(generator)
    if not frozen:
        return record
    assert generator is not None
    reference = masked.module_state(generator)
    try:
        return _with_generator(record, masked.unpack(_generator_state(record), reference, frozen))
    except masked.PackError as exc:
        raise WireError(str(exc)) from None


def packed_instruction(
    arrays: ArrayRecord, config: ConfigRecord, generator: nn.Module | None
) -> tuple[ArrayRecord, ConfigRecord] | None:
    """The train instruction's scholar and config for a site that holds the task's frozen
    generator elements (the config names their digest); None when nothing is frozen."""
    digest = frozen_digest(arrays, generator)
    if not digest:
        return None
    return pack_scholar(arrays, generator), ConfigRecord({**dict(config), GENERATOR_BASE: digest})


def unpack_with_base(
    record: ArrayRecord, base: ArrayRecord | None, generator: nn.Module, *, digest: str
) -> ArrayRecord:
    """A packed instruction made whole at a site: ``base`` is the whole generator the site
    received earlier in the task, ``generator`` the site's module (it takes the base's
    shapes and masks). A WireError when the site holds no base, or one whose frozen
    elements are not the server's (``digest``): the server then sends it whole."""
    if base is None:
        raise WireError(
            "the server sent the generator packed (free elements only), but this site holds "
            "no whole generator of the task to fill in the frozen ones; it needs the whole "
            "generator (the server sends it in the next round)"
        )
    state = {k: torch.from_numpy(np.array(v)) for k, v in _generator_state(base).items()}
    load_module(generator, state, what="stored generator", adopt_shapes=True)
    held = frozen_digest(base, generator)
    if held != digest:
        raise WireError(
            f"the generator this site holds has frozen elements {held[:12]}..., the server's "
            f"packed instruction assumes {digest[:12]}...: it needs the whole generator"
        )
    return unpack_scholar(record, generator)
