"""The budget belongs to the records: a renamed site, a deleted ledger folder or relabelled
records do not buy a fresh budget (the attacks of the audit, written as an operator would)."""

import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from client.site import Site, SiteIdentity
from common.config import load_config
from common.data.types import Split
from common.privacy.ledger_file import PrivacyStateError
from common.privacy.records import record_digests

TINY = {
    "tasks.num-tasks": 2,
    "fed.num-sites": 2,
    "solver.hidden": 16,
    "generator.hidden": 16,
    "generator.latent-dim": 4,
    "dp.enabled": True,
    "dp.min-records": 0,
    "dp.delta": 1e-5,
    "dp.target-epsilon": 2.0,
}


@pytest.fixture(autouse=True)
def site_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("FEDREPLAY_SITE_DIR", str(tmp_path))
    return tmp_path


def _train(site_id: str, run: str) -> dict[str, float]:
    site = Site(load_config(TINY), SiteIdentity(0, 2, site_id))
    return site.train(0, payload=None, iterations=2, seed=0, run_id=run, server_round=1)


def test_the_same_records_under_a_renamed_site_id_are_refused(site_dir: Path) -> None:
    assert _train("A", "1-a")["dp-epsilon"] > 0
    with pytest.raises(PrivacyStateError, match=r"under another site id .*'A'"):
        _train("A-renamed", "2-b")
    assert not (site_dir / "privacy" / "A-renamed" / "TRAINED").exists(), "it spent budget"
    assert not (site_dir / "privacy" / "A-renamed" / "ledger.json").exists()


def test_a_deleted_ledger_folder_does_not_start_from_zero(site_dir: Path) -> None:
    _train("A", "1-a")
    shutil.rmtree(site_dir / "privacy" / "A")
    with pytest.raises(PrivacyStateError, match="trained before"):
        _train("A", "2-b")


def test_relabelled_records_keep_their_fingerprints() -> None:
    x = torch.rand(12, 1, 4, 4)
    split = Split.from_tensors(x, torch.arange(12) % 3)
    relabelled = Split.from_tensors(x.clone(), (torch.arange(12) + 1) % 3)  # classes reordered
    assert np.array_equal(record_digests(split), record_digests(relabelled))
    other = Split.from_tensors(x.clone() + 1e-3, torch.arange(12) % 3)
    assert not set(record_digests(split)) & set(record_digests(other))
