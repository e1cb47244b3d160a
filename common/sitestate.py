"""Where a site keeps what never leaves it: privacy state and egress logs.

``$FEDREPLAY_SITE_DIR`` if set, else ``~/.cache/fedreplay/sites``. In simulation all
sites share one machine and are told apart by their site ids.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from pathlib import Path

SITE_DIR_ENV = "FEDREPLAY_SITE_DIR"


def site_dir() -> Path:
    configured = os.environ.get(SITE_DIR_ENV, "")
    return Path(configured).expanduser() if configured else Path.home() / ".cache/fedreplay/sites"


# In a run folder: where that simulation's own sites' and server's state is (written by
# fedreplay run and run_inprocess.py, read by --resume and the egress audit)
STATE_POINTER = "simulated-state.txt"


def simulated_state_of(run_dir: Path) -> Path | None:
    """The folder a simulated run kept its sites' and server's state in (None: none named)."""
    pointer = Path(run_dir) / STATE_POINTER
    return Path(pointer.read_text(encoding="utf-8").strip()) if pointer.is_file() else None


SITE_ID_KEY = "site-id"
SITE_ID_RULE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")


def check_site_id(site_id: str) -> str:
    """The one rule a site id follows (it names folders and travels in replies)."""
    if not SITE_ID_RULE.match(site_id):
        raise ValueError(
            f"site id {site_id!r} must be 1-64 characters of letters, digits, '_', '.', '-' "
            "(starting with a letter or digit)"
        )
    return site_id


def default_site_id(partition_id: int) -> str:
    """The id of a site whose node config names none (simulation): ``site-<partition>``."""
    return f"site-{partition_id}"


def site_id_for(node_config: Mapping[str, object]) -> str:
    """A site's stable id: ``site-id`` from the node config, else ``site-<partition-id>``
    (simulation). Everything a site keeps about itself is keyed by it."""
    given = str(node_config.get(SITE_ID_KEY, "") or "")
    return given or default_site_id(int(node_config.get("partition-id", 0)))  # type: ignore[call-overload]
