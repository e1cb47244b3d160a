"""Canaries for the one-run audit: inserted at one site only, saved by the server."""

from pathlib import Path

import torch

from client.client_app import app as client_app
from client.site import SiteIdentity, local_stream
from common.audit.canaries import run_canaries
from common.config import load_config
from server.federation import FederatedRun
from server.inprocess import InProcessGrid

CFG = {"tasks.num-tasks": 2, "fed.num-sites": 2, "audit.canaries": 40, "audit.canary-site": 1}


def test_only_the_canary_site_trains_on_the_included_canaries() -> None:
    cfg = load_config(CFG)
    plain = load_config({**CFG, "audit.canaries": 0})
    canaries = run_canaries(cfg, (1, 8, 8), 10)
    assert canaries is not None
    inserted = int(canaries.include.sum())
    assert 0 < inserted < 40
    for site in (0, 1):
        with_c = local_stream(cfg, SiteIdentity(site, 2))
        without = local_stream(plain, SiteIdentity(site, 2))
        for a, b in zip(with_c.tasks, without.tasks, strict=True):
            assert len(a.train) - len(b.train) == (inserted if site == 1 else 0)
            assert len(a.test) == len(b.test)


def test_the_run_folder_holds_the_canaries_for_the_audit(tmp_path: Path) -> None:
    cfg = load_config(
        {
            **CFG,
            "output-dir": str(tmp_path),
            "train.iterations": 10,
            "eval.generator-quality": False,
            "solver.hidden": 32,
            "generator.hidden": 32,
            "generator.latent-dim": 8,
        }
    )
    run = FederatedRun(cfg).run(InProcessGrid(client_app, cfg.to_run_config(), num_nodes=2))
    saved = torch.load(run.path / "canaries.pt", weights_only=True)
    canaries = run_canaries(cfg, (1, 8, 8), 10)
    assert canaries is not None
    assert torch.equal(saved["x"], canaries.split.x)
    assert (saved["include"].numpy() == canaries.include).all()
    assert saved["site"] == 1
