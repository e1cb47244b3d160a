#!/usr/bin/env python
"""Run a federated experiment in one process, without Ray or a SuperLink (for quick sweeps).

    python simulations/run_inprocess.py --run-config simulations/fed_mnist_dgr.toml --sites 5
    python simulations/run_inprocess.py --run-config FILE --set "dp.target-epsilon=3.0"

The ServerApp's run logic talks to the real ClientApp through an in-process Grid
(``server.run.inprocess.InProcessGrid``): same strategy, same wire format, same site code and
privacy state, but the sites train one after another in this process. Results are the
same kind of run folder as ``fedreplay run`` writes; wall times are *not* comparable
with Flower's simulation (no parallel sites, no Ray or message overhead). Benchmarks that
report time use ``fedreplay run``. The last line printed is the run folder's path.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from client.client_app import app as client_app  # noqa: E402
from common.config import ConfigError, load_config, user_overrides  # noqa: E402
from server.launch.launcher import isolated_env, remember_state, simulated_state  # noqa: E402
from server.run.federation import FederatedRun  # noqa: E402
from server.run.inprocess import InProcessGrid  # noqa: E402
from server.run.output_dir import output_base, resolve_output_dir  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--run-config", default=None, help="override file (TOML) from simulations/")
    p.add_argument("--set", action="append", default=[], help='inline overrides "k=v k2=v2"')
    p.add_argument("--sites", type=int, default=None, help="number of sites (fed.num-sites)")
    p.add_argument("--output-dir", default=None, help="where the run folder is created")
    p.add_argument("--run-id", type=int, default=None, help="Flower run id (default: random)")
    args = p.parse_args(argv)
    overrides: dict = {}
    try:
        overrides.update(user_overrides(args.run_config, args.set))
        if args.sites:
            overrides["fed.num-sites"] = args.sites
        if args.output_dir:
            overrides["output-dir"] = str(output_base(args.output_dir, ""))  # a shell path
        cfg = load_config(overrides)
    except (ConfigError, ValueError) as exc:
        print(f"run_inprocess: {exc}", file=sys.stderr)
        return 2
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    logging.getLogger("fedreplay").setLevel(logging.INFO)
    run_id = args.run_id if args.run_id is not None else int.from_bytes(os.urandom(4))
    # simulated sites and the server keep their state in a folder of this run's own, unless
    # FEDREPLAY_SITE_DIR / FEDREPLAY_SERVER_DIR name persistent ones (as fedreplay run does)
    resume = Path(cfg.fed.resume) if cfg.fed.resume else None
    state = simulated_state(resolve_output_dir(cfg.output_dir), resume)
    os.environ.update(isolated_env(state))
    grid = InProcessGrid(
        client_app, cfg.to_run_config(), num_nodes=cfg.fed.num_sites, run_id=run_id
    )
    logging.getLogger("fedreplay").addHandler(_NameState(state))  # in the run folder, at once
    FederatedRun(cfg).run(grid)
    return 0


class _NameState(logging.Handler):
    """Writes ``simulated-state.txt`` into the run folder as soon as the run logs it (the
    federation's first line names it), so that a killed run resumes with its sites' state."""

    def __init__(self, state: Path) -> None:
        super().__init__(level=logging.INFO)
        self.state = state

    def emit(self, record: logging.LogRecord) -> None:
        if str(record.msg).startswith("run folder") and record.args:
            remember_state(Path(str(record.args[0])), self.state)  # type: ignore[index]


if __name__ == "__main__":
    sys.exit(main())
