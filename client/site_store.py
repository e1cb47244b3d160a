"""What a site keeps on its own disk during a run, keyed by its site id and the run key.

A ClientApp may run in a fresh process for every message (deployment), a SuperNode may be
killed and restarted, and a resumed run has a new Flower run id (Flower's ``Context.state``
is per run and dies with it), so what a site needs from one round to the next lives here:

- ``critic.pt``: the critic (VAE encoder / GAN discriminator); it never leaves the site.
- ``replay.pt``: the replay payload of the current task, as received once per task.
- ``generator_base.pt`` (DGM): the whole generator as last received; within a task the
  server then sends only its free elements (masked transfer down) and the site fills in
  the frozen ones from here (:func:`common.wire_packed.unpack_with_base`).
- ``memory.pt``: what a regularisation method keeps between rounds and tasks (EWC: the
  Fisher information of each finished task, from the site's records); it never leaves.
- ``reply.pt``: the last reply this site sent and the digest of the instruction it answered.
  When the same instruction arrives again (the server was killed after the site answered
  and resumed from the round before) the site sends that reply again instead of training
  again: the release is the same one, so no privacy budget is spent twice.

Layout: ``<site dir>/runs/<run key>/<site id>/`` (:func:`common.sitestate.site_dir`);
every file is written atomically (:func:`common.fileio.atomic_torch_save`). A critic or
reply that cannot be read (a disk fault, a foreign file) is moved aside and the site goes
on without it; an unreadable replay is an error naming the file.
"""

from __future__ import annotations

import hashlib
import logging
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from common.fileio import atomic_torch_save
from common.replay import ReplayPayload
from common.sitestate import check_site_id

log = logging.getLogger("fedreplay.client")
# what going on without an unreadable file costs
DISPOSABLE = {
    "critic.pt": "the critic starts afresh: a few rounds of weaker generator training",
    "reply.pt": "a repeated instruction is trained again; its steps are paid in the ledger",
    "replay.pt": "this round fails naming the missing replay, and the server sends it again",
    "generator_base.pt": "this round fails naming the missing generator; the server resends it",
    "memory.pt": "EWC holds nothing of the finished tasks at this site (no Fisher information)",
}
RUN_KEY = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")


@dataclass(frozen=True)
class CachedReply:
    server_round: int
    digest: str  # of the instruction it answered (instruction_digest)
    scholar: dict[str, np.ndarray]  # the arrays sent, by wire key
    metrics: dict[str, float]


def instruction_digest(
    config: Mapping[str, Any], arrays: Mapping[str, np.ndarray], *, run_key: str
) -> str:
    """SHA-256 of a training instruction: the run, its config (task, round, iterations, ...)
    and every byte of the global arrays it carries."""
    h = hashlib.sha256(run_key.encode())
    for key in sorted(config):
        h.update(f"{key}={config[key]!r};".encode())
    for key in sorted(arrays):
        value = np.ascontiguousarray(arrays[key])
        h.update(f"{key}:{value.dtype}:{value.shape};".encode())
        h.update(value.tobytes())
    return h.hexdigest()


class SiteStore:
    def __init__(self, root: Path, *, site_id: str, run_key: str) -> None:
        if not RUN_KEY.match(run_key):
            raise ValueError(f"run key {run_key!r} must be 1-64 letters, digits, '_', '.', '-'")
        self.path = root / "runs" / run_key / check_site_id(site_id)

    def _load(self, name: str) -> Any:
        """The file's contents (None: none yet). Unreadable (torn, foreign): every file here
        can be done without, so it is moved aside to ``<name>.unreadable`` for inspection
        and the site goes on without it (:data:`DISPOSABLE` says at what cost): one bad
        file never keeps the site out for the rest of the run."""
        path = self.path / name
        if not path.is_file():
            return None
        try:
            return torch.load(path, map_location="cpu", weights_only=True)
        except Exception as exc:
            aside = path.with_name(name + ".unreadable")
            path.replace(aside)
            log.warning(
                "the site's run state %s was unreadable (%s); moved to %s, going on without "
                "it (%s)",
                path,
                type(exc).__name__,
                aside.name,
                DISPOSABLE[name],
            )
            return None

    # --- critic ------------------------------------------------------------------------
    def critic(self) -> dict[str, torch.Tensor] | None:
        return self._load("critic.pt")

    def save_critic(self, state: Mapping[str, torch.Tensor]) -> None:
        atomic_torch_save({k: v.detach().cpu() for k, v in state.items()}, self.path / "critic.pt")

    # --- replay ---------------------------------------------------------------------------
    def replay(self) -> ReplayPayload | None:
        d = self._load("replay.pt")
        return None if d is None else ReplayPayload.from_dict(d)

    def save_replay(self, payload: ReplayPayload) -> None:
        atomic_torch_save(payload.to_dict(), self.path / "replay.pt")

    # --- the whole generator last received (DGM) ------------------------------------------
    def generator_base(self) -> dict[str, np.ndarray] | None:
        d = self._load("generator_base.pt")
        return None if d is None else {k: v.numpy() for k, v in d.items()}

    def save_generator_base(self, arrays: Mapping[str, np.ndarray]) -> None:
        state = {k: torch.from_numpy(np.array(v)) for k, v in arrays.items()}
        atomic_torch_save(state, self.path / "generator_base.pt")

    # --- a regularisation method's memory (common.methods) ---------------------------------
    def memory(self) -> dict[str, torch.Tensor]:
        return dict(self._load("memory.pt") or {})

    def save_memory(self, memory: Mapping[str, torch.Tensor]) -> None:
        atomic_torch_save({k: v.detach().cpu() for k, v in memory.items()}, self.path / "memory.pt")

    # --- the last reply ----------------------------------------------------------------------
    def reply_for(self, digest: str) -> CachedReply | None:
        """The reply sent to the instruction with this digest, if it was the last one."""
        d = self._load("reply.pt")
        if d is None or d["digest"] != digest:
            return None
        return CachedReply(
            int(d["round"]),
            str(d["digest"]),
            {k: v.numpy() for k, v in d["scholar"].items()},
            {k: float(v) for k, v in d["metrics"].items()},
        )

    def save_reply(self, reply: CachedReply) -> None:
        atomic_torch_save(
            {
                "round": reply.server_round,
                "digest": reply.digest,
                "scholar": {k: torch.from_numpy(np.array(v)) for k, v in reply.scholar.items()},
                "metrics": dict(reply.metrics),
            },
            self.path / "reply.pt",
        )
