"""A long round says how it is going: a labelled line as sites answer (sites done, elapsed,
time left in the round), none for the last answer, and the replies are those the wrapped
grid gives, in both ways a grid answers (push and pull; one site after another)."""

import logging
from collections.abc import Iterable

import pytest
from flwr.app import ConfigRecord, Message, RecordDict
from flwr.serverapp import Grid

from common import wire
from server.run.progress_grid import ProgressGrid


@pytest.fixture(autouse=True)
def task_identity() -> None:
    from flwr.supercore.task_identity import TaskIdentity

    TaskIdentity.run_id, TaskIdentity.node_id, TaskIdentity.task_id = 1, 0, 0


def instructions(n: int, kind: str = "train") -> list[Message]:
    out = []
    for i in range(n):
        content = RecordDict({wire.CONFIG: ConfigRecord({"server-round": 3})})
        msg = Message(content=content, message_type=kind, dst_node_id=1000 + i, group_id="g")
        msg.metadata.__dict__["_message_id"] = f"m{i}"
        out.append(msg)
    return out


class Trickling(Grid):
    """A SuperLink-like grid: each pull returns the next site's reply."""

    def __init__(self) -> None:
        self.pushed: list[Message] = []

    def set_run(self, run) -> None: ...

    @property
    def run(self):  # type: ignore[override]
        raise NotImplementedError

    def create_message(self, *a, **k) -> Message:  # type: ignore[override]
        raise NotImplementedError

    def get_node_ids(self) -> Iterable[int]:
        return [m.metadata.dst_node_id for m in self.pushed]

    def push_messages(self, messages: Iterable[Message]) -> Iterable[str]:
        self.pushed = list(messages)
        return [m.metadata.message_id for m in self.pushed]

    def pull_messages(self, message_ids: Iterable[str]) -> Iterable[Message]:
        waiting = [m for m in self.pushed if m.metadata.message_id in set(message_ids)]
        return [Message(RecordDict(), reply_to=waiting[0])] if waiting else []

    def send_and_receive(self, messages, *, timeout=None):  # type: ignore[override]
        raise AssertionError("the wrapper pushes and pulls itself")


def test_sites_answering_are_reported_as_they_answer(
    caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("server.run.progress_grid.PULL_INTERVAL", 0.0)
    ticks = iter(range(0, 1000, 20))  # every look at the clock: 20 s later
    grid = ProgressGrid(Trickling(), every=10.0, clock=lambda: float(next(ticks)))
    with caplog.at_level(logging.INFO, logger="fedreplay.server"):
        replies = list(grid.send_and_receive(instructions(3), timeout=3600))
    assert sorted(r.metadata.reply_to_message_id for r in replies) == ["m0", "m1", "m2"]
    lines = [r.getMessage() for r in caplog.records]
    assert lines[0].startswith("round 3 (train): 1 of 3 sites answered, ")
    assert "s left in the round" in lines[0]
    assert lines[1].startswith("round 3 (train): 2 of 3 sites answered, ")
    assert len(lines) == 2  # the last answer ends the round: its own line follows


def test_a_round_that_runs_out_of_time_returns_what_came(monkeypatch) -> None:
    monkeypatch.setattr("server.run.progress_grid.PULL_INTERVAL", 0.0)
    clock = iter([0.0, 0.0, 0.0, 5.0, 5.0, 11.0, 11.0, 11.0])
    grid = ProgressGrid(Trickling(), clock=lambda: next(clock))
    replies = list(grid.send_and_receive(instructions(5), timeout=10))
    assert 0 < len(replies) < 5  # the timeout, as Flower's grids keep it


def test_queries_pass_through_silently(caplog: pytest.LogCaptureFixture) -> None:
    class Answering(Trickling):
        def send_and_receive(self, messages, *, timeout=None):  # type: ignore[override]
            return [Message(RecordDict(), reply_to=m) for m in messages]

    with caplog.at_level(logging.INFO, logger="fedreplay.server"):
        replies = ProgressGrid(Answering(), every=0).send_and_receive(instructions(2, "query"))
    assert len(list(replies)) == 2 and not caplog.records
