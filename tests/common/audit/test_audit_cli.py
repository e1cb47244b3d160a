"""``fedreplay audit models`` on a finished tiny federated run, and the CLI's error exits."""

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from client.client_app import app as client_app
from common import egress
from common.audit.cli import main
from common.config import load_config
from server.run.federation import FederatedRun
from server.run.inprocess import InProcessGrid

TINY = {
    "train.iterations": 15,
    "tasks.num-tasks": 2,
    "fed.rounds-per-task": 1,
    "fed.num-sites": 2,
    "solver.hidden": 32,
    "generator.hidden": 32,
    "generator.latent-dim": 8,
    "generator.quality": False,
}


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    tmp = tmp_path_factory.mktemp("audit-run")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv(egress.SITE_DIR_ENV, str(tmp / "sites"))
        cfg = load_config({**TINY, "output-dir": str(tmp / "runs")})
        grid = InProcessGrid(client_app, cfg.to_run_config(), num_nodes=2)
        return FederatedRun(cfg).run(grid).path


def copy_run(run_dir: Path, tmp_path: Path) -> Path:
    return Path(shutil.copytree(run_dir, tmp_path / run_dir.name))


def test_quick_model_audit_writes_the_report(run_dir: Path, tmp_path: Path) -> None:
    run = copy_run(run_dir, tmp_path)
    assert main(["models", str(run), "--quick", "--device", "cpu"]) == 0
    for name in ("audit.json", "audit.md", "roc.png"):
        assert (run / "audit" / name).is_file(), name
    report = json.loads((run / "audit" / "audit.json").read_text())
    attacks = report["attacks"]
    for site in (0, 1):
        for attack in (
            "solver (global) / loss",
            "solver (global) / lira_online",
            "solver (global) / lira_offline",
            "solver (site's round-2 update) / loss",
            "solver (site's round-2 update) / lira_offline",
            "generator (site's round-2 update) / gan_leaks_median",
        ):
            result = attacks[f"site-{site} / {attack}"]
            assert 0.0 <= result["auc"] <= 1.0
            assert "tpr_at_0.1%_fpr" in result and "tpr_at_1%_fpr" in result
            assert result["num_members"] == result["num_non_members"] > 0
    assert report["accountant"]["epsilon"] is None and report["canary_bounds"] == {}
    assert report["non_members"].startswith("the test split")  # the run has no holdout
    markdown = (run / "audit" / "audit.md").read_text()
    assert "not differentially private" in markdown and "Non-members: the test split" in markdown


def test_canaries_and_accountant_epsilon_enter_the_report(run_dir: Path, tmp_path: Path) -> None:
    run = copy_run(run_dir, tmp_path)
    summary = json.loads((run / "summary.json").read_text())
    summary.update(dp_epsilon=4.0, dp_delta=1e-5, dp_accountant="rdp")
    (run / "summary.json").write_text(json.dumps(summary))
    gen = torch.Generator().manual_seed(0)
    torch.save(
        {
            "x": torch.rand((100, 1, 8, 8), generator=gen),
            "y": torch.randint(0, 10, (100,), generator=gen),
            "include": torch.rand(100, generator=gen) < 0.5,
        },
        run / "canaries.pt",
    )
    args = ["models", str(run), "--sites", "site-0", "--shadows", "2", "--records", "40", "--quick"]
    assert main([*args, "--device", "cpu"]) == 0
    report = json.loads((run / "audit" / "audit.json").read_text())
    assert report["accountant"] == {"name": "rdp", "epsilon": 4.0, "delta": 1e-5}
    bound = report["canary_bounds"]["canaries / solver (global)"]
    assert bound["num_canaries"] == 100 and bound["delta"] == 1e-5
    assert 0.0 <= bound["epsilon_lower_bound"] < 4.0  # the canaries were never trained on
    own = "site's round-2 update"
    assert set(report["attacks"]) == {
        "site-0 / solver (global) / loss",
        "site-0 / solver (global) / lira_online",
        "site-0 / solver (global) / lira_offline",
        f"site-0 / solver ({own}) / loss",
        f"site-0 / solver ({own}) / lira_online",
        f"site-0 / solver ({own}) / lira_offline",
        f"site-0 / generator ({own}) / gan_leaks_median",
    }


def test_the_model_audit_takes_site_ids_and_refuses_others(
    run_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Sites are named by the id they trained and sent under (issue 35: audits keyed sites
    by partition); a number or a deployed site's id is refused before any attack runs."""
    run = copy_run(run_dir, tmp_path)
    for bad in ("0", "hospital-a"):
        assert main(["models", str(run), "--sites", bad, "--quick", "--device", "cpu"]) == 2
        assert f"site id {bad!r} is not a simulated site" in capsys.readouterr().err
        assert not (run / "audit").exists()


def test_cli_exits_2_without_a_run_folder_or_logs(run_dir: Path, tmp_path: Path) -> None:
    assert main(["egress", str(tmp_path)]) == 2
    assert main(["egress", str(run_dir), "--sites-dir", str(tmp_path / "empty")]) == 2


def test_egress_audit_finds_the_run_by_its_recorded_id(run_dir: Path, tmp_path: Path) -> None:
    run = copy_run(run_dir, tmp_path)
    sites = Path(shutil.copytree(run_dir.parent.parent / "sites", tmp_path / "sites"))
    decoy = sites / "egress" / "run-99"  # a later run whose log breaks the protocol
    decoy.mkdir()
    (decoy / "site-0.jsonl").write_text(
        json.dumps({"message_type": "query", "records": [], "partition_id": 0, "run_id": 99}) + "\n"
    )
    summary = json.loads((run / "summary.json").read_text())
    assert summary["run_id"] == 1
    without_id = {k: v for k, v in summary.items() if k != "run_id"}
    (run / "summary.json").write_text(json.dumps(without_id))
    assert main(["egress", str(run), "--sites-dir", str(sites)]) == 1  # latest: run 99
    (run / "summary.json").write_text(json.dumps(summary))
    assert main(["egress", str(run), "--sites-dir", str(sites)]) == 0
    assert json.loads((run / "egress_audit.json").read_text())["run_id"] == 1


def test_non_members_match_the_members_class_for_class() -> None:
    from common.audit.models_audit import matched_members
    from common.data.types import Split

    # Members skewed to class 0, a held-out set skewed to class 1, class 2 missing there.
    pool_y = torch.tensor([0] * 80 + [1] * 15 + [2] * 5)
    hold_y = torch.tensor([0] * 30 + [1] * 60)
    pool = Split.from_tensors(torch.arange(100.0).view(100, 1, 1, 1), pool_y)
    holdout = Split.from_tensors(-torch.arange(1.0, 91.0).view(90, 1, 1, 1), hold_y)
    rng = np.random.default_rng(0)
    members, non_members = matched_members(pool, holdout, 60, rng)
    counts_m = torch.bincount(members.y, minlength=3)
    counts_n = torch.bincount(non_members.y, minlength=3)
    assert torch.equal(counts_m, counts_n)
    assert counts_m[2] == 0 and counts_m[0] <= 30  # cut to what the held-out set has
    assert len(set(members.x.flatten().tolist())) == len(members)  # no record twice
    assert len(set(non_members.x.flatten().tolist())) == len(non_members)
    assert (members.x >= 0).all() and (non_members.x < 0).all()


def test_non_members_come_from_the_runs_holdout_when_it_has_one() -> None:
    from common.audit.models_audit import audit_non_members
    from common.data.streams import build_stream
    from common.sitedata import SiteIdentity, local_stream

    cfg = load_config({**TINY, "audit.holdout": 0.1})
    stream = build_stream(cfg)
    held, source = audit_non_members(cfg, stream)
    assert "holdout" in source
    assert len(held) == sum(round(0.1 * len(t.train)) for t in stream.tasks)
    trained = torch.cat(
        [t.train.index for p in (0, 1) for t in local_stream(cfg, SiteIdentity(p, 2)).tasks]
    )
    assert not set(held.index.tolist()) & set(trained.tolist())  # no site saw a non-member
    assert set(held.index.tolist()) <= set(
        torch.cat([t.train.index for t in stream.tasks]).tolist()
    )
    test, source = audit_non_members(load_config(TINY), stream)
    assert "test split" in source
    assert torch.equal(test.index, torch.cat([t.test.index for t in stream.tasks]))


def test_the_mechanism_audit_command_writes_both_bounds_and_exits_0_when_consistent(
    tmp_path: Path,
) -> None:
    out = tmp_path / "mechanism.json"
    argv = ["mechanism", "--epsilon", "2", "--sample-rate", "1", "--steps", "4"]
    assert main([*argv, "--canaries", "40000", "--out", str(out)]) == 0
    result = json.loads(out.read_text())
    assert result["verdict"].startswith("consistent")
    assert result["claimed_epsilon"] == 2.0 and result["delta"] == 1e-5
    assert 0 < result["epsilon_lower_bound"] < result["epsilon_lower_bound_gaussian"]
    assert result["epsilon_lower_bound_gaussian"] <= result["epsilon_exact"] < 2.0


def test_the_audit_finds_a_sites_update_by_its_site_id_not_its_claimed_partition(
    tmp_path: Path,
) -> None:
    """A hostile site-1 claiming partition 0 in its metrics made the model audit attack
    its update with site 0's records, and never audit site 0's own. Updates are now keyed
    by the site id the server accepted: site-<p> holds partition p; other ids (a
    deployment's sites, whose records the auditor does not have) are left out."""
    import torch

    from common.audit.run_folder import SITE_UPDATES_FILE, site_updates_by_partition

    torch.save(
        {
            "site-0": {"round": 4, "partition": 0, "solver": {}},
            "site-1": {"round": 4, "partition": 0, "solver": {}},  # the spoof
            "berlin": {"round": 4, "partition": 0, "solver": {}},
        },
        tmp_path / SITE_UPDATES_FILE,
    )
    updates = site_updates_by_partition(tmp_path)
    assert sorted(updates) == [0, 1]
    assert updates[0] is not updates[1]
    assert updates[1]["partition"] == 0, "site-1's own update, whatever it claimed"
