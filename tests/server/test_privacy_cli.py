"""fedreplay privacy: what a privacy officer sees and the operator's recorded actions."""

import json
from pathlib import Path

import numpy as np
import pytest

from common.config import load_config
from common.privacy.ledger import SiteLedger
from server.privacy.cli import main
from server.sites.registry import REGISTRY, SiteRegistry

DP = load_config({"dp.enabled": True, "dp.target-epsilon": 2.0, "dp.delta": 1e-5}).dp


def _train(root: Path, run: str) -> None:
    with SiteLedger.open(root, "st-olav", dp=DP) as ledger:
        ledger.join_run(
            run,
            composition="per-task",
            partitions={"task-0": np.arange(100, dtype=np.uint64)},
            plan={0: (0.1, 100)},
            run_target=2.0,
            max_grad_norm=1.0,
        )
        sigma = ledger.noise_multiplier(run, 0)
        ledger.spend(run, task=0, events=[(sigma, 0.1, 100)], server_round=1)


def test_show_raise_and_release(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    _train(tmp_path / "privacy", "run-a")
    assert main(["show", "--sites-dir", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "st-olav: epsilon 1.9" in out and "run run-a" in out
    assert (
        main(
            [
                "raise-budget",
                "st-olav",
                "--to",
                "1.0",
                "--reason",
                "x",
                "--sites-dir",
                str(tmp_path),
            ]
        )
        == 1
    )
    assert "no raise" in capsys.readouterr().err
    args = ["raise-budget", "st-olav", "--to", "4", "--reason", "IRB 2026-17"]
    assert main([*args, "--sites-dir", str(tmp_path)]) == 0
    capsys.readouterr()
    assert main(["show", "--json", "--sites-dir", str(tmp_path)]) == 0
    shown = json.loads(capsys.readouterr().out)[0]
    assert shown["budget"] == 4.0 and shown["budget_log"][0]["reason"] == "IRB 2026-17"
    # The server's quarantine of a reset site is lifted only by this explicit action.
    registry = SiteRegistry(tmp_path / "server" / REGISTRY)
    assert registry.check("st-olav", epsilon=2.0, steps=200, run="r1") is None
    assert "reset" in (registry.check("st-olav", epsilon=0.5, steps=10, run="r2") or "")
    registry.save()
    assert main(["release-site", "st-olav", "--server-dir", str(tmp_path / "server")]) == 0
    assert (
        SiteRegistry(tmp_path / "server" / REGISTRY).check(
            "st-olav", epsilon=2.5, steps=300, run="r3"
        )
        is None
    )
