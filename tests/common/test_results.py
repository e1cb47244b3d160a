"""Run folders, atomic JSON, the summary contract and its one-line rendering."""

from __future__ import annotations

import json
import math
import os
import threading
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from common import results
from common.config import load_config
from common.metrics import AccuracyMatrix
from common.results import (
    RunFolder,
    build_summary,
    load_summary,
    summary_line,
    validate_summary,
)


def two_task_summary(**extra: Any) -> dict[str, Any]:
    matrix = AccuracyMatrix.from_list([[1.0, None], [0.6, 0.9]])
    return build_summary(
        matrix=matrix,
        wall_time_s=312.4,
        method="dgr",
        dataset="mnist",
        scenario="class",
        experiment="demo",
        extra=extra or None,
    )


def test_create_names_and_uniqueness(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(results, "_timestamp", lambda: "20240102-030405")
    folders = [RunFolder.create(tmp_path / "runs", "exp") for _ in range(3)]
    assert [f.path.name for f in folders] == [
        "exp-20240102-030405",
        "exp-20240102-030405-1",
        "exp-20240102-030405-2",
    ]
    assert all(f.path.is_dir() for f in folders)


def test_create_concurrently_never_shares(tmp_path: Path) -> None:
    made: list[Path] = []

    def worker() -> None:
        made.append(RunFolder.create(tmp_path, "race").path)

    threads = [threading.Thread(target=worker) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(set(made)) == 8
    assert all(p.name.startswith("race-") for p in made)


def test_write_json_converts_nan_numpy_torch(tmp_path: Path) -> None:
    run = RunFolder.create(tmp_path, "j")
    obj = {
        "nan": float("nan"),
        "inf": float("inf"),
        "np": np.float32(0.5),
        "npi": np.int64(3),
        "t": torch.tensor(2.5),
        "arr": np.array([1.0, np.nan]),
        "nested": [(1, torch.tensor([1, 2]))],
        "flag": np.bool_(True),
        "where": Path("a/b"),
    }
    path = run.write_json("x.json", obj)
    text = path.read_text()
    assert "NaN" not in text and "Infinity" not in text
    assert json.loads(text) == {
        "nan": None,
        "inf": None,
        "np": 0.5,
        "npi": 3,
        "t": 2.5,
        "arr": [1.0, None],
        "nested": [[1, [1, 2]]],
        "flag": True,
        "where": "a/b",
    }
    assert run.read_json("x.json")["npi"] == 3


def test_write_json_is_atomic(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    run = RunFolder.create(tmp_path, "a")
    run.write_json("s.json", {"v": 1})
    with pytest.raises(TypeError):
        run.write_json("s.json", {"v": object()})
    assert run.read_json("s.json") == {"v": 1}

    def broken_replace(src: str, dst: str) -> None:
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", broken_replace)
    with pytest.raises(OSError):
        run.write_json("s.json", {"v": 2})
    assert run.read_json("s.json") == {"v": 1}
    assert sorted(p.name for p in run.path.iterdir()) == ["s.json"]  # no temp files left


def test_jsonl_and_config(tmp_path: Path) -> None:
    run = RunFolder.create(tmp_path, "l")
    run.append_jsonl("rounds.jsonl", {"round": 1, "acc": float("nan")})
    run.append_jsonl("rounds.jsonl", {"round": 2, "acc": np.float64(0.5)})
    assert run.read_jsonl("rounds.jsonl") == [{"round": 1, "acc": None}, {"round": 2, "acc": 0.5}]
    cfg = load_config({"method": "none"})
    run.save_config(cfg)
    assert run.read_json("config.json")["method"] == "none"
    assert run.read_json("config.json")["tasks"]["scenario"] == cfg.tasks.scenario


def test_build_write_load_summary(tmp_path: Path) -> None:
    summary = two_task_summary(rounds=4, num_sites=np.int64(3), bytes_up_per_site_round=1024)
    validate_summary(summary)
    assert summary["final_average_accuracy"] == pytest.approx(0.75)
    assert summary["average_forgetting"] == pytest.approx(0.4)
    assert summary["backward_transfer"] == pytest.approx(-0.4)
    assert summary["status"] == "completed" and summary["num_tasks"] == 2
    run = RunFolder.create(tmp_path, "s")
    run.write_summary(summary)
    loaded = load_summary(run.path)
    assert loaded["accuracy_matrix"] == [[1.0, None], [0.6, 0.9]]
    assert loaded["num_sites"] == 3


def test_single_task_summary_has_null_forgetting(tmp_path: Path) -> None:
    m = AccuracyMatrix(1)
    m.record(0, [0.8])
    s = build_summary(
        matrix=m, wall_time_s=1, method="none", dataset="d", scenario="class", experiment="e"
    )
    assert math.isnan(s["average_forgetting"])
    run = RunFolder.create(tmp_path, "one")
    run.write_summary(s)
    assert load_summary(run.path)["average_forgetting"] is None


@pytest.mark.parametrize(
    ("change", "word"),
    [
        ({"final_average_accuracy": None}, "final_average_accuracy"),
        ({"final_average_accuracy": 91.2}, "final_average_accuracy"),
        ({"method": 3}, "method"),
        ({"num_tasks": 3}, "accuracy_matrix"),
        ({"status": "running"}, "status"),
        ({"wall_time_s": "fast"}, "wall_time_s"),
        ({"rounds": 1.5}, "rounds"),
        ({"accuracy_matrix": [[1.0, "x"], [0.6, 0.9]]}, "accuracy_matrix"),
    ],
)
def test_validate_rejects_bad_values(change: dict[str, Any], word: str) -> None:
    with pytest.raises(ValueError, match=word):
        validate_summary(two_task_summary() | change)


def test_validate_names_every_missing_key() -> None:
    summary = two_task_summary()
    del summary["dataset"], summary["wall_time_s"]
    with pytest.raises(ValueError, match=r"wall_time_s: missing; dataset: missing"):
        validate_summary(summary)
    with pytest.raises(ValueError):
        validate_summary([])  # type: ignore[arg-type]


def test_load_summary_missing_and_corrupt(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"no summary\.json"):
        load_summary(tmp_path)
    (tmp_path / "summary.json").write_text("{not json")
    with pytest.raises(ValueError, match="not valid JSON"):
        load_summary(tmp_path)


def test_summary_line() -> None:
    line = summary_line(two_task_summary())
    assert line == "dgr on mnist: final avg acc 75.0%, forgetting 40.0%, BWT -40.0%, 312 s"
    fed = summary_line(two_task_summary(num_sites=4, rounds=10) | {"average_forgetting": None})
    assert "forgetting n/a" in fed and fed.endswith("4 sites, 10 rounds")
