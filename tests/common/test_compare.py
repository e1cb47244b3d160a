"""fedreplay compare on two good run folders and one broken one."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from PIL import Image

from common.compare import main
from common.metrics import AccuracyMatrix
from common.results import RunFolder, build_summary


def make_run(
    root: Path, name: str, method: str, rows: list[list[float | None]], **extra: int
) -> Path:
    run = RunFolder.create(root, name)
    summary = build_summary(
        matrix=AccuracyMatrix.from_list(rows),
        wall_time_s=12.0,
        method=method,
        dataset="digits",
        scenario="class",
        experiment=name,
        extra=dict(extra) or None,
    )
    run.write_summary(summary)
    return run.path


@pytest.fixture
def runs(tmp_path: Path) -> Path:
    root = tmp_path / "runs"
    make_run(
        root,
        "dgr",
        "dgr",
        [[1.0, None], [0.8, 0.9]],
        num_sites=3,
        rounds=4,
        bytes_up_per_site_round=2_500_000,
        bytes_down_per_site_round=2048,
    )
    make_run(root, "none", "none", [[1.0, None], [0.0, 1.0]])
    return root


def test_compare_all_ok(runs: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "cmp"
    assert main([str(runs / "*"), "--out", str(out)]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines[-1] == str(out)
    text = (out / "comparison.md").read_text()
    assert "| dgr-" in text and "| none-" in text and "FAILED" not in text
    assert "85.0%" in text and "2.4 MiB" in text and "2.0 KiB" in text
    records = json.loads((out / "comparison.json").read_text())
    assert [r["status"] for r in records] == ["ok", "ok"]
    with Image.open(out / "comparison.png") as im:
        assert im.format == "PNG" and im.size[0] > 200
    page = (out / "comparison.html").read_text()
    assert "<script" not in page and "http" not in page  # opens without a network
    assert page.count("data:image/png;base64,") >= 1 and "dgr-" in page and "85.0%" in page


def test_compare_reports_failures(
    runs: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    broken = RunFolder.create(runs, "broken").path  # no summary.json: crashed run
    stopped = make_run(runs, "stopped", "dgr", [[0.5]])
    summary = json.loads((stopped / "summary.json").read_text())
    (stopped / "summary.json").write_text(json.dumps(summary | {"status": "failed"}))
    out = tmp_path / "cmp"
    code = main(
        [
            str(runs / "dgr-*"),
            str(runs / "none-*"),
            str(broken),
            str(stopped),
            str(runs / "missing-*"),
            "--out",
            str(out),
        ]
    )
    assert code == 1
    printed = capsys.readouterr().out
    assert printed.strip().splitlines()[-1] == str(out)
    table = (out / "comparison.md").read_text()
    failed = [line for line in table.splitlines() if "FAILED" in line and line.startswith("|")]
    assert len(failed) == 3
    assert any(broken.name in line and "no summary.json" in line for line in failed)
    assert any(stopped.name in line and "'failed'" in line for line in failed)
    assert any("missing-*" in line and "matched no folder" in line for line in failed)
    records = json.loads((out / "comparison.json").read_text())
    assert [r["status"] for r in records] == ["ok", "ok", "failed", "failed", "failed"]
    assert (out / "comparison.png").stat().st_size > 1000


def test_compare_shows_privacy_and_the_settings_that_differ(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A DP run looked like a non-DP one: the table now has its epsilon and delta, and
    each run's values of the settings that differ between the runs (as a user types them)."""
    from common.config import load_config

    root = tmp_path / "runs"
    plain = make_run(root, "plain", "dgr", [[1.0, None], [0.8, 0.9]])
    private = RunFolder.create(root, "private")
    summary = build_summary(
        matrix=AccuracyMatrix.from_list([[0.9, None], [0.7, 0.8]]),
        wall_time_s=30.0,
        method="dgr",
        dataset="digits",
        scenario="class",
        experiment="private",
        extra={"dp_scope": "sample-level (add/remove one record), per site", "dp_epsilon": 7.991,
               "dp_delta": 1e-5},
    )  # fmt: skip
    private.write_summary(summary)
    dp = {"dp.enabled": True, "dp.delta": 1e-5, "seed": 3}
    for path, overrides in ((plain, {}), (private.path, dp)):
        (path / "config.json").write_text(json.dumps(load_config(overrides).to_dict()))
    out = tmp_path / "cmp"
    assert main([str(root / "*"), "--out", str(out)]) == 0
    rows = {
        line.split("|")[1].strip().split("-")[0]: line
        for line in (out / "comparison.md").read_text().splitlines()
        if line.startswith("| p")
    }
    assert "eps 7.99, delta 1e-05 (sample-level)" in rows["private"]
    assert "| none |" in rows["plain"]
    assert "dp.delta=1e-05, dp.enabled=True, seed=3" in rows["private"]
    assert "dp.enabled=False" in rows["plain"] and "seed=" in rows["plain"]
    assert "train.iterations" not in rows["plain"], "only what differs"
