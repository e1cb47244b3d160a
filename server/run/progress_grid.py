"""A Grid that says how a round is going while it waits for the sites.

Flower's ``send_and_receive`` blocks until every sampled site answered (or the round's
timeout), so a long round printed nothing until it ended. :class:`ProgressGrid` wraps any
Grid and does the same push-and-pull itself, logging a labelled line as sites answer:

    round 3 (train): 2 of 5 sites answered, 41 s, about 62 s left in the round

at most one line per ``every`` seconds, never for the round's last answer (the round's own
line follows). The in-process grid answers one site at a time; it is asked one message at
a time, which is what it does anyway. Queries (who is there) are passed through silently.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable

from flwr.app import Message
from flwr.serverapp import Grid

from common import wire
from server.run.grid_wrapper import GridWrapper
from server.run.inprocess import InProcessGrid

log = logging.getLogger("fedreplay.server")

PULL_INTERVAL = 1.0  # seconds between pulls (Flower's own grids: 3 s)
REPORTED = ("train", "evaluate")  # message types a round line is written for


class ProgressGrid(GridWrapper):
    def __init__(
        self,
        grid: Grid,
        *,
        every: float = 10.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        super().__init__(grid)
        self.every = every
        self.clock = clock

    # --- the round, with progress -----------------------------------------------------
    def send_and_receive(
        self, messages: Iterable[Message], *, timeout: float | None = None
    ) -> Iterable[Message]:
        messages = list(messages)
        kind = messages[0].metadata.message_type if messages else ""
        if kind not in REPORTED:
            return self.grid.send_and_receive(messages, timeout=timeout)
        tick = _Progress(_round_of(messages[0]), kind, len(messages), self.clock, self.every)
        if isinstance(self.grid, InProcessGrid):  # one site after another, as it runs them
            out: list[Message] = []
            for i, msg in enumerate(messages):
                out.extend(self.grid.send_and_receive([msg], timeout=timeout))
                tick(i + 1)
            return out
        return self._push_and_pull(messages, timeout, tick)

    def _push_and_pull(
        self, messages: list[Message], timeout: float | None, tick: Callable[[int], None]
    ) -> list[Message]:
        """Flower's send_and_receive (push, then pull until all answered or the timeout),
        with a progress tick after every pull."""
        waiting = set(self.grid.push_messages(messages))
        end = None if timeout is None else self.clock() + timeout
        out: list[Message] = []
        while waiting and (end is None or self.clock() < end):
            pulled = list(self.grid.pull_messages(waiting))
            out.extend(pulled)
            waiting -= {m.metadata.reply_to_message_id for m in pulled}
            tick(len(messages) - len(waiting))
            if waiting:
                time.sleep(PULL_INTERVAL)
        return out


class _Progress:
    """Logs ``round R (kind): k of n sites answered, t s, about u s left in the round``."""

    def __init__(
        self, server_round: int | None, kind: str, n: int, clock: Callable[[], float], every: float
    ) -> None:
        self.label = f"round {server_round} ({kind})" if server_round else kind
        self.n, self.clock, self.every = n, clock, every
        self.start = self.last = clock()
        self.done = 0

    def __call__(self, done: int) -> None:
        now = self.clock()
        if done <= self.done or done >= self.n:  # nothing new, or over: the round's line follows
            return
        if now - self.last < self.every:  # said at a later tick, if the round is still on
            return
        self.done, self.last = done, now
        elapsed = now - self.start
        left = elapsed / done * (self.n - done) if done else None
        log.info(
            "%s: %d of %d sites answered, %.0f s%s",
            self.label,
            done,
            self.n,
            elapsed,
            f", about {left:.0f} s left in the round" if left is not None else "",
        )


def _round_of(msg: Message) -> int | None:
    """The server round an instruction belongs to (None if it says none)."""
    try:
        return int(msg.content.config_records[wire.CONFIG]["server-round"])  # type: ignore[arg-type]
    except (KeyError, TypeError, ValueError):
        return None
