"""Where a site keeps what never leaves it: privacy state and egress logs.

``$FEDREPLAY_SITE_DIR`` if set, else ``~/.cache/fedreplay/sites``. In simulation all
sites share one machine and are told apart by run id and partition id.
"""

from __future__ import annotations

import os
from pathlib import Path

SITE_DIR_ENV = "FEDREPLAY_SITE_DIR"


def site_dir() -> Path:
    configured = os.environ.get(SITE_DIR_ENV, "")
    return Path(configured).expanduser() if configured else Path.home() / ".cache/fedreplay/sites"
