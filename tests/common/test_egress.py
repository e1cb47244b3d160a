"""The egress log records every reply a site sends, and the egress audit checks it.

The federated runs use the in-process grid (tiny digits settings) with the sites' disk
(``FEDREPLAY_SITE_DIR``) in a temporary folder.
"""

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
from flwr.app import Array, ArrayRecord, ConfigRecord, Message, MetricRecord, RecordDict

from client.client_app import app as client_app
from common import egress, wire
from common.audit.cli import main as audit_main
from common.audit.egress_check import check_egress, message_problems, registered_architectures
from common.config import load_config
from common.egress import EgressLog, egress_entry
from server.run.federation import FederatedRun
from server.run.inprocess import InProcessGrid

TINY = {
    "train.iterations": 10,
    "tasks.num-tasks": 2,
    "fed.rounds-per-task": 1,
    "fed.num-sites": 2,
    "solver.hidden": 32,
    "generator.hidden": 32,
    "generator.latent-dim": 8,
    "generator.quality": False,
    "fed.evaluate": "both",
}
SHAPE, CLASSES = (1, 8, 8), 10


def federate(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, hook=None):
    """A tiny 2-site run; returns (run folder, sites dir, every reply the grid received)."""
    sites = tmp_path / "sites"
    monkeypatch.setenv(egress.SITE_DIR_ENV, str(sites))
    cfg = load_config({**TINY, "output-dir": str(tmp_path / "runs")})
    replies: list[tuple[int, Message]] = []

    def spy(sent: Message, reply: Message) -> Message:
        replies.append((sent.metadata.dst_node_id, reply))
        return hook(sent, reply) if hook else reply

    grid = InProcessGrid(client_app, cfg.to_run_config(), num_nodes=2, reply_hook=spy, run_id=7)
    return FederatedRun(cfg).run(grid), sites, replies


def tamper(monkeypatch: pytest.MonkeyPatch, change) -> None:
    """Make the sites change a reply just before it is logged and sent (a faulty site)."""
    real = egress.logged

    def logged(reply: Message, context) -> Message:
        change(reply, int(context.node_config["partition-id"]))
        return real(reply, context)

    monkeypatch.setattr(egress, "logged", logged)


def audit(run_path: Path, sites: Path, *extra: str) -> tuple[int, dict]:
    code = audit_main(["egress", str(run_path), "--sites-dir", str(sites), *extra])
    return code, json.loads((run_path / "egress_audit.json").read_text())


# --- the log ---------------------------------------------------------------------------------
def test_entry_describes_every_record_with_hashes_and_bytes() -> None:
    weights = np.arange(6, dtype=np.float32).reshape(2, 3)
    content = RecordDict(
        {
            "solver": ArrayRecord({"solver.w": Array(weights)}),  # type: ignore[dict-item]
            "metrics": MetricRecord({"loss": float("nan"), "num-examples": 3.0}),
            "config": ConfigRecord({"note": "hi", "blob": b"\x00\x01"}),
        }
    )
    entry = egress_entry(
        content, node_id=5, partition_id=1, run_id=9, message_type="train", reply_to="m3"
    )
    records = {r["name"]: r for r in entry["records"]}
    tensor = records["solver"]["tensors"][0]
    assert tensor == {
        "name": "solver.w",
        "shape": [2, 3],
        "dtype": "float32",
        "bytes": 24,
        "sha256": hashlib.sha256(weights.tobytes()).hexdigest(),
    }
    assert records["metrics"]["kind"] == "metric"
    assert records["metrics"]["values"] == {"loss": "nan", "num-examples": 3.0}
    assert records["config"]["values"]["blob"] == {"base64": "AAE=", "bytes": 2}
    assert entry["array_bytes"] == 24 and entry["total_bytes"] == 24 + 16 + 2 + 2
    assert (entry["run_id"], entry["node_id"], entry["partition_id"]) == (9, 5, 1)
    json.dumps(entry, allow_nan=False)


def test_log_appends_one_line_per_message(tmp_path: Path) -> None:
    log = EgressLog.for_site(tmp_path, run_id=3, site=2)
    assert log.path == tmp_path / "egress" / "run-3" / "site-2.jsonl"
    named = EgressLog.for_site(tmp_path, run_id=3, site="st-olav")
    assert named.path == tmp_path / "egress" / "run-3" / "st-olav.jsonl"
    with pytest.raises(ValueError):
        EgressLog.for_site(tmp_path, run_id=3, site="../../etc/passwd")
    log.append({"n": 1})
    log.append({"n": 2})
    assert [e["n"] for e in log.entries()] == [1, 2]


def test_checker_flags_what_the_protocol_does_not_allow() -> None:
    expected = {"solver.w": (2, 3)}
    tensor = {"name": "solver.w", "shape": [2, 3], "dtype": "float32", "bytes": 24}
    ok = {
        "message_type": "train",
        "records": [
            {"name": "solver", "kind": "array", "tensors": [tensor]},
            {"name": "metrics", "kind": "metric", "values": {"num-examples": 3.0}},
            {"name": "site", "kind": "config", "values": {"site-id": "site-0"}},
        ],
    }
    assert message_problems(ok, expected) == []
    wrong = {
        "message_type": "train",
        "records": [
            {
                "name": "solver",
                "kind": "array",
                "tensors": [
                    {**tensor, "dtype": "float64", "bytes": 48},
                    {**tensor, "name": "critic.w"},
                ],
            },
            {"name": "metrics", "kind": "config", "values": {}},
            {"name": "site", "kind": "config", "values": {"site-id": 3}},
        ],
    }
    problems = " | ".join(message_problems(wrong, expected))
    assert "site record must hold one site-id string" in problems
    assert "dtype float64" in problems and "critic.w" in problems and "config record" in problems
    assert "record 'solver' carries tensors of another part: ['critic.w']" in problems
    assert message_problems({"message_type": "telemetry"}, expected) == [
        "message type 'telemetry' may not leave a site"
    ]
    query = {"message_type": "query", "records": [ok["records"][2]]}  # the site id alone
    assert message_problems(query, expected) == []
    assert message_problems({**query, "records": ok["records"]}, expected)  # nothing more
    evaluate = {
        "message_type": "evaluate",
        "records": [
            {
                "name": "metrics",
                "kind": "metric",
                "values": {"accuracy-task-12": 0.5, "loss-solver": 1.0},
            }
        ],
    }
    assert message_problems(evaluate, expected) == [
        "metric 'loss-solver' is not on the evaluate allow-list"
    ]


# --- end to end --------------------------------------------------------------------------------
def test_every_reply_is_logged_and_passes_the_audit(tmp_path, monkeypatch) -> None:
    run, sites, replies = federate(tmp_path, monkeypatch)
    logs = sorted((sites / "egress" / "run-7").glob("*.jsonl"))
    assert [p.name for p in logs] == ["site-0.jsonl", "site-1.jsonl"]
    entries = {p.name: list(EgressLog(p).entries()) for p in logs}
    for pid, node in ((0, 1000), (1, 1001)):
        sent = [r for n, r in replies if n == node]
        logged = entries[f"site-{pid}.jsonl"]
        assert [e["message_type"] for e in logged] == [r.metadata.message_type for r in sent]
        assert [e["reply_to"] for e in logged] == [r.metadata.reply_to_message_id for r in sent]
        assert {e["node_id"] for e in logged} == {node}
        assert all(e["egress_dir"] == str(sites) for e in logged)
        for entry, reply in zip(logged, sent, strict=True):  # the hashes are of what was sent
            if "solver" in reply.content:
                arrays = wire.scholar_of(reply.content)
                hashes = {
                    t["name"]: t["sha256"] for r in entry["records"] for t in r.get("tensors", [])
                }
                assert hashes == {
                    k: hashlib.sha256(np.ascontiguousarray(a.numpy()).tobytes()).hexdigest()
                    for k, a in arrays.items()
                }
    assert sum(len(v) for v in entries.values()) == 8  # 2 sites x 2 rounds x (train + eval)

    code, report = audit(run.path, sites)  # run id found as the only run under egress/
    assert code == 0 and report["ok"] and report["run_id"] == 7 and report["messages"] == 8
    assert set(report["sites"]) == {"site-0", "site-1"}  # keyed by site id, not partition
    assert report["sites"]["site-0"]["array_bytes"] > 0
    assert report["sites"]["site-0"]["partitions"] == [0]
    cfg = load_config({**TINY, "output-dir": str(tmp_path)})
    assert check_egress(logs, cfg=cfg, shape=SHAPE, num_classes=CLASSES).ok


def test_smuggled_array_is_logged_and_fails_the_audit(tmp_path, monkeypatch) -> None:
    def smuggle(reply: Message, pid: int) -> None:
        if pid == 1 and "solver" in reply.content:  # into the solver's record
            reply.content.array_records["solver"]["data.rows"] = Array(
                np.zeros((8, 64), np.float32)
            )

    tamper(monkeypatch, smuggle)
    run, sites, replies = federate(tmp_path, monkeypatch)
    assert any("data.rows" in r.content.array_records.get("solver", {}) for _, r in replies)
    code, report = audit(run.path, sites, "--run-id", "7")
    assert code == 1 and not report["ok"]
    bad = [d for d in report["deviations"] if "data.rows" in d["problem"]]
    assert {(d["site"], d["index"]) for d in bad} == {("site-1", 0), ("site-1", 2)}  # 2 trains
    assert all(d["site"] == "site-1" for d in report["deviations"])


def test_unknown_and_non_scalar_metrics_fail_the_audit(tmp_path, monkeypatch) -> None:
    def leak(reply: Message, pid: int) -> None:
        metrics = reply.content.metric_records[wire.METRICS]
        if reply.metadata.message_type == "train":
            metrics["secret-count"] = 3.0
        else:
            metrics["label-histogram"] = [1.0, 4.0, 2.0]

    tamper(monkeypatch, leak)
    run, sites, _ = federate(tmp_path, monkeypatch)
    code, report = audit(run.path, sites)
    problems = [d["problem"] for d in report["deviations"]]
    assert code == 1
    assert sum("'secret-count' is not on the train allow-list" in p for p in problems) == 4
    assert (
        sum("'label-histogram' is [1.0, 4.0, 2.0], not a finite scalar" in p for p in problems) == 4
    )


def test_a_reply_missing_from_the_log_fails_the_audit(tmp_path, monkeypatch) -> None:
    real = egress.logged
    skipped: list[int] = []

    def forgetful(reply: Message, context) -> Message:
        if context.node_id == 1001 and reply.metadata.message_type == "train" and not skipped:
            skipped.append(1)
            return reply  # sent, never logged
        return real(reply, context)

    monkeypatch.setattr(egress, "logged", forgetful)
    run, sites, _ = federate(tmp_path, monkeypatch)
    code, report = audit(run.path, sites)
    assert code == 1
    assert [d["problem"] for d in report["deviations"]] == [
        "server accepted 2 train replies of node 1001, log has 1"
    ]


def test_under_dp_only_protocol_metrics_may_leave() -> None:
    """Losses and timings are computed on private data and not covered by DP: the egress
    audit flags them under DP unless the run opted in by name."""
    from common.config import load_config

    expected = {"solver.w": (2, 3)}
    tensor = {"name": "solver.w", "shape": [2, 3], "dtype": "float32", "bytes": 24}

    def reply(metrics: dict) -> dict:
        return {
            "message_type": "train",
            "records": [
                {"name": "solver", "kind": "array", "tensors": [tensor]},
                {"name": "metrics", "kind": "metric", "values": metrics},
                {"name": "site", "kind": "config", "values": {"site-id": "site-0"}},
            ],
        }

    dp = load_config({"dp.enabled": True, "dp.delta": 1e-5})
    leaky = reply({"num-examples": 3.0, "dp-epsilon": 1.0, "loss-solver": 0.2})
    assert message_problems(leaky, expected) == []  # without DP: allowed
    assert "loss-solver" in " ".join(message_problems(leaky, expected, dp))
    opted = load_config({"dp.enabled": True, "dp.delta": 1e-5, "dp.release-metrics": "loss-solver"})
    assert message_problems(leaky, expected, opted) == []
    evaluate = {
        "message_type": "evaluate",
        "records": [{"name": "metrics", "kind": "metric", "values": {"accuracy": 0.5}}],
    }
    assert "federated evaluation under DP" in " ".join(message_problems(evaluate, expected, dp))
    # per-class counts leave only in a run that asked for them (replay.mixture), never DP
    counted = reply({"num-examples": 3.0, "class-count-8": 2.0, "class-count-9": 1.0})
    asked = load_config({"replay.mixture": "class-counts"})
    assert message_problems(counted, expected, asked) == []
    assert "class-count-8" in " ".join(message_problems(counted, expected, load_config({})))
    assert "class-count-8" in " ".join(message_problems(counted, expected, dp))


@pytest.mark.parametrize("solver", ["mlp", "ridge"])
def test_an_embedding_release_must_have_a_task_s_rows(solver: str) -> None:
    """A release's rows are the classes of one task (+ the Gram's F rows with ridge), not any
    count from 1 to K: a site cannot send the sums of classes outside its task's size."""
    emb = {
        "generator.kind": "embedding",
        "embedding.features": 20,
        "replay.mode": "per-task",
        "replay.solver-data": "synthetic",
        "fed.rounds-per-task": 2,
        "solver.arch": solver,
        "tasks.class-order": "0,1,2;3,4;5,6,7,8,9",
    }
    cfg = load_config(emb)
    extra = 41 if solver == "ridge" else 0
    shapes = {
        a[wire.EMBEDDING_KEY]
        for a in registered_architectures(cfg, SHAPE, CLASSES, {})
        if wire.EMBEDDING_KEY in a
    }
    assert shapes == {(3 + extra, 41), (2 + extra, 41), (5 + extra, 41)}
