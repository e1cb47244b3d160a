"""A run folder written before an option was removed still loads for an audit, unless the
run used the option (then the error names it)."""

import json
from pathlib import Path

import pytest

from common.audit.run_folder import load_run_config
from common.config import load_config


def write_config(run: Path, **solver_extra: object) -> None:
    cfg = load_config({"solver.hidden": 32}).to_dict()
    cfg["solver"].update(solver_extra)
    run.mkdir()
    (run / "config.json").write_text(json.dumps(cfg))


def test_a_run_from_before_the_balance_option_went_loads(tmp_path: Path) -> None:
    write_config(tmp_path / "old", balance_steps=0, balance_samples=1000)
    assert load_run_config(tmp_path / "old").solver.hidden == 32


def test_a_run_that_used_a_removed_option_is_named(tmp_path: Path) -> None:
    write_config(tmp_path / "used", balance_steps=500, balance_samples=1000)
    with pytest.raises(ValueError, match=r"solver\.balance-steps = 500"):
        load_run_config(tmp_path / "used")


def test_the_options_pruned_later_are_retired_the_same_way(tmp_path: Path) -> None:
    """dp.class-histogram, dgm.growth and dgm.embedding-lr went (issue 35): a run folder
    that left them at their defaults loads and resumes; one that used them is named."""
    from common.config import ConfigError
    from server.launch.launcher import resume_overrides

    cfg = load_config({"solver.hidden": 32}).to_dict()
    cfg["dp"]["class_histogram"] = False
    cfg["dgm"].update(growth=True, embedding_lr=0.02)
    (tmp_path / "old").mkdir()
    (tmp_path / "old" / "config.json").write_text(json.dumps(cfg))
    assert load_run_config(tmp_path / "old").solver.hidden == 32
    assert resume_overrides(tmp_path / "old")["solver.hidden"] == 32
    cfg["dgm"]["growth"] = False
    (tmp_path / "grew-not").mkdir()
    (tmp_path / "grew-not" / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(ValueError, match=r"dgm\.growth = False"):
        load_run_config(tmp_path / "grew-not")
    with pytest.raises(ConfigError, match=r"dgm\.growth = False"):
        resume_overrides(tmp_path / "grew-not")
