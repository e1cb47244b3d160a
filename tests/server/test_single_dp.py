"""fedreplay single with dp.enabled trains with DP-SGD and spends the site's lifetime budget."""

import json
from pathlib import Path

import pytest

from common.results import load_summary
from server.single import main

ARGS = (
    "tasks.num-tasks=2 train.iterations=10 solver.hidden=16 generator.hidden=16 "
    "generator.latent-dim=4 generator.quality=false dp.enabled=true dp.delta=1e-5 "
    "dp.min-records=0 dp.target-epsilon=4.0"
)


def training_rows(folder: Path) -> list[dict]:
    """The ledger's training rows (the run's first round also releases each task's count)."""
    rows = json.loads((folder / "ledger.json").read_text())["ledger"]
    return [r for r in rows if r["kind"] == "training"]


def test_single_site_dp_spends_budget_and_a_rerun_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("FEDREPLAY_SITE_DIR", str(tmp_path / "sites"))
    monkeypatch.setenv("FEDREPLAY_SERVER_DIR", str(tmp_path / "server"))
    args = ["--no-progress", "--set", f"{ARGS} output-dir='{tmp_path / 'runs'}'"]
    assert main(args) == 0
    run_dir = Path(capsys.readouterr().out.strip().splitlines()[-1])
    summary = load_summary(run_dir)
    assert 3.5 < summary["dp_epsilon"] <= 4.0, "the run ends at its target, lifetime"
    assert summary["dp_epsilon_run"] == pytest.approx(summary["dp_epsilon"])
    assert summary["dp_scope"].endswith("lifetime of the site (all runs on its records)")
    ledger = training_rows(tmp_path / "sites" / "privacy" / "single")
    assert [row["task"] for row in ledger] == [0, 1]
    assert all(row["steps"] == 20 for row in ledger)  # solver + generator steps
    # The same site and records again: the budget is spent, the run is refused.
    assert main(args) == 3
    assert "nothing useful is left" in capsys.readouterr().err


def test_a_solver_learning_from_synthetic_data_spends_only_the_generators_steps(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("FEDREPLAY_SITE_DIR", str(tmp_path / "sites"))
    monkeypatch.setenv("FEDREPLAY_SERVER_DIR", str(tmp_path / "server"))
    sets = f"{ARGS} replay.solver-data='synthetic' output-dir='{tmp_path / 'runs'}'"
    assert main(["--no-progress", "--set", sets]) == 0
    ledger = training_rows(tmp_path / "sites" / "privacy" / "single")
    assert all(row["steps"] == 10 for row in ledger), "generator steps only"
    summary = load_summary(Path(capsys.readouterr().out.strip().splitlines()[-1]))
    assert 3.5 < summary["dp_epsilon"] <= 4.0


def test_the_discriminator_as_solver_spends_only_the_critics_steps(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """solver.arch='discriminator': the critic's DP steps are the solver's, counted once
    (the run also checks that the steps taken are the steps recorded)."""
    monkeypatch.setenv("FEDREPLAY_SITE_DIR", str(tmp_path / "sites"))
    monkeypatch.setenv("FEDREPLAY_SERVER_DIR", str(tmp_path / "server"))
    sets = (
        f"{ARGS} method='dgm' replay.mode='global' generator.kind='gan' generator.arch='conv' "
        f"solver.arch='discriminator' output-dir='{tmp_path / 'runs'}'"
    )
    assert main(["--no-progress", "--set", sets]) == 0
    ledger = training_rows(tmp_path / "sites" / "privacy" / "single")
    assert [row["steps"] for row in ledger] == [10, 10], "critic steps only"
    summary = load_summary(Path(capsys.readouterr().out.strip().splitlines()[-1]))
    assert 3.5 < summary["dp_epsilon"] <= 4.0
