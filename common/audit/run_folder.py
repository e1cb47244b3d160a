"""What the audits read from a finished run folder: its config, the sites' last updates,
the canaries."""

from __future__ import annotations

import dataclasses
import json
import re
from pathlib import Path
from typing import Any

import torch

from common.config import ExperimentConfig, drop_retired, load_config, run_config_of

CANARIES_FILE = "canaries.pt"
SITE_UPDATES_FILE = "site_updates.pt"
EGRESS_REPORT = "egress_audit.json"
DEFAULT_CANARY_DELTA = 1e-5


# --- the run folder ---------------------------------------------------------------------
SIMULATED_SITE = re.compile(r"^site-(\d+)$")  # common.sitestate.default_site_id


def simulated_partition(site_id: str) -> int | None:
    """The simulated data share a site id names (``site-<p>``: p); None for any other id
    (a deployed site: the auditor does not hold its records)."""
    match = SIMULATED_SITE.match(site_id)
    return int(match.group(1)) if match else None


def site_updates_by_partition(run_dir: Path) -> dict[int, dict[str, Any]]:
    """The last update each site sent (``site_updates.pt``, keyed by the site id the
    server accepted), by the simulated data share its *site id* names (``site-<p>``; the
    audits rebuild a site's records from it). The partition id a reply claimed is not
    used: a hostile site claiming partition 0 would be attacked with site 0's records and
    site 0 never audited. Sites with other ids (deployments) hold records the auditor does
    not have: left out."""
    path = run_dir / SITE_UPDATES_FILE
    if not path.is_file():
        return {}
    saved = torch.load(path, map_location="cpu", weights_only=True)
    out = {}
    for site_id, update in saved.items():
        partition = simulated_partition(str(site_id))
        if partition is not None:
            out[partition] = update
    return out


def load_run_config(run_dir: Path, data_root: str | None = None) -> ExperimentConfig:
    """The run's ``config.json`` back as an :class:`ExperimentConfig` (optionally another
    data root: the auditor's copy of the data)."""
    source = run_dir / "config.json"
    flat = drop_retired(run_config_of(json.loads(source.read_text())), source=str(source))
    cfg = load_config(flat)
    if data_root:
        cfg = dataclasses.replace(cfg, data=dataclasses.replace(cfg.data, root=data_root))
    return cfg


def read_json(path: Path) -> dict[str, Any]:
    return dict(json.loads(path.read_text())) if path.is_file() else {}
