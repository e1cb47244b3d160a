"""ServerApp + ClientApp logic end to end without Ray (in-process grid): protocol,
replay delivery, aggregation with failed, missing and hostile replies."""

from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch
from flwr.app import Array, ArrayRecord, Message, MetricRecord, RecordDict
from flwr.app.error import Error

from client.client_app import app as client_app
from common import wire
from common.config import load_config
from common.results import load_summary
from server.run.federation import FederatedRun
from server.run.inprocess import InProcessGrid

TINY = {
    "train.iterations": 15,
    "tasks.num-tasks": 2,
    "fed.rounds-per-task": 2,
    "fed.num-sites": 2,
    "solver.hidden": 32,
    "generator.hidden": 32,
    "generator.latent-dim": 8,
    "generator.quality": False,
}


def federate(tmp_path: Path, hook=None, nodes: int = 2, **overrides):
    cfg = load_config({**TINY, "output-dir": str(tmp_path), "fed.num-sites": nodes, **overrides})
    grid = InProcessGrid(client_app, cfg.to_run_config(), num_nodes=nodes, reply_hook=hook)
    run = FederatedRun(cfg).run(grid)
    return run, grid


def replay_deliveries(grid: InProcessGrid) -> Counter:
    return Counter(
        (m.metadata.dst_node_id, int(m.content.config_records[wire.CONFIG]["task"]))
        for m in grid.sent
        if wire.has_replay(m.content)
    )


def test_dgr_run_completes_with_summary_and_plots(tmp_path: Path) -> None:
    run, grid = federate(tmp_path)
    summary = load_summary(run.path)
    assert summary["rounds"] == 4 and summary["num_sites"] == 2
    assert all(v is not None for v in summary["accuracy_matrix"][1])
    assert summary["bytes_up_per_site_round"] > 0 and summary["bytes_down_per_site_round"] > 0
    for name in (
        "rounds.png",
        "accuracy_matrix.png",
        "samples.png",
        "final_models.pt",
        "rounds.jsonl",
        "config.json",
    ):
        assert (run.path / name).is_file(), name
    rounds = run.read_jsonl("rounds.jsonl")
    assert [r["round"] for r in rounds] == [1, 2, 3, 4]
    assert all(len(r["sites"]) == 2 and not r["failures"] for r in rounds)
    # Replay of the finished task reaches each site exactly once, at the task boundary.
    assert replay_deliveries(grid) == Counter({(n, 1): 1 for n in grid.node_ids})


def test_only_solver_and_generator_leave_a_site(tmp_path: Path) -> None:
    replies: list[Message] = []

    def spy(sent: Message, reply: Message) -> Message:
        replies.append(reply)
        return reply

    federate(tmp_path, hook=spy, **{"tasks.num-tasks": 1, "fed.rounds-per-task": 1})
    for reply in replies:
        assert set(reply.content.keys()) == {"solver", "generator", wire.METRICS, wire.SITE}
        assert wire.site_id_of(reply.content) in {"site-0", "site-1"}
        for part in ("solver", "generator"):  # each part in its own record
            assert {k.split(".", 1)[0] for k in reply.content.array_records[part]} == {part}
        # the VAE encoder stays at the site
        assert not any("encoder" in k for k in wire.scholar_of(reply.content))


def test_failed_and_missing_replies_do_not_stop_the_round(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    def flaky(sent: Message, reply: Message) -> Message | None:
        node = sent.metadata.dst_node_id
        if node == 1000:
            return Message(Error(code=1, reason="site crashed"), reply_to=sent)
        if node == 1001 and flaky.calls == 0:  # the first reply of site 2 is lost
            flaky.calls += 1
            return None
        return reply

    flaky.calls = 0  # type: ignore[attr-defined]
    with caplog.at_level("INFO", logger="fedreplay.server"):
        run, _ = federate(tmp_path, hook=flaky, nodes=3)
    lines = [r.getMessage() for r in caplog.records if r.getMessage().startswith("round ")]
    lines = [line for line in lines if "elapsed" in line]
    # the round line counts sites by status (it said "1 of 3 sites answered") and says
    # how long is left
    assert lines[0].startswith("round 1/4 (task 1): sites 1 trained, 2 failed"), lines[0]
    assert lines[1].startswith("round 2/4 (task 1): sites 2 trained, 1 failed"), lines[1]
    assert all(" left" in line for line in lines[:3]) and " left" not in lines[3], lines
    rounds = run.read_jsonl("rounds.jsonl")
    assert "site crashed" in rounds[0]["failures"]["1000"]
    assert "no reply" in rounds[0]["failures"]["1001"]
    summary = load_summary(run.path)
    assert summary["failures"] == 5  # 4 crashes + 1 lost reply
    # per site: the crashing one is named by the site id its partition binds (site-0) though
    # it never answered, the one that lost a reply trained in the other rounds, the third
    # trained every round
    assert rounds[0]["site_status"]["site-0"] == {
        "status": "failed",
        "why": "error reply: site crashed",
    }
    sites = summary["sites"]
    assert sites["site-0"]["outcome"] == "failed" and sites["site-0"]["failed"] == 4
    assert sites["site-0"]["reasons"] == {"error reply: site crashed": 4}
    assert sites["site-2"]["outcome"] == "trained" and sites["site-2"]["trained"] == 4
    assert sites["site-1"]["trained"] == 3
    report = (run.path / "report.html").read_text()
    assert "<h2>Sites</h2>" in report and "error reply: site crashed" in report


def test_the_superlinks_error_for_a_dead_node_is_that_nodes_failure(tmp_path: Path) -> None:
    """A SuperLink answers for a node that stopped its heartbeats with an error from node 1
    (itself): the failure is the dead node's, logged once, not node 1's."""

    def dead(sent: Message, reply: Message) -> Message:
        if sent.metadata.dst_node_id != 1000:
            return reply
        error = Message(Error(code=4, reason="Node Unavailable"), reply_to=sent)
        error.metadata.__dict__["_src_node_id"] = 1  # as the SuperLink sends it
        return error

    run, _ = federate(tmp_path, hook=dead, nodes=2)
    for r in run.read_jsonl("rounds.jsonl"):
        assert list(r["failures"]) == ["1000"] and "Node Unavailable" in r["failures"]["1000"]


def test_lost_reply_means_replay_is_sent_again(tmp_path: Path) -> None:
    cfg = load_config({**TINY, "output-dir": str(tmp_path)})
    lost: list[int] = []

    def lose_first_reply_to_replay(sent: Message, reply: Message) -> Message | None:
        node = sent.metadata.dst_node_id
        if node == 1000 and not lost and wire.has_replay(sent.content):
            lost.append(node)
            return None
        return reply

    grid = InProcessGrid(
        client_app, cfg.to_run_config(), num_nodes=2, reply_hook=lose_first_reply_to_replay
    )
    FederatedRun(cfg).run(grid)
    deliveries = replay_deliveries(grid)
    assert lost == [1000]
    assert deliveries[(1000, 1)] == 2, "a site whose reply was lost must get the replay again"
    assert deliveries[(1001, 1)] == 1


@pytest.mark.parametrize("how", ["deleted", "torn"])
def test_a_site_that_lost_its_replay_fails_one_round_then_gets_it_again(
    tmp_path: Path, monkeypatch, how: str
) -> None:
    sites = tmp_path / "sites"
    monkeypatch.setenv("FEDREPLAY_SITE_DIR", str(sites))

    lost: set[Path] = set()

    def forget(sent: Message, reply: Message) -> Message:
        """Every site loses its stored replay right after answering task 2's first round
        (deleted, or torn: a disk that filled up, a copy cut short)."""
        if int(sent.content.config_records[wire.CONFIG]["server-round"]) == 4:
            for f in set(sites.rglob("replay.pt")) - lost:
                if how == "torn":
                    f.write_bytes(b"torn" * 10)
                else:
                    f.unlink()
                lost.add(f)
        return reply

    run, grid = federate(tmp_path, hook=forget, **{"fed.rounds-per-task": 3})
    rounds = run.read_jsonl("rounds.jsonl")
    assert len(lost) == 2
    assert [r["round"] for r in rounds] == [1, 2, 3, 4, 5, 6]
    reasons = list(rounds[4]["failures"].values())
    assert len(reasons) == 2 and all("needs the replay payload" in r for r in reasons), reasons
    assert rounds[5]["accepted"] and not rounds[5]["failures"]  # the replay came again
    assert replay_deliveries(grid) == Counter({(n, 1): 2 for n in grid.node_ids})
    assert load_summary(run.path)["status"] == "completed"


@pytest.mark.parametrize(
    "attack", ["extra-array", "nan", "wrong-shape", "nan-partition-id", "inf-metric"]
)
def test_hostile_updates_are_rejected_before_aggregation(tmp_path: Path, attack: str) -> None:
    def hostile(sent: Message, reply: Message) -> Message:
        if sent.metadata.dst_node_id != 1001:
            return reply
        arrays = dict(reply.content.array_records["solver"].items())  # the solver part
        key = next(iter(arrays))
        metrics = reply.content.metric_records[wire.METRICS]
        if attack in ("nan-partition-id", "inf-metric"):  # used to crash the ServerApp
            values = dict(metrics.items())
            values["partition-id" if attack == "nan-partition-id" else "replay-ratio"] = (
                float("nan") if attack == "nan-partition-id" else float("inf")
            )
            metrics = MetricRecord(values)
        elif attack == "extra-array":  # smuggled into the solver's record
            arrays["data.rows"] = Array(np.zeros((8, 64), np.float32))
        elif attack == "nan":
            arrays[key] = Array(np.full(arrays[key].numpy().shape, np.nan, np.float32))
        else:
            arrays[key] = Array(np.zeros((3, 3), np.float32))
        content = RecordDict(
            {
                "solver": ArrayRecord(arrays),  # type: ignore[arg-type]
                "generator": reply.content.array_records["generator"],
                wire.METRICS: metrics,
            }
        )
        return Message(content, reply_to=sent)

    run, _ = federate(tmp_path, hook=hostile)
    rounds = run.read_jsonl("rounds.jsonl")
    assert all("rejected" in r["failures"]["1001"] for r in rounds)
    assert all(len(r["sites"]) == 1 for r in rounds)
    models = torch.load(run.path / "final_models.pt")
    assert all(torch.isfinite(v).all() for part in models.values() for v in part.values())
    assert load_summary(run.path)["final_average_accuracy"] > 0.0


def test_ensemble_mode_replays_every_sites_generator(tmp_path: Path) -> None:
    run, grid = federate(tmp_path, **{"replay.mode": "ensemble", "generator.quality": True})
    with_replay = [m for m in grid.sent if wire.has_replay(m.content)]
    payload = wire.payload_of(with_replay[0].content)
    assert len(payload.generators) == 2 and len(payload.weights) == 2
    # The quality of what sites replay (the mixture) is measured after every task.
    summary = load_summary(run.path)
    quality = summary["replay_quality_per_task"]
    assert [len(q) for q in quality] == [1, 2]
    assert all(0.0 <= q <= 1.0 for row in quality for q in row)
    assert summary["generator_quality"] == quality[-1]
    # The last update of every site is kept for the privacy audit.
    updates = torch.load(run.path / "site_updates.pt", weights_only=True)
    assert sorted(updates) == ["site-0", "site-1"]
    assert all(u["round"] == 4 for u in updates.values())
    assert set(updates["site-0"]) == {"round", "partition", "solver", "generator"}
    assert updates["site-1"]["partition"] == 1
    ensemble = torch.load(run.path / "final_ensemble.pt", weights_only=True)
    assert len(ensemble["generators"]) == len(ensemble["weights"]) == 2


def test_class_counts_travel_up_and_weigh_each_class_of_the_replay(tmp_path: Path) -> None:
    replies: list[Message] = []

    def spy(sent: Message, reply: Message) -> Message:
        replies.append(reply)
        return reply

    overrides = {"replay.mode": "ensemble", "replay.mixture": "class-counts"}
    run, grid = federate(tmp_path, hook=spy, **overrides, **{"partition.kind": "dirichlet"})
    # every site reports its records of each class of the current task, and they add up
    for reply in replies:
        metrics = wire.scalar_metrics(reply.content.metric_records[wire.METRICS])
        counts = {k: v for k, v in metrics.items() if k.startswith("class-count-")}
        task = 0 if not counts or "class-count-0" in counts else 1
        assert sorted(counts) == [f"class-count-{c}" for c in ((0, 1), (2, 3))[task]]
        assert sum(counts.values()) == metrics["num-examples"]
    sent = next(m for m in grid.sent if wire.has_replay(m.content))
    payload = wire.payload_of(sent.content)
    # task 1 replays task 0's classes from both sites' generators, each class by the records
    # of it that the sites reported in their last reply of task 0
    last = {}
    for reply in replies:
        metrics = wire.scalar_metrics(reply.content.metric_records[wire.METRICS])
        if "class-count-0" in metrics:
            last[wire.site_id_of(reply.content)] = metrics
    assert len(payload.class_weights) == 2 and payload.classes == (0, 1)
    for row, weight in zip(payload.class_weights, payload.weights, strict=True):
        assert sum(row) == pytest.approx(weight)  # the site's bounded weight, split
    shares = sorted(
        tuple(m[f"class-count-{c}"] / m["num-examples"] for c in (0, 1)) for m in last.values()
    )
    got = sorted(tuple(w / sum(row) for w in row) for row in payload.class_weights)
    assert np.allclose(got, shares)
    ensemble = torch.load(run.path / "final_ensemble.pt", weights_only=True)
    assert len(ensemble["class_weights"]) == 2 and len(ensemble["class_weights"][0]) == 4


def test_a_site_claiming_1e30_records_of_a_class_moves_only_its_own_bounded_weight(
    tmp_path: Path,
) -> None:
    def hostile(sent: Message, reply: Message) -> Message:
        if sent.metadata.dst_node_id != 1001 or sent.metadata.message_type != "train":
            return reply
        values = dict(reply.content.metric_records[wire.METRICS].items())
        for key in [k for k in values if k.startswith("class-count-")]:
            values[key] = 0.0
        values["class-count-0"] = 1e30  # "all of class 0 is mine"
        content = RecordDict(dict(reply.content.items()))
        content[wire.METRICS] = MetricRecord(values)
        return Message(content, reply_to=sent)

    overrides = {"replay.mode": "ensemble", "replay.mixture": "class-counts"}
    _, grid = federate(tmp_path, hook=hostile, **overrides, **{"partition.kind": "dirichlet"})
    sent = next(m for m in grid.sent if wire.has_replay(m.content))
    payload = wire.payload_of(sent.content)
    assert payload.classes == (0, 1) and len(payload.class_weights) == 2
    rows = sorted(payload.class_weights, key=lambda row: row[1])  # the hostile row: 0 for 1
    hostile_row, honest_row = rows
    assert hostile_row[1] == 0.0
    # its whole claim is worth its bounded weight on class 0, never 1e30
    assert hostile_row[0] in payload.weights and hostile_row[0] < 1e6
    assert sum(honest_row) in payload.weights


def test_per_task_mode_keeps_every_finished_tasks_generators(tmp_path: Path) -> None:
    run, grid = federate(tmp_path, **{"replay.mode": "per-task", "tasks.num-tasks": 3})
    payloads = {}
    for m in grid.sent:
        if wire.has_replay(m.content):
            p = wire.payload_of(m.content)
            payloads[p.task] = p
    assert sorted(payloads) == [1, 2]
    # task 1 replays task 0 from both sites' generators of task 0; task 2 keeps those two
    # (unchanged) and adds both sites' generators of task 1, each drawing its own classes
    assert payloads[1].generator_classes == ((0, 1), (0, 1))
    assert payloads[2].generator_classes == ((0, 1), (0, 1), (2, 3), (2, 3))
    assert payloads[2].classes == (0, 1, 2, 3)
    for old, kept in zip(payloads[1].generators, payloads[2].generators[:2], strict=True):
        assert all(torch.equal(old[k], kept[k]) for k in old)
    ensemble = torch.load(run.path / "final_ensemble.pt", weights_only=True)
    assert len(ensemble["generators"]) == 6 and ensemble["generator_classes"][-1] == [4, 5]
    assert load_summary(run.path)["replay_mode"] == "per-task"


def test_federated_evaluation_builds_the_matrix_without_server_data(tmp_path: Path) -> None:
    run, _ = federate(tmp_path, **{"fed.evaluate": "federated"})
    summary = load_summary(run.path)
    assert all(v is not None for v in summary["accuracy_matrix"][1])
    rounds = run.read_jsonl("rounds.jsonl")
    assert rounds[-1]["federated_evaluation"]["accuracy-task-0"] >= 0


@pytest.mark.parametrize("method", ["none", "exact", "joint"])
def test_baselines_run_on_the_same_protocol(tmp_path: Path, method: str) -> None:
    run, grid = federate(tmp_path, method=method)
    assert load_summary(run.path)["method"] == method
    assert not replay_deliveries(grid), f"{method} must not ship replay models"


@pytest.mark.parametrize("mode", ["global", "ensemble"])
def test_gan_generator_federates_and_its_discriminator_stays_home(
    tmp_path: Path, mode: str
) -> None:
    replies: list[Message] = []

    def spy(sent: Message, reply: Message) -> Message:
        replies.append(reply)
        return reply

    run, grid = federate(tmp_path, hook=spy, **{"generator.kind": "gan", "replay.mode": mode})
    summary = load_summary(run.path)
    assert summary["status"] == "completed"
    assert all(v is not None for v in summary["accuracy_matrix"][1])
    assert replay_deliveries(grid) == Counter({(n, 1): 1 for n in grid.node_ids})
    for reply in replies:
        keys = list(wire.scholar_of(reply.content))
        assert {k.split(".", 1)[0] for k in keys} == {"solver", "generator"}
        assert not any("discriminator" in k for k in keys)
    models = torch.load(run.path / "final_models.pt", weights_only=True)
    assert models["generator"] is not None and len(models["generator"]) > 0
