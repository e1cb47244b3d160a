"""The ServerApp: a thin edge that parses the run config once and runs the federation."""

from __future__ import annotations

import logging

from flwr.app import Context
from flwr.serverapp import Grid, ServerApp

from common.config import load_config
from server.federation import FederatedRun

app = ServerApp()


def _configure_logging() -> None:
    """INFO for our own ``fedreplay.*`` loggers only.

    ``logging.basicConfig`` at INFO on the root logger would duplicate every Flower log line
    (the ``flwr`` logger has its own handler and propagates) and, under a SuperLink, echo
    every ``httpx`` request of the log streaming itself.
    """
    logger = logging.getLogger("fedreplay")
    if not any(getattr(h, "_fedreplay", False) for h in logger.handlers):
        handler = logging.StreamHandler()
        handler.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
        handler._fedreplay = True  # type: ignore[attr-defined]
        logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    logger.propagate = False


@app.main()
def main(grid: Grid, context: Context) -> None:
    """Learn the task stream across the connected sites with federated generative replay."""
    _configure_logging()
    cfg = load_config(dict(context.run_config))
    FederatedRun(cfg).run(grid)
