"""Fingerprints of a site's training records: which records a privacy budget is about.

A record is an (input, label) pair; its fingerprint is an 8-byte BLAKE2b digest of the
input's bytes *before* any pixel permutation plus its label, so a permuted copy or a
re-inserted canary is the same record, while the same image under another label is
another record (add/remove adjacency removes one pair). Fingerprints stay on the site's
disk (its privacy ledger); only counts and equality are ever used.

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
    """Sorted unique uint64 fingerprints of the records of ``split`` ((k,), k <= len)."""
    if len(split) == 0:
        return np.zeros(0, dtype=np.uint64)
    x = split.base_x[split.index].reshape(len(split), -1).contiguous().numpy()
    y = split.base_y[split.index].numpy().astype(np.int64)
    out = np.empty(len(split), dtype=np.uint64)
    for i, (row, label) in enumerate(zip(x, y, strict=True)):
        h = hashlib.blake2b(row.tobytes(), digest_size=DIGEST_BYTES)
        h.update(int(label).to_bytes(8, "little", signed=True))
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
