"""Sample-level and client-level DP through the federation (in-process grid)."""

import json
from pathlib import Path

import pytest
from opacus.accountants import RDPAccountant

from client.client_app import app as client_app
from common.config import load_config
from common.results import load_summary
from server.federation import FederatedRun
from server.inprocess import InProcessGrid

TINY = {
    "train.iterations": 10,
    "tasks.num-tasks": 2,
    "fed.rounds-per-task": 2,
    "fed.num-sites": 2,
    "solver.hidden": 32,
    "generator.hidden": 32,
    "generator.latent-dim": 8,
    "eval.generator-quality": False,
    "dp.min-records": 0,  # digits sites hold ~140 records per task
}


@pytest.fixture(autouse=True)
def site_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("FEDREPLAY_SITE_DIR", str(tmp_path / "sites"))
    return tmp_path / "sites"


def federate(tmp_path: Path, run_id: int = 7, **overrides):
    cfg = load_config({**TINY, "output-dir": str(tmp_path / "runs"), **overrides})
    grid = InProcessGrid(client_app, cfg.to_run_config(), num_nodes=2, run_id=run_id)
    return FederatedRun(cfg).run(grid)


@pytest.mark.parametrize("composition", ["per-task", "sequential"])
def test_ledger_matches_an_independent_recomputation(
    tmp_path: Path, site_dir: Path, composition: str
) -> None:
    run = federate(
        tmp_path,
        **{"dp.enabled": True, "dp.target-epsilon": 8.0, "dp.composition": composition},
    )
    ledger = run.read_json("privacy_ledger.json")
    summary = load_summary(run.path)
    assert summary["dp_scope"].startswith("sample-level (add/remove one record), per site")
    assert summary["dp_composition"] == composition == ledger["composition"]
    assert summary["dp_accountant"] == "rdp" and summary["dp_epsilon"] <= 8.0
    for pid, rows in ledger["sites"].items():
        assert [r["round"] for r in rows] == [1, 2, 3, 4]
        epsilons = [r["epsilon"] for r in rows]
        assert epsilons == sorted(epsilons), "epsilon must never decrease"
        # Recompute from the recorded noise, sampling rate and steps of the site's state:
        # one accountant per task (per-task) or one for the run (sequential).
        state = json.loads((site_dir / "privacy" / "run-7" / f"site-{pid}.json").read_text())
        references: dict[str, RDPAccountant] = {}
        for row in state["ledger"]:
            key = f"task-{row['task']}" if composition == "per-task" else "run"
            reference = references.setdefault(key, RDPAccountant())
            for sigma, q, n in row["events"]:
                for _ in range(int(n)):
                    reference.step(noise_multiplier=sigma, sample_rate=q)
        assert len(references) == (2 if composition == "per-task" else 1)
        expected = max(r.get_epsilon(rows[-1]["delta"]) for r in references.values())
        assert rows[-1]["epsilon"] == pytest.approx(expected, rel=1e-9)
        assert 7.0 < expected <= 8.0, "the plan is calibrated to end near the budget"
        assert rows[-1]["steps"] == 4 * (10 + 10)  # solver + generator steps, 4 rounds
    assert (run.path / "epsilon.png").is_file()


def test_a_site_out_of_budget_is_left_out_and_the_run_continues(tmp_path: Path) -> None:
    # First run spends site budgets as planned for 2 rounds per task ...
    federate(tmp_path, run_id=9, **{"dp.enabled": True, "fed.rounds-per-task": 1})
    # ... the same run id asked for twice the rounds: sites refuse what exceeds the budget.
    run = federate(tmp_path, run_id=9, **{"dp.enabled": True, "fed.rounds-per-task": 1})
    rounds = run.read_jsonl("rounds.jsonl")
    assert all(any("budget" in v for v in r["failures"].values()) for r in rounds)
    refused = run.read_json("privacy_ledger.json")["refused"]
    assert len(refused) == 4


def test_client_level_dp_reports_epsilon_with_its_scope(tmp_path: Path) -> None:
    run = federate(
        tmp_path,
        **{"dp.client-level": True, "dp.client-noise-multiplier": 1.0, "dp.client-clip-norm": 5.0},
    )
    summary = load_summary(run.path)
    assert summary["dp_scope"].startswith("client-level")
    reference = RDPAccountant()
    for _ in range(4):
        reference.step(noise_multiplier=1.0, sample_rate=1.0)
    assert summary["dp_epsilon"] == pytest.approx(reference.get_epsilon(summary["dp_delta"]))


def test_a_site_with_too_few_records_of_a_task_sits_it_out(tmp_path: Path, site_dir: Path) -> None:
    """Below dp.min-records a site neither trains nor spends budget on that task."""
    from client.site import Site, SiteIdentity

    cfg = load_config({**TINY, "dp.enabled": True, "dp.min-records": 10**6})
    site = Site(cfg, SiteIdentity(0, 2))
    metrics = site.train(0, payload=None, iterations=5, seed=0, run_id=42, server_round=1)
    assert metrics["num-examples"] == 0.0 and metrics["empty"] == 1.0
    assert not (site_dir / "privacy" / "run-42").exists(), "nothing may be spent or planned"
    # The same site with the threshold off trains and records its spending.
    site = Site(load_config({**TINY, "dp.enabled": True, "dp.min-records": 0}), SiteIdentity(0, 2))
    assert (
        site.train(0, payload=None, iterations=5, seed=0, run_id=42, server_round=1)["dp-steps"]
        == 10.0
    )
