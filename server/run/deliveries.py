"""What the server sends a site once per task and then relies on it holding."""

from __future__ import annotations


class Deliveries:
    """Nodes that hold something sent once per task (the task's replay; DGM's whole
    generator): sent in a round, held once the node's reply to that round is accepted."""

    def __init__(self) -> None:
        self.held: set[int] = set()
        self.sent: set[int] = set()  # this round

    def reset(self) -> None:
        """A new task: nobody holds its delivery yet."""
        self.held, self.sent = set(), set()

    def begin_round(self) -> None:
        self.sent = set()

    def holds(self, node: int) -> bool:
        return node in self.held

    def send(self, node: int) -> None:
        self.sent.add(node)

    def confirm(self, node: int) -> None:
        """The node's reply was accepted: what it was sent this round, it now holds."""
        if node in self.sent:
            self.held.add(node)

    def forget(self, nodes: set[int]) -> None:
        """These nodes may have lost it (a failed round): send it again (a site that still
        holds it overwrites it with the same)."""
        self.held -= nodes
