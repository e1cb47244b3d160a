"""The server side of a method with nothing to do beyond the loop (DGR and the baselines
none / exact / joint), and the four hooks every method's server side has."""

from __future__ import annotations

from typing import TYPE_CHECKING

from common.models.generator import Generator
from common.replay import ReplayPayload

if TYPE_CHECKING:  # (the run calls the hooks with itself; nothing here imports it)
    from server.run.federation import FederatedRun


class ServerSide:
    """A method with nothing to do at the server beyond the loop (DGR, none, exact, joint)."""

    def __init__(self, generator: Generator | None) -> None:
        self.travelling = generator  # the generator sites train and send back

    def release_shape(self, t: int) -> tuple[int, int] | None:
        return None

    def begin_task(self, run: FederatedRun, t: int) -> None:
        pass

    def after_round(self, run: FederatedRun) -> None:
        pass

    def end_task(self, run: FederatedRun, t: int) -> None:
        pass

    def previous(self, payload: ReplayPayload | None, t: int) -> ReplayPayload | None:
        """The replay of the finished tasks that the payload for task ``t + 1`` builds on."""
        return payload
