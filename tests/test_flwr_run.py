"""Real ``flwr run`` (simulation engine, Ray) through ``fedreplay run``.

``flwr run`` exits 0 even when the ServerApp crashed, so success is judged from the run
folder (``summary.json`` valid and completed, the per-round log) and a crash must make the
script exit non-zero. Each run gets a private FLWR_HOME and local SuperLink (free ports).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))  # tests/flower_helpers.py (importlib mode)
from flower_helpers import TINY, check_completed_run, clean_env, run_script


@pytest.mark.slow
def test_flwr_run_two_sites_two_tasks(tmp_path: Path) -> None:
    runs = tmp_path / "runs"
    result = run_script(
        ["--set", TINY, "--sites", "2", "--output-dir", str(runs), "--timeout", "150"],
        env=clean_env(),
        timeout=180,
    )
    assert result.returncode == 0, result.describe()
    folder = Path(result.last_line)
    assert folder.parent == runs and folder.is_dir(), result.describe()
    summary = check_completed_run(folder, tasks=2, sites=2)
    assert summary["method"] == "dgr" and summary["dataset"] == "digits"
    config = json.loads((folder / "config.json").read_text())
    assert config["output_dir"] == str(runs)  # an absolute output-dir was passed
    resources = json.loads((folder / "resources.json").read_text())
    assert resources["flower_status"] == "finished:completed"
    assert resources["peak_rss_mb"] > 100  # at least the ServerApp and a Ray worker
    assert "Successfully started run" in (folder / "flwr.log").read_text()


@pytest.mark.slow
def test_serverapp_failure_makes_the_script_fail(tmp_path: Path) -> None:
    """An invalid value reaches the ServerApp (config check skipped): it crashes, `flwr run`
    still exits 0, and the script must notice and exit 1."""
    runs = tmp_path / "runs"
    result = run_script(
        [
            "--set",
            "method='bogus' tasks.num-tasks=1 train.iterations=5",
            "--skip-config-check",
            "--sites",
            "1",
            "--output-dir",
            str(runs),
            "--timeout",
            "120",
        ],
        env=clean_env(),
        timeout=150,
    )
    assert result.returncode == 1, result.describe()
    assert "FAILED" in result.stderr
    assert "finished:failed" in result.stderr  # what `flwr ls` says
    assert "bogus" in result.stderr  # the ServerApp's error is quoted
    assert not [p for p in runs.iterdir() if not p.name.startswith(".")]  # no run folder


def test_invalid_config_is_rejected_before_starting_flower(tmp_path: Path) -> None:
    result = run_script(
        ["--set", "method='bogus'", "--output-dir", str(tmp_path / "runs")],
        env=clean_env(),
        timeout=60,
    )
    assert result.returncode == 2, result.describe()
    assert "method='bogus'" in result.stderr and "running:" not in result.stderr


def test_unknown_key_is_rejected(tmp_path: Path) -> None:
    result = run_script(
        ["--set", "train.iteration=5", "--output-dir", str(tmp_path / "runs")],
        env=clean_env(),
        timeout=60,
    )
    assert result.returncode == 2, result.describe()
    assert "train.iterations" in result.stderr  # the closest known key is suggested


def test_relative_output_dir_does_not_depend_on_the_working_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The ServerApp's working directory is the SuperLink's: a relative output-dir is
    resolved against $FEDREPLAY_OUTPUT_DIR, else ~/fedreplay."""
    from server.run.federation import resolve_output_dir

    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.delenv("FEDREPLAY_OUTPUT_DIR", raising=False)
    assert resolve_output_dir("runs") == tmp_path / "home" / "fedreplay" / "runs"
    monkeypatch.setenv("FEDREPLAY_OUTPUT_DIR", str(tmp_path / "out"))
    assert resolve_output_dir("runs") == tmp_path / "out" / "runs"
    assert resolve_output_dir(str(tmp_path / "abs")) == tmp_path / "abs"
    assert resolve_output_dir("~/x") == tmp_path / "home" / "x"


@pytest.mark.slow
def test_two_dp_simulations_with_default_site_ids_both_complete(tmp_path: Path) -> None:
    """Simulated sites used to share ~/.cache/fedreplay/sites and the server's registry:
    the second of two simulations with the default site ids found its 'sites' spent (or
    quarantined). Each launch now keeps its simulated state in its own folder, named in the
    run folder, and nothing lands in the user's cache."""
    home = tmp_path / "home"
    env = clean_env(HOME=str(home))
    for key in ("FEDREPLAY_SITE_DIR", "FEDREPLAY_SERVER_DIR"):
        env.pop(key, None)
    dp = f"{TINY} dp.enabled=true dp.delta=1e-5 dp.min-records=0 dp.target-epsilon=4"
    states = []
    for _ in range(2):
        result = run_script(
            [
                "--set",
                dp,
                "--sites",
                "2",
                "--output-dir",
                str(tmp_path / "runs"),
                "--timeout",
                "150",
            ],
            env=env,
            timeout=180,
        )
        assert result.returncode == 0, result.describe()
        folder = Path(result.last_line)
        summary = check_completed_run(folder, tasks=2, sites=2)
        assert summary["dp_epsilon"] <= 4.0 + 1e-6
        state = Path((folder / "simulated-state.txt").read_text().strip())
        assert (state / "sites" / "privacy" / "site-0" / "ledger.json").is_file()
        assert (state / "server").is_dir()
        states.append(state)
    assert states[0] != states[1]
    assert not (home / ".cache" / "fedreplay").exists(), "a simulation wrote the user's cache"


@pytest.mark.slow
def test_a_secure_sum_runs_in_flower_s_simulation_engine(tmp_path: Path) -> None:
    """fed.aggregation = "secure" through the real engine (Ray, node state kept by Flower,
    messages serialized): every task's round is a SecAgg+ sum of the 3 sites' releases,
    under DP with distributed noise, and the run completes with both epsilons."""
    runs = tmp_path / "runs"
    secure = (
        "solver.arch='ridge' generator.kind='embedding' embedding.base='scatter' "
        "embedding.features=100 replay.mode='per-task' replay.solver-data='synthetic' "
        "fed.rounds-per-task=1 fed.aggregation='secure' tasks.num-tasks=2 dp.enabled=true "
        "dp.min-records=0 dp.delta=1e-5 dp.target-epsilon=8 generator.quality=false"
    )
    env = clean_env()
    for key in ("FEDREPLAY_SITE_DIR", "FEDREPLAY_SERVER_DIR"):  # the launch's own state, not
        env.pop(key, None)  # the test session's (its sites spend budget under DP)
    result = run_script(
        ["--set", secure, "--sites", "3", "--output-dir", str(runs), "--timeout", "200"],
        env=env,
        timeout=240,
    )
    assert result.returncode == 0, result.describe()
    summary = check_completed_run(Path(result.last_line), tasks=2, sites=3)
    assert summary["final_average_accuracy"] > 0.7, summary["accuracy_matrix"]
    assert summary["dp_epsilon"] <= 8.0 < summary["dp_epsilon_own_noise"]
    assert "secure sum of 3 sites' releases unmasked" in result.stderr + result.stdout
