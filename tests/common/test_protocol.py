"""The protocol is declared once (common.protocol) and its readers follow it."""

from pathlib import Path

import pytest
from flwr.app import Message

from client.client_app import app as client_app
from common import protocol, wire
from common.audit.egress_check import ALLOWED_RECORDS
from common.config import load_config
from server.robust.reply_checks import check_train_reply
from server.run.federation import FederatedRun
from server.run.inprocess import InProcessGrid

REPO = Path(__file__).resolve().parents[2]


def test_docs_hold_the_declaration() -> None:
    assert protocol.describe() in (REPO / "docs" / "protocol.md").read_text(encoding="utf-8")


def test_a_message_spec_names_what_is_wrong() -> None:
    spec = protocol.TRAIN_REPLY
    ok = {"solver": "array", "metrics": "metric", "site": "config"}
    assert spec.problems(ok) == []
    assert spec.problems({**ok, "generator": "array"}) == []  # a part of its own, optional
    (missing,) = spec.problems({"solver": "array", "metrics": "metric"})
    assert "missing ['site']" in missing
    (extra,) = spec.problems({**ok, "critic": "array"})
    assert "not allowed ['critic']" in extra
    (kind,) = spec.problems({**ok, "site": "array"})
    assert "'site' is a array record, expected config" in kind
    # a once-per-task record is allowed down, never up
    assert protocol.TRAIN_INSTRUCTION.problems({"solver": "array", "config": "config"}) == []
    assert "generator" not in protocol.EVALUATE_INSTRUCTION.allowed  # the solver alone
    replay = {"solver": "array", "config": "config", "replay.solver": "array",
              "replay.generator.0": "array", "replay.generator.1": "array",
              "replay-meta": "config"}  # fmt: skip
    assert protocol.TRAIN_INSTRUCTION.problems(replay) == []  # one record per model
    assert "replay.generator.<i>" in protocol.TRAIN_INSTRUCTION.allowed
    (up,) = spec.problems({**ok, "replay.generator.0": "array"})  # never up
    assert "not allowed ['replay.generator.0']" in up


def test_the_egress_audit_reads_the_declaration() -> None:
    assert {
        "train": protocol.TRAIN_REPLY.allowed,
        "evaluate": protocol.EVALUATE_REPLY.allowed,
        "query": protocol.SITE_REPLY.allowed,
    } == ALLOWED_RECORDS


def test_what_travels_is_what_is_declared(tmp_path: Path) -> None:
    """Every instruction and reply of a real (in-process) run matches its declaration."""
    seen: list[tuple[Message, Message]] = []

    def spy(sent: Message, reply: Message) -> Message:
        seen.append((sent, reply))
        return reply

    cfg = load_config(
        {
            "train.iterations": 5,
            "tasks.num-tasks": 2,
            "fed.num-sites": 3,
            "fed.fraction-train": 0.67,  # 2 of 3 sampled: the server asks who is who
            "fed.min-sites": 2,
            "fed.evaluate": "both",
            "generator.quality": False,
            "output-dir": str(tmp_path),
        }
    )
    grid = InProcessGrid(client_app, cfg.to_run_config(), num_nodes=3, reply_hook=spy)
    run = FederatedRun(cfg)
    run.run(grid)
    # the key sites are sampled by never reaches a site (it could pick an id to rank first)
    key = run.fedreplay.sampler.key
    assert len(key) == 32
    for sent, _ in seen:
        for record in sent.content.config_records.values():
            assert not any(key in str(v) for v in record.values())
    specs = {
        "train": (protocol.TRAIN_INSTRUCTION, protocol.TRAIN_REPLY),
        "evaluate": (protocol.EVALUATE_INSTRUCTION, protocol.EVALUATE_REPLY),
        "query": (protocol.SITE_QUERY, protocol.SITE_REPLY),
    }
    assert {s.metadata.message_type for s, _ in seen} == {"train", "evaluate", "query"}
    for sent, reply in seen:
        down, up = specs[sent.metadata.message_type]
        assert down.problems(wire.records_of(sent.content)) == []
        assert up.problems(wire.records_of(reply.content)) == []
        for name in set(reply.content.array_records) & set(protocol.PART_NAMES):
            # each part in its own record
            assert {protocol.part_of(k) for k in reply.content.array_records[name]} == {name}
        if sent.metadata.message_type == "evaluate":  # the solver alone goes to evaluation
            assert set(sent.content.array_records) == {"solver"}
        for name in reply.content.metric_records.get(wire.METRICS, {}):
            # every number a site sent is declared (name and message) in common.protocol
            assert protocol.metric_declared(sent.metadata.message_type, name), name


def test_every_metric_name_is_declared_once() -> None:
    """The readers take their metric names from the declaration: a name the protocol
    does not declare is refused by the egress audit, and the DP release sets are its
    kinds."""
    from common.audit.egress_check import metric_allowed
    from common.config import RELEASABLE_METRICS
    from common.privacy.release import DP_METRICS, PROTOCOL_TRAIN_METRICS

    names = [(m.message, m.name) for m in protocol.METRIC_LIST]
    assert len(names) == len(set(names))
    assert "dp-epsilon" in DP_METRICS and "num-examples" in PROTOCOL_TRAIN_METRICS
    assert not DP_METRICS & PROTOCOL_TRAIN_METRICS
    opt_in = {"loss-solver", "loss-generator", "loss-discriminator", "train-time-s"}
    assert opt_in | {"evaluation"} == RELEASABLE_METRICS
    assert metric_allowed("evaluate", "accuracy-task-3")
    assert metric_allowed("train", "class-count-7")
    assert not metric_allowed("train", "accuracy-task-3")  # an evaluate metric, not a train one
    assert not metric_allowed("train", "loss-critic")  # not declared
    assert not metric_allowed("evaluate", "accuracy-task-x")
    dp = load_config({"dp.enabled": True, "dp.target-epsilon": 8.0, "dp.delta": 1e-5})
    assert metric_allowed("train", "dp-epsilon", dp)
    assert not metric_allowed("train", "loss-solver", dp)  # opt-in under DP
    assert not metric_allowed("train", "class-count-7", dp)  # never under DP
    assert "| train | `dp-epsilon` |" in protocol.describe()


def test_the_server_refuses_an_undeclared_record() -> None:
    from flwr.app import ArrayRecord, RecordDict

    from common.models import build_solver

    solver = build_solver(load_config({}).solver, (1, 8, 8), 10)
    content = RecordDict(
        {
            **wire.part_records(wire.scholar_record(solver, None)),
            wire.METRICS: wire.metrics_record({"num-examples": 1.0}),
            wire.SITE: wire.site_record("site-0"),
            "critic": ArrayRecord(),
        }
    )
    with pytest.raises(wire.WireError, match=r"not allowed \['critic'\]"):
        check_train_reply(content, solver=solver, generator=None)


def test_a_reply_is_decoded_once_into_a_typed_reply() -> None:
    from flwr.app import RecordDict

    from common.models import build_solver

    solver = build_solver(load_config({}).solver, (1, 8, 8), 10)
    content = RecordDict(
        {
            **wire.part_records(wire.scholar_record(solver, None)),
            wire.METRICS: wire.metrics_record({"num-examples": 3.0}),
            wire.SITE: wire.site_record("site-0"),
        }
    )
    got = check_train_reply(content, solver=solver, generator=None)
    assert got.site_id == "site-0" and got.metrics["num-examples"] == 3.0
    assert got.release is None
    assert set(got.scholar) == {f"solver.{k}" for k in solver.state_dict()}
    keys = sorted(got.scholar)
    assert got.arrays(keys)[keys[0]].shape == tuple(solver.state_dict()[keys[0][7:]].shape)
