"""The ServerApp: a thin edge that parses the run config once and runs the federation."""

from __future__ import annotations

from flwr.app import Context
from flwr.serverapp import Grid, ServerApp

from common.config import load_config
from server.run.console import configure_logging
from server.run.federation import FederatedRun

app = ServerApp()


@app.main()
def main(grid: Grid, context: Context) -> None:
    """Learn the task stream across the connected sites with federated generative replay."""
    configure_logging()
    cfg = load_config(dict(context.run_config))
    FederatedRun(cfg).run(grid)
