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
