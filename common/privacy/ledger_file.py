"""The ledger's file: where it lives, its format version, reading and checking it.

A missing ledger of a site that has trained before (its backup or ``TRAINED`` marker is
there) is an error, never a fresh budget; an unreadable one, one of another format, site,
delta or accountant likewise (:class:`PrivacyStateError`, with the fix named).
"""

from __future__ import annotations

import base64
import hashlib
import json
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from common.config import DPConfig
from common.fileio import atomic_write_bytes
from common.privacy.record_index import index_path

STATE_VERSION = 4  # 4: records identified by their inputs alone (3: input and label)
LEDGER, BACKUP, MARKER, LOCK = "ledger.json", "ledger.json.bak", "TRAINED", "ledger.lock"
RELEASES = "releases"  # long releases (embeddings): one file each, named by SHA-256


class PrivacyStateError(RuntimeError):
    """The saved privacy state is missing, unreadable or does not match this run."""


def has_spent(root: Path, site_id: str) -> bool:
    """Whether ``site_id`` keeps a lifetime ledger under ``root`` (or traces of one): its
    records have spent privacy budget."""
    directory = Path(root) / site_id
    traces = [directory / name for name in (LEDGER, BACKUP, MARKER)]
    return any(p.exists() for p in [*traces, index_path(root, site_id)])


def read_state(directory: Path, site_id: str, dp: DPConfig | None) -> dict[str, Any]:
    """The saved ledger of ``site_id`` in ``directory``, checked; a new one for a site that
    never trained (``dp`` given); an error naming the fix for anything else."""
    path = directory / LEDGER
    if not path.is_file() and dp is None:
        raise PrivacyStateError(f"site {site_id!r} has no privacy ledger at {path}")
    if not path.is_file():
        assert dp is not None
        indexed = index_path(directory.parent, site_id)
        traces = [str(p) for p in (directory / BACKUP, directory / MARKER, indexed) if p.exists()]
        if traces:
            raise PrivacyStateError(
                f"site {site_id!r} has trained before ({', '.join(traces)} in {directory}) "
                f"but its privacy ledger {path.name} is missing; refusing to start it from "
                f"epsilon 0. Restore the ledger (cp {BACKUP} {LEDGER} in that folder, or "
                "from your backups) and start the site again"
            )
        return new_state(site_id, dp)
    try:
        state = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise PrivacyStateError(
            f"privacy ledger {path} of site {site_id!r} is unreadable ({exc}); refusing "
            f"to train rather than forget what this site has spent. Restore it from "
            f"{BACKUP} in that folder or from your backups"
        ) from None
    if state.get("version") == 3:
        raise PrivacyStateError(
            f"privacy ledger {path} has format version 3, which identified a record by its "
            "input and its label; this fedreplay identifies records by their inputs alone (so "
            "relabelled records keep their spend) and cannot map the old fingerprints onto "
            "the new ones: refusing to guess what was spent. Keep this site on the fedreplay "
            "that wrote the ledger, or retire the records it covers"
        )
    if state.get("version") != STATE_VERSION:
        raise PrivacyStateError(
            f"privacy ledger {path} has format version {state.get('version')!r}; this "
            f"fedreplay reads version {STATE_VERSION}; refusing to guess what was spent"
        )
    if state.get("site_id") != site_id:
        raise PrivacyStateError(
            f"privacy ledger {path} belongs to site {state.get('site_id')!r}, not {site_id!r}"
        )
    saved = (state["delta"], state["accountant"])
    if dp is not None and saved != (dp.delta, dp.accountant):
        raise PrivacyStateError(
            f"site {site_id!r} accounts its lifetime at (delta, accountant) = {saved}; this "
            f"run asks for {(dp.delta, dp.accountant)}. A site's delta and accountant are "
            "fixed for its lifetime: set dp.delta and dp.accountant to the saved values"
        )
    return dict(state)


def new_state(site_id: str, dp: DPConfig) -> dict[str, Any]:
    return {
        "version": STATE_VERSION,
        "site_id": site_id,
        "created": time.time(),
        "delta": dp.delta,
        "accountant": dp.accountant,
        "budget": dp.target_epsilon,
        "budget_log": [],
        "partitions": {},
        "runs": {},
        "ledger": [],
    }


def write_release(directory: Path, raw: bytes) -> dict[str, str]:
    """Keep a long release (float32 bytes) in its own file under ``releases/``, named by
    its SHA-256; the ledger's entry for it. Written before the ledger is, so a saved
    ledger never names a file that is not there (a crash in between leaves a file that no
    ledger names, which is harmless)."""
    digest = hashlib.sha256(raw).hexdigest()
    atomic_write_bytes(directory / RELEASES / f"{digest}.f32", raw)
    return {"file": f"{RELEASES}/{digest}.f32", "sha256": digest}


def read_release(directory: Path, task: int, entry: Mapping[str, str]) -> bytes:
    """A long release's bytes from its file, checked against its digest (ledgers written
    before the files kept it inline, base64)."""
    if "float32" in entry:
        return base64.b64decode(entry["float32"])
    path = directory / entry["file"]
    raw = path.read_bytes() if path.is_file() else None
    if raw is None or hashlib.sha256(raw).hexdigest() != entry["sha256"]:
        raise PrivacyStateError(
            f"task {task}'s release was spent but its file {path} is "
            f"{'missing' if raw is None else 'altered'}: the site cannot send it again, and "
            "releasing anew would spend the task's budget twice. Restore the file from "
            f"backups (its SHA-256 is {entry['sha256']})"
        )
    return raw
