"""generator.kind = "embedding" at the server: releases checked before they are kept, one
per site and task, bounded before they are summed, and a federation (in-process grid,
real ClientApp) that learns from them under DP with every site's ledger holding one
release per task and the egress audit passing."""

from pathlib import Path

import numpy as np
import pytest

from client.client_app import app as client_app
from common import wire
from common.audit.cli import main as audit_main
from common.config import load_config
from common.results import load_summary
from server.methods.embedding import EmbeddingReleases
from server.robust.reply_checks import check_release
from server.run.federation import FederatedRun
from server.run.inprocess import InProcessGrid


def test_a_release_is_checked_before_it_is_kept() -> None:
    good = np.zeros((2, 11), dtype=np.float32)
    check_release(good, (2, 11))
    for bad, match in [
        (np.zeros((3, 11), dtype=np.float32), "shape"),
        (np.zeros((2, 11), dtype=np.float64), "dtype"),
        (np.full((2, 11), np.nan, dtype=np.float32), "NaN"),
        (np.full((2, 11), np.inf, dtype=np.float32), "NaN or infinite"),
    ]:
        with pytest.raises(wire.WireError, match=match):
            check_release(bad, (2, 11))
    with pytest.raises(wire.WireError, match="not embedding"):
        check_release(good, None)  # a run of another generator kind


def test_a_hostile_release_is_bounded_and_a_second_one_ignored() -> None:
    rng = np.random.default_rng(0)
    releases = EmbeddingReleases()
    honest = [rng.normal(size=(2, 11)) * 10 for _ in range(4)]
    for i, r in enumerate(honest):
        assert releases.receive(f"site-{i}", r)
    assert releases.receive("site-9", np.full((2, 11), 1e30))
    assert not releases.receive("site-0", np.full((2, 11), 1e30)), "one release per site"
    total, factors = releases.bounded_sum(weight_cap=2.0)
    median = np.median([np.linalg.norm(r) for r in [*honest, np.full((2, 11), 1e30)]])
    assert factors["site-9"] < 1e-20 and all(factors[f"site-{i}"] == 1.0 for i in range(4))
    hostile_part = total - sum(honest)
    # the direction bound (tests/server/test_release_consensus.py) never lengthens it
    assert np.linalg.norm(hostile_part) <= 2.0 * median * (1 + 1e-9)


def test_the_sum_survives_a_resume() -> None:
    releases = EmbeddingReleases()
    releases.receive("site-0", np.ones((2, 3)))
    back = EmbeddingReleases.restore(releases.snapshot())
    assert np.array_equal(back.bounded_sum(0.0)[0], releases.bounded_sum(0.0)[0])


@pytest.mark.slow
@pytest.mark.parametrize("solver", ["mlp", "ridge"])
def test_a_dp_federation_learns_from_releases_and_its_egress_is_clean(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, solver: str
) -> None:
    """The same with solver.arch = "ridge" (releases carry the Gram; one round per task:
    the server solves the solver; no site trains one)."""
    rounds = 1 if solver == "ridge" else 2
    monkeypatch.setenv("FEDREPLAY_SITE_DIR", str(tmp_path / "sites"))
    monkeypatch.setenv("FEDREPLAY_SERVER_DIR", str(tmp_path / "server"))
    cfg = load_config(
        {
            "output-dir": str(tmp_path / "runs"),
            "tasks.num-tasks": 3,
            "fed.num-sites": 3,
            "train.iterations": 150,
            "generator.kind": "embedding",
            "generator.latent-dim": 10,
            "embedding.features": 300,
            "embedding.fit-steps": 150,
            "fed.rounds-per-task": rounds,
            "solver.arch": solver,
            "replay.mode": "per-task",
            "replay.labels": "condition",
            "replay.solver-data": "synthetic",
            "dp.enabled": True,
            "dp.min-records": 0,
            "dp.delta": 1e-5,
            "dp.target-epsilon": 8.0,
        }
    )
    grid = InProcessGrid(client_app, cfg.to_run_config(), num_nodes=3, run_id=5)
    fed = FederatedRun(cfg)
    run = fed.run(grid)
    summary = load_summary(run.path)
    assert summary["status"] == "completed"
    assert summary["dp_epsilon"] <= 8.0
    ledger = run.read_json("privacy_ledger.json")
    for rows in ledger["sites"].values():  # one Gaussian release per task, nothing else
        # a row per round; cumulative steps (after the 3 tasks' count releases of the
        # run's first round): the task's second round spent nothing
        assert [(r["task"], r["steps"]) for r in rows] == [
            (t, 3 + t + 1) for t in range(3) for _ in range(rounds)
        ]
        assert {r["sample_rate"] for r in rows} == {1.0}
    # every task's generator came from the three sites' releases, and replays its classes
    assert len(fed.final_payload.generators) == 3
    assert min(summary["accuracy_matrix"][-1]) > 0.5, summary["accuracy_matrix"]
    assert audit_main(["egress", str(run.path)]) == 0
