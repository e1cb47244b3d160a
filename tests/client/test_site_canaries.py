"""Canaries for the one-run audit: inserted at one site only, saved by the server."""

from pathlib import Path

import pytest
import torch

from client.client_app import app as client_app
from client.site import SiteIdentity, local_stream
from common.config import ConfigError, load_config
from common.data.canaries import run_canaries
from common.privacy.composition import check_composition
from server.run.federation import FederatedRun
from server.run.inprocess import InProcessGrid

CFG = {"tasks.num-tasks": 2, "fed.num-sites": 2, "audit.canaries": 40, "audit.canary-site": 1}


@pytest.mark.parametrize("task", [-1, 0])
def test_only_the_canary_site_trains_on_the_included_canaries_in_one_task(task: int) -> None:
    cfg = load_config({**CFG, "audit.canary-task": task})
    plain = load_config({**CFG, "audit.canaries": 0})
    canaries = run_canaries(cfg, (1, 8, 8), 10)
    assert canaries is not None
    inserted = int(canaries.include.sum())
    assert 0 < inserted < 40
    at = 1 if task == -1 else task
    for site in (0, 1):
        with_c = local_stream(cfg, SiteIdentity(site, 2))
        without = local_stream(plain, SiteIdentity(site, 2))
        for t, (a, b) in enumerate(zip(with_c.tasks, without.tasks, strict=True)):
            assert len(a.train) - len(b.train) == (inserted if site == 1 and t == at else 0)
            assert len(a.test) == len(b.test)
    # One record in one task: the per-task claim still holds at the canary site.
    tasks = local_stream(cfg, SiteIdentity(1, 2)).tasks
    check_composition("per-task", [t.train for t in tasks], where="site 1")


def test_a_canary_task_outside_the_stream_is_a_clear_error() -> None:
    cfg = load_config({**CFG, "audit.canary-task": 5})
    with pytest.raises(ConfigError, match=r"audit.canary-task=5 but the stream has 2 tasks"):
        local_stream(cfg, SiteIdentity(1, 2))


def test_the_run_folder_holds_the_canaries_for_the_audit(tmp_path: Path) -> None:
    cfg = load_config(
        {
            **CFG,
            "output-dir": str(tmp_path),
            "train.iterations": 10,
            "generator.quality": False,
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
