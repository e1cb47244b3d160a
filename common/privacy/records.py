"""Fingerprints of a site's training records: which records a privacy budget is about.

A record's fingerprint is an 8-byte BLAKE2b digest of its input's bytes *before* any
pixel permutation, and of nothing else: not its label, not its position, not the site id
it is trained under. A permuted copy, a re-inserted canary, the same image under another
label (a reordered ``data.classes``) and the same records under a renamed site are the same
records, and keep what they spent. (Two records with identical inputs count as one: their
spend is composed, which over-counts, never under-counts.) Fingerprints stay on the site's
disk (its privacy ledger and the site folder's record index); only counts and equality are
ever used.

Limit, stated: records are identified by their bytes after loading. Data re-encoded
differently (another resize, another file format) counts as new records: keep a site's
data pipeline fixed across runs (docs/privacy-audit.md, "Lifetime budgets").
"""

from __future__ import annotations

import base64
import hashlib
from collections.abc import Iterable

import numpy as np

from common.data.types import Split

DIGEST_BYTES = 8


def record_digests(split: Split) -> np.ndarray:
    """Sorted unique uint64 fingerprints of the records of ``split`` ((k,), k <= len): of
    their inputs alone (labels are not part of a record's identity here)."""
    if len(split) == 0:
        return np.zeros(0, dtype=np.uint64)
    x = split.base_x[split.index].reshape(len(split), -1).contiguous().numpy()
    out = np.empty(len(split), dtype=np.uint64)
    for i, row in enumerate(x):
        h = hashlib.blake2b(row.tobytes(), digest_size=DIGEST_BYTES)
        out[i] = int.from_bytes(h.digest(), "little")
    return np.unique(out)


def union(sets: Iterable[np.ndarray]) -> np.ndarray:
    parts = list(sets)
    return np.unique(np.concatenate(parts)) if parts else np.zeros(0, dtype=np.uint64)


def overlap(a: np.ndarray, b: np.ndarray) -> int:
    """How many records two sorted fingerprint sets share."""
    return int(np.intersect1d(a, b, assume_unique=True).size)


def digest_of(records: np.ndarray) -> str:
    """One hex digest of a whole fingerprint set (equality of record sets)."""
    return hashlib.sha256(np.ascontiguousarray(records, dtype="<u8").tobytes()).hexdigest()


def encode(records: np.ndarray) -> str:
    return base64.b64encode(np.ascontiguousarray(records, dtype="<u8").tobytes()).decode()


def decode(text: str) -> np.ndarray:
    return np.frombuffer(base64.b64decode(text), dtype="<u8").astype(np.uint64)
