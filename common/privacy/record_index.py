"""The site folder's index of spent records: which site id each spent record belongs to.

A budget belongs to records, not to a name. Every site id that has trained under DP in a
site folder keeps the fingerprints of all records it ever spent budget on in
``<privacy root>/_records/<site id>.u64`` (sorted uint64, :mod:`common.privacy.records`),
written before the ledger records the spend. A run that would train on records another
site id of the same folder has spent on is refused (renaming a site does not buy a fresh
budget), and a site id whose ledger folder was deleted still has its index entry: it is
refused as a site that has trained before, never restarted from epsilon 0.

What it cannot prevent, and the docs say so: the same records copied to another machine,
or the whole site folder deleted, are an operator's acts outside any software's reach.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from common.fileio import atomic_write_bytes
from common.privacy import records as fp

INDEX = "_records"  # not a valid site id (those start with a letter or digit)


def index_path(root: Path, site_id: str) -> Path:
    return Path(root) / INDEX / f"{site_id}.u64"


def spent_records(root: Path, site_id: str) -> np.ndarray:
    path = index_path(root, site_id)
    if not path.is_file():
        return np.zeros(0, dtype=np.uint64)
    return np.frombuffer(path.read_bytes(), dtype="<u8").astype(np.uint64)


def claimed_elsewhere(root: Path, site_id: str, records: np.ndarray) -> dict[str, int]:
    """Other site ids of this folder that spent budget on any of ``records``: id -> count."""
    out: dict[str, int] = {}
    folder = Path(root) / INDEX
    if not folder.is_dir():
        return out
    for path in sorted(folder.glob("*.u64")):
        other = path.name[: -len(".u64")]
        if other == site_id:
            continue
        shared = fp.overlap(spent_records(root, other), records)
        if shared:
            out[other] = shared
    return out


def add_spent(root: Path, site_id: str, records: np.ndarray) -> None:
    """Add ``records`` to ``site_id``'s entry (atomic; under that site's ledger lock)."""
    merged = fp.union([spent_records(root, site_id), records])
    atomic_write_bytes(index_path(root, site_id), np.ascontiguousarray(merged, "<u8").tobytes())
