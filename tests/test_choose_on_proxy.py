"""simulations/choose_on_proxy.py reads its candidates as written, and refuses what it
cannot read (the runs themselves are the benchmark's, not a test's)."""

import importlib.util
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "simulations" / "choose_on_proxy.py"
spec = importlib.util.spec_from_file_location("choose_on_proxy", SCRIPT)
assert spec is not None and spec.loader is not None
choose = importlib.util.module_from_spec(spec)
spec.loader.exec_module(choose)


def test_candidates_and_grids_are_read_as_written() -> None:
    assert choose.parse_candidate("") == {}  # the recipe as shipped
    assert choose.parse_candidate("solver.hidden=400 replay.retries=0") == {
        "solver.hidden": "400",
        "replay.retries": "0",
    }
    assert choose.parse_grid(["train.lr=0.001,0.003"]) == [("train.lr", ["0.001", "0.003"])]
    with pytest.raises(SystemExit, match="is not key=value"):
        choose.parse_candidate("solver.hidden")
    with pytest.raises(SystemExit, match="not key=v1,v2"):
        choose.parse_grid(["train.lr"])


def test_a_grid_and_candidates_together_are_refused() -> None:
    with pytest.raises(SystemExit, match="not both"):
        choose.main(["--run-config", "x.toml", "--grid", "a=1,2", "--candidate", "", "--out", "o"])
    with pytest.raises(SystemExit, match="--grid key=v1,v2 or --candidate"):
        choose.main(["--run-config", "x.toml", "--out", "o"])
