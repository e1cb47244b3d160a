"""A failing site answers with an error reply that names the error but no local path."""

from pathlib import Path

from flwr.app import ConfigRecord, Context, Message, MessageType, RecordDict
from flwr.supercore.task_identity import TaskIdentity

from client.client_app import app as client_app
from common import wire
from common.config import load_config


def test_error_reply_carries_no_local_path(tmp_path: Path) -> None:
    TaskIdentity.run_id, TaskIdentity.node_id, TaskIdentity.task_id = 1, 0, 0
    secret = tmp_path / "hospital-x" / "patients"
    cfg = load_config({"data.name": "mnist"})
    context = Context(
        run_id=1,
        node_id=7,
        node_config={"data-root": str(secret), "partition-id": 0, "num-partitions": 1},
        state=RecordDict(),
        run_config=cfg.to_run_config(),
    )
    config = ConfigRecord({"task": 0, "seed": 0, "iterations": 1, "server-round": 1})
    msg = Message(RecordDict({wire.CONFIG: config}), dst_node_id=7, message_type=MessageType.TRAIN)
    reply = client_app(msg, context)
    assert reply.has_error()
    reason = reply.error.reason
    assert "hospital-x" not in reason and str(tmp_path) not in reason, reason
    assert reason.startswith("DatasetNotFoundError") and "<path>" in reason, reason
