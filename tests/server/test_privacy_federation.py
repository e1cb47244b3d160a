"""Sample-level and client-level DP through the federation (in-process grid)."""

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from opacus.accountants import RDPAccountant

from client.client_app import app as client_app
from common.config import load_config
from common.results import load_summary
from server.run.federation import FederatedRun
from server.run.finish import RunFailed
from server.run.inprocess import InProcessGrid

TINY = {
    "train.iterations": 10,
    "tasks.num-tasks": 2,
    "fed.rounds-per-task": 2,
    "fed.num-sites": 2,
    "solver.hidden": 32,
    "generator.hidden": 32,
    "generator.latent-dim": 8,
    "generator.quality": False,
    "dp.min-records": 0,  # digits sites hold ~140 records per task
    "dp.delta": 1e-5,
}


@pytest.fixture(autouse=True)
def site_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("FEDREPLAY_SITE_DIR", str(tmp_path / "sites"))
    monkeypatch.setenv("FEDREPLAY_SERVER_DIR", str(tmp_path / "server"))
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
    assert summary["dp_scope"].endswith("lifetime of the site (all runs on its records)")
    assert summary["dp_composition"] == composition == ledger["composition"]
    assert summary["dp_accountant"] == "rdp" and summary["dp_epsilon"] <= 8.0
    assert sorted(ledger["sites"]) == ["site-0", "site-1"], "keyed by stable site ids"
    page = (run.path / "report.html").read_text()
    outcome = page.split("<h2>Sites</h2>")[0]
    assert f"epsilon = {summary['dp_epsilon']:.2f}, delta = 1e-05 (sample-level" in outcome
    privacy = page.split("<h2>Privacy</h2>")[1]
    left = ledger["sites"]["site-0"][-1]["budget_left"]
    assert "budget left" in privacy and f"{left:.3f}" in privacy and left >= 0
    # a privacy officer reads, per site, what it spent and has left and what it sent
    rounds = run.read_jsonl("rounds.jsonl")
    for site_id, rows in ledger["sites"].items():
        row = summary["sites"][site_id]
        assert row["epsilon"] == max(r["epsilon"] for r in rows)
        assert row["budget_left"] == rows[-1]["budget_left"] and row["replies"] == len(rows)
        sent = [
            s["metrics"]["bytes-up"] for r in rounds for s in r["sites"] if s["site_id"] == site_id
        ]
        assert row["bytes_up"] == sum(sent) > 0
    sites_table = page.split("<h2>Sites</h2>")[1].split("<h2>")[0]
    assert (
        "ε left" in sites_table
        and f"{summary['sites']['site-0']['budget_left']:.3f}" in sites_table
    )
    for site_id, rows in ledger["sites"].items():
        assert [r["round"] for r in rows] == [1, 2, 3, 4]
        epsilons = [r["epsilon"] for r in rows]
        assert epsilons == sorted(epsilons), "epsilon must never decrease"
        # Recompute from the recorded noise, sampling rate and steps of the site's lifetime
        # ledger: one accountant per task (per-task) or one for the run (sequential).
        state = json.loads((site_dir / "privacy" / site_id / "ledger.json").read_text())
        references: dict[str, RDPAccountant] = {}
        for row in state["ledger"]:
            assert row["run"] == summary["run_key"] and summary["run_key"].startswith("7-")
            key = f"task-{row['task']}" if composition == "per-task" else "run"
            reference = references.setdefault(key, RDPAccountant())
            for sigma, q, n in row["events"]:
                for _ in range(int(n)):
                    reference.step(noise_multiplier=sigma, sample_rate=q)
        assert len(references) == (2 if composition == "per-task" else 1)
        expected = max(r.get_epsilon(rows[-1]["delta"]) for r in references.values())
        assert rows[-1]["epsilon"] == pytest.approx(expected, rel=1e-9)
        assert 7.0 < expected <= 8.0, "the plan is calibrated to end near the budget"
        # solver + generator steps, 4 rounds, and the two tasks' count releases
        assert rows[-1]["steps"] == 4 * (10 + 10) + 2
        assert rows[-1]["run_epsilon"] == pytest.approx(rows[-1]["epsilon"])  # first run
    assert summary["dp_epsilon_run"] == pytest.approx(summary["dp_epsilon"])
    assert (run.path / "epsilon.png").is_file()


def test_a_second_run_on_the_same_records_spends_from_the_same_lifetime_budget(
    tmp_path: Path,
) -> None:
    """Budgets used to reset with every run (the state was keyed by Flower's run id)."""
    first = load_summary(federate(tmp_path, run_id=9, **{"dp.enabled": True}).path)
    assert 7.0 < first["dp_epsilon"] <= 8.0
    # Another run (another run id) on the same records: nothing useful is left, every
    # site refuses, the run spends nothing, says so, and ends failed.
    with pytest.raises(RunFailed, match="no site update was accepted") as failed:
        federate(tmp_path, run_id=10, **{"dp.enabled": True})
    run = failed.value.run
    assert run.read_json("summary.json")["status"] == "failed"
    rounds = run.read_jsonl("rounds.jsonl")
    assert all(len(r["failures"]) == 2 for r in rounds)
    assert all("lifetime budget" in v for r in rounds for v in r["failures"].values())
    assert len(run.read_json("privacy_ledger.json")["refused"]) == 8
    # A site whose ledger is deleted refuses too (its TRAINED marker and backup remain) ...
    (tmp_path / "sites" / "privacy" / "site-0" / "ledger.json").unlink()
    with pytest.raises(RunFailed) as failed:
        federate(tmp_path, run_id=11, **{"dp.enabled": True})
    rounds = failed.value.run.read_jsonl("rounds.jsonl")
    failures = [v for r in rounds for v in r["failures"].values()]
    assert any("refusing to start it from epsilon 0" in v for v in failures)


def test_the_server_refuses_a_site_whose_lifetime_epsilon_falls(tmp_path: Path) -> None:
    """An attacker wipes a site's whole privacy folder, record index included: the site
    starts from zero, but the server remembers the epsilon and steps it reported, refuses
    its updates and keeps it quarantined (a reset site soon reports its old epsilon
    again). (Wiping only privacy/site-1 is refused at the site itself: the record index
    remembers it, test_record_index.py.)"""
    import shutil

    federate(tmp_path, run_id=21, **{"dp.enabled": True})
    shutil.rmtree(tmp_path / "sites" / "privacy" / "site-1")
    (tmp_path / "sites" / "privacy" / "_records" / "site-1.u64").unlink()
    with pytest.raises(RunFailed) as failed:  # site-0 has no budget left, site-1 is refused
        federate(tmp_path, run_id=22, **{"dp.enabled": True})
    rounds = failed.value.run.read_jsonl("rounds.jsonl")
    failures = [v for r in rounds for v in r["failures"].values()]
    assert sum("ledger was reset" in v and "refusing its updates" in v for v in failures) == 1
    assert sum("is quarantined" in v for v in failures) == 3


CLIENT = {
    "dp.client-level": True,
    "dp.client-noise-multiplier": 1.0,
    "dp.client-clip-norm": 5.0,
    "replay.mode": "global",
}


def test_client_level_dp_reports_epsilon_with_its_scope(tmp_path: Path) -> None:
    run = federate(tmp_path, **CLIENT)
    summary = load_summary(run.path)
    assert summary["dp_scope"].startswith("client-level")
    assert "no amplification" in summary["dp_scope"]
    assert not (run.path / "site_updates.pt").exists() or not torch.load(
        run.path / "site_updates.pt"
    ), "per-site un-noised updates are not kept under client-level DP"
    reference = RDPAccountant()
    for _ in range(4):
        reference.step(noise_multiplier=1.0, sample_rate=1.0)
    assert summary["dp_epsilon"] == pytest.approx(reference.get_epsilon(summary["dp_delta"]))


def test_a_site_with_too_few_records_of_a_task_sits_it_out(tmp_path: Path, site_dir: Path) -> None:
    """Below dp.min-records a site does not train on that task; what it spends is the
    release of its tasks' noised record counts (one Gaussian count per task, on which the
    sit-out decision is made, so that the decision itself is private), no DP-SGD step."""
    import json

    from client.site import Site, SiteIdentity

    cfg = load_config({**TINY, "dp.enabled": True, "dp.min-records": 10**6})
    site = Site(cfg, SiteIdentity(0, 2))
    metrics = site.train(0, payload=None, iterations=5, seed=0, run_id=42, server_round=1)
    assert metrics["num-examples"] == 0.0 and metrics["empty"] == 1.0
    rows = json.loads((site_dir / "privacy" / "site-0" / "ledger.json").read_text())["ledger"]
    assert rows and all(r["events"] == [[50.0, 1.0, 1]] for r in rows), rows
    # The same site with the threshold off trains and records its spending.
    # (lifetime steps: 2 x 5 DP-SGD steps, and 2 count releases in each of the two runs)
    site = Site(load_config({**TINY, "dp.enabled": True, "dp.min-records": 0}), SiteIdentity(0, 2))
    assert (
        site.train(0, payload=None, iterations=5, seed=0, run_id=43, server_round=1)["dp-steps"]
        == 14.0
    )


@pytest.mark.parametrize("mode", ["ensemble", "per-task"])
def test_client_level_dp_with_ensemble_replay_is_refused(mode: str) -> None:
    """Ensemble replay (of the last task or of every task) would send every site's own
    un-noised generator to all sites."""
    with pytest.raises(ValueError, match=f"replay.mode='{mode}'"):
        load_config({**TINY, **CLIENT, "replay.mode": mode})


def test_client_level_noise_follows_the_number_of_sites_sampled_not_replied() -> None:
    """Three sites sampled, one replied: the released average is sum/3 with noise sigma C/3
    (a missing site is a zero update); before, it was averaged over the one reply with
    noise calibrated for three (effective noise sigma/3)."""
    from server.privacy.client_dp import ClientLevelDP

    mech = ClientLevelDP(noise_multiplier=2.0, clip_norm=1.0)
    current = {"w": np.zeros(20000, dtype=np.float32)}
    update = {"w": np.full(20000, 10.0 / np.sqrt(20000), dtype=np.float32)}  # norm 10
    out, norms = mech.release(current, [update], num_sampled=3)
    assert norms == [pytest.approx(10.0, rel=1e-5)]
    clipped_mean = 1.0 / np.sqrt(20000) / 3  # clipped to norm 1, divided by 3 sampled
    noise = out["w"] - clipped_mean
    assert np.std(noise) == pytest.approx(2.0 * 1.0 / 3, rel=0.03)
    assert np.mean(out["w"]) == pytest.approx(clipped_mean, abs=0.02)


def test_client_level_dp_validates_before_it_clips(tmp_path: Path) -> None:
    """A wrong-shape update used to crash Flower's clipping before any check; now it is
    refused and the round goes on with the other site."""
    from flwr.app import Array, ArrayRecord

    def hostile(instruction, reply):
        if instruction.metadata.dst_node_id == 1000 and reply.has_content():
            scholar = reply.content.array_records["solver"]  # the solver part's record
            first = next(iter(scholar.keys()))
            scholar[first] = Array(np.zeros((3, 3), dtype=np.float32))
        return reply

    cfg = load_config({**TINY, **CLIENT, "output-dir": str(tmp_path / "runs")})
    grid = InProcessGrid(client_app, cfg.to_run_config(), num_nodes=2, reply_hook=hostile)
    run = FederatedRun(cfg).run(grid)
    rounds = run.read_jsonl("rounds.jsonl")
    assert all("rejected" in r["failures"].get("1000", "") for r in rounds)
    assert all(len(r["sites"]) == 1 for r in rounds)
    del ArrayRecord


def test_client_level_noise_comes_from_the_os_cryptographic_source(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """No generator state to recover: with os.urandom fixed the noise repeats exactly (it has
    no other source); with the real os.urandom two releases differ; it is Gaussian."""
    import os

    from common.privacy import randomness
    from server.privacy.client_dp import ClientLevelDP

    mech = ClientLevelDP(noise_multiplier=1.0, clip_norm=1.0)
    current = {"w": np.zeros(50000, dtype=np.float32)}
    first, _ = mech.release(current, [current], num_sampled=1)
    second, _ = mech.release(current, [current], num_sampled=1)
    assert not np.array_equal(first["w"], second["w"])
    assert np.std(first["w"]) == pytest.approx(1.0, rel=0.02)
    assert abs(float(np.mean(first["w"] ** 3))) < 0.05  # symmetric
    assert float(np.mean(first["w"] ** 4)) == pytest.approx(3.0, rel=0.06)  # Gaussian tails
    fixed = os.urandom(16 * 200000)
    monkeypatch.setattr(randomness.os, "urandom", lambda n: fixed[:n])
    a, _ = mech.release(current, [current], num_sampled=1)
    b, _ = mech.release(current, [current], num_sampled=1)
    assert np.array_equal(a["w"], b["w"])


def test_client_level_epsilon_spans_the_federations_runs(tmp_path: Path) -> None:
    """A site in two runs of one federation is in both releases: the second run reports
    the composition of all 8 releases as its epsilon, and its own 4 beside it."""
    first = load_summary(federate(tmp_path / "a", run_id=7, **CLIENT).path)
    second = load_summary(federate(tmp_path / "b", run_id=8, **CLIENT).path)
    reference = RDPAccountant()
    for _ in range(8):
        reference.step(noise_multiplier=1.0, sample_rate=1.0)
    assert second["dp_epsilon"] == pytest.approx(reference.get_epsilon(second["dp_delta"]))
    assert second["dp_epsilon_run"] == pytest.approx(first["dp_epsilon"])
    assert second["dp_epsilon"] > first["dp_epsilon"]
    assert second["dp_epsilon_is"].startswith("lifetime of the federation")
