"""One site: ``fedreplay single --run-config simulations/x.toml``.

A single site is a federation of one. It runs the same continual-learning loop as every
federated run (:class:`server.run.federation.FederatedRun`: tasks in sequence, replay built
from the previous scholar, evaluation after every task, the same run folder, checkpoint,
resume and privacy ledger), through an in-process grid with one site instead of Flower's
engines. Same configuration schema as the federated app (``[tool.flwr.app.config]``
defaults plus override files and ``--set``); ``train.iterations`` updates per round,
``fed.rounds-per-task`` rounds per task (1 by default). The run folder's path is the last
line printed.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from client.policy import POLICY_KEY, RUN_CONFIG
from common.config import (
    ExperimentConfig,
    load_config,
    user_overrides,
)
from common.sitestate import SITE_ID_KEY
from server.launch.launcher import resume_overrides
from server.run.console import VERBOSE_ENV, configure_logging
from server.run.output_dir import output_base

if TYPE_CHECKING:  # the training stack (torch, Flower) loads when a site trains, not for --help
    from common.results import RunFolder


def single_site_config(cfg: ExperimentConfig) -> ExperimentConfig:
    """The config of a federation of one: one site, started at once; a relative
    ``output-dir`` is resolved here (against ``$FEDREPLAY_OUTPUT_DIR``, else ``~/fedreplay``),
    as every way in resolves it (server.run.output_dir)."""
    fed = dataclasses.replace(cfg.fed, num_sites=1, min_sites=1, fraction_train=1.0)
    return dataclasses.replace(cfg, fed=fed, output_dir=str(output_base(None, cfg.output_dir)))


def run_single_site(cfg: ExperimentConfig, *, site_id: str = "single") -> RunFolder:
    """Learn the whole stream at one site; returns the finished run folder.

    With ``dp.enabled`` the site trains with DP-SGD and spends from its lifetime ledger
    ``site_id``, like any federated site."""
    from client.client_app import app as client_app
    from common.data.types import real_data_for
    from common.sitedata import SiteIdentity, local_stream
    from server.run.federation import FederatedRun
    from server.run.inprocess import InProcessGrid

    cfg = single_site_config(cfg)
    # the person running this is the site's operator: the run config is its policy, unless
    # the site folder holds a policy.toml (client.policy); spent records stay DP either way
    node = {"partition-id": 0, "num-partitions": 1, SITE_ID_KEY: site_id, POLICY_KEY: RUN_CONFIG}
    if cfg.dp.enabled:  # a federated site may sit a task out; a single site would learn nothing
        stream = local_stream(cfg, SiteIdentity(0, 1, site_id))
        for t in range(len(stream)):
            if len(real_data_for(cfg.method, stream.tasks, t)) < cfg.dp.min_records:
                raise ValueError(
                    f"task {t + 1} has fewer than dp.min-records={cfg.dp.min_records} records: "
                    "a single site cannot sit a task out; lower dp.min-records"
                )
    # a run id of its own (not the in-process default 1): the site's egress log is kept
    # per run id, and single-site runs used to append to one shared log
    grid = InProcessGrid(
        client_app,
        cfg.to_run_config(),
        num_nodes=1,
        node_configs=[node],
        run_id=int.from_bytes(os.urandom(4), "little") or 1,
    )
    return FederatedRun(cfg).run(grid)


def config_from_args(config: Sequence[str], overrides: str) -> ExperimentConfig:
    return load_config(user_overrides(config, [overrides]))


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="fedreplay single", description=__doc__.split("\n")[0])
    parser.add_argument(
        "--run-config",
        action="append",
        default=[],
        help="override file(s) in TOML with [tool.flwr.app.config] keys",
    )
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        dest="overrides",
        help="inline overrides (repeatable), e.g. --set \"method='none' train.iterations=100\"",
    )
    parser.add_argument("--resume", metavar="RUN_DIR", help="resume a killed run")
    parser.add_argument("--no-progress", action="store_true", help="(kept for old commands)")
    parser.add_argument(
        "--verbose",
        action="store_true",
        help="show Flower's full log on the console too (always in the run folder's flower.log)",
    )
    parser.add_argument(
        "--site-id",
        default="single",
        help="the site's stable id: its lifetime privacy ledger under dp.enabled",
    )
    args = parser.parse_args(argv)
    if args.verbose:
        os.environ[VERBOSE_ENV] = "1"
    configure_logging()
    try:
        if args.resume:
            if args.run_config or args.overrides:
                raise ValueError("--resume uses the run's own config: no --run-config or --set")
            cfg = load_config(resume_overrides(Path(args.resume)))
        else:
            cfg = config_from_args(args.run_config, " ".join(args.overrides))
    except (ValueError, OSError) as exc:
        print(f"fedreplay single: {exc}", file=sys.stderr)
        return 2
    from common.privacy.ledger import BudgetExceeded, PrivacyStateError
    from server.run.checkpoint import ResumeError
    from server.run.finish import RunFailed

    try:
        run = run_single_site(cfg, site_id=args.site_id)
    except (BudgetExceeded, PrivacyStateError, RunFailed, ResumeError) as exc:
        print(f"fedreplay single: {exc}", file=sys.stderr)
        return 3
    assert run.path.is_dir()  # its path was the last line printed (server.run.finish)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
