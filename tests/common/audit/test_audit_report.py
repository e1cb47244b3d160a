"""write_report: audit.json parses, audit.md has the tables, roc.png is an image."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from common.audit.canaries import best_lower_bound
from common.audit.membership import AttackResult
from common.audit.report import write_report


def attacks() -> dict[str, AttackResult]:
    rng = np.random.default_rng(0)
    return {
        "site 0 / solver / loss": AttackResult(
            "loss", rng.normal(1, 1, 500), rng.normal(0, 1, 500)
        ),
        "site 0 / solver / lira": AttackResult(
            "lira", rng.normal(3, 1, 500), rng.normal(0, 1, 500)
        ),
    }


def test_writes_all_three_files(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    included = rng.random(1000) < 0.5
    bound = best_lower_bound(included + rng.random(1000), included, delta=1e-5)
    results: dict = {**attacks(), "site 0 / canaries": bound}
    results["site 1 / generator / gan_leaks"] = results["site 0 / solver / loss"].to_dict()
    paths = write_report(
        results,
        tmp_path / "audit",
        title="digits dp",
        accountant_epsilon=8.0,
        delta=1e-5,
        accountant="rdp",
    )
    assert set(paths) == {"json", "markdown", "roc"} and all(p.is_file() for p in paths.values())
    data = json.loads(paths["json"].read_text())
    assert data["scope"] == "sample-level, per site"
    assert data["accountant"] == {"name": "rdp", "epsilon": 8.0, "delta": 1e-5}
    assert set(data["attacks"]) == {k for k in results if "canaries" not in k}
    assert data["attacks"]["site 0 / solver / lira"]["auc"] > 0.95
    assert data["max_epsilon_lower_bound"] == pytest.approx(bound.epsilon_lower_bound)
    md = paths["markdown"].read_text()
    assert md.startswith("# digits dp") and "| site 0 / solver / loss |" in md
    assert "TPR@0.1%FPR" in md and "ε = 8.000 at δ = 1e-05 (RDP)" in md
    assert "**VIOLATION**" not in md and bound.epsilon_lower_bound > 4
    with Image.open(paths["roc"]) as im:
        assert im.format == "PNG" and im.size[0] > 300


def test_flags_a_bound_above_the_accountant_and_non_dp_runs(tmp_path: Path) -> None:
    rng = np.random.default_rng(2)
    included = rng.random(1000) < 0.5
    bound = best_lower_bound(included + rng.random(1000), included, delta=1e-5)
    paths = write_report(
        {"canaries": bound.to_dict()},
        tmp_path,
        title="t",
        accountant_epsilon=1.0,
        delta=1e-5,
        accountant="prv",
    )
    assert "**VIOLATION**" in paths["markdown"].read_text()
    assert json.loads(paths["json"].read_text())["attacks"] == {}
    plain = write_report(
        attacks(), tmp_path / "b", title="t", accountant_epsilon=None, delta=None, accountant=None
    )
    text = plain["markdown"].read_text()
    assert "not differentially private" in text and "No canary audit" in text
    with pytest.raises(ValueError):
        write_report(
            {"x": {"foo": 1}},
            tmp_path / "c",
            title="t",
            **dict.fromkeys(("accountant_epsilon", "delta", "accountant")),
        )
