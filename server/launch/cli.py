"""Run a federated experiment through real Flower (``flwr run``) and check that it worked.

    fedreplay run --run-config simulations/fed_mnist_dgr.toml
    fedreplay run --set "method='none' tasks.num-tasks=2" --sites 3
    fedreplay run --run-config FILE --connection my-deployment

What it does that bare ``flwr run . --stream`` does not:

- Disables Flower's runtime dependency installation
  (``FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION=1``), so the apps run on this venv's torch.
- Simulation (default): uses a private ``FLWR_HOME`` and a private local SuperLink on free
  ports, started for this run and stopped afterwards, so a stale SuperLink (started earlier,
  with another environment or working directory) can never run it. ``--connection NAME``
  uses the user's ``FLWR_HOME`` (``$FLWR_HOME`` or ``~/.flwr``) and that connection instead
  (a local simulation connection or a deployment SuperLink).
- Always sets the simulation size (``num-supernodes`` = ``--sites``, or ``fed.num-sites`` of
  the config) and keeps ``fed.num-sites`` consistent with it.
- Passes an absolute ``output-dir`` (``--output-dir``, else the config's ``output-dir``
  resolved against ``$FEDREPLAY_OUTPUT_DIR``, else ``~/fedreplay``: ``~/fedreplay/runs`` by
  default, as under ``flwr run .``), so run folders land where you expect, not in the
  SuperLink's working directory.
- Streams the log (and saves it as ``flwr.log`` in the run folder), then checks the outcome
  itself, because ``flwr run`` exits 0 even when the ServerApp crashed: the run folder's
  ``summary.json`` must exist, validate and say ``status: completed``, and ``flwr ls`` must
  not report the run as failed. Exits 1 with a message naming the error otherwise.
- Samples the memory of the whole process tree (SuperLink, ServerApp, Ray workers) from
  ``/proc`` and writes ``resources.json`` into the run folder.

- ``--resume RUN_DIR`` restarts a killed run from its last completed round, with the run's
  own configuration (its ``config.json``) and ``fed.resume`` set: see
  :mod:`server.run.checkpoint`.

The last line printed on success is the run folder's path. Exit codes: 0 completed,
1 the run failed (or could not be verified), 2 bad arguments or configuration,
130 interrupted.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import secrets
import shutil
import signal
import time
from collections.abc import Sequence
from typing import Any

from common.config import ConfigError
from server.launch.launcher import (
    EXIT_FAILED,
    EXIT_INTERRUPTED,
    EXIT_OK,
    EXIT_USAGE,
    Launch,
    say,
    write_overrides,
)
from server.launch.processes import TreeSampler, stop_private_superlink, superlink_pids
from server.run.output_dir import OUTPUT_DIR_ENV


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description="Run a fedreplay experiment with `flwr run` and verify its outcome.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument("--run-config", metavar="FILE", help="override file, e.g. simulations/*.toml")
    p.add_argument(
        "--set",
        action="append",
        metavar='"k=v ..."',
        help="overrides after the file (Flower syntax; strings need inner quotes); repeatable",
    )
    p.add_argument(
        "--sites",
        type=int,
        help="simulation: number of SuperNodes (default: fed.num-sites of the config); "
        "deployment: sets fed.num-sites and fed.min-sites (the run waits for that many)",
    )
    p.add_argument("--cpus-per-site", type=int, default=1, help="CPUs per simulated ClientApp")
    p.add_argument(
        "--parallel-sites",
        type=int,
        default=0,
        help="simulation: train this many sites at once, whatever the machine's core count "
        "(Ray is told there are parallel-sites x cpus-per-site CPUs; each site keeps "
        "cpus-per-site threads); 0 = as many as the cores allow",
    )
    p.add_argument("--gpus-per-site", type=float, default=0.0, help="GPUs per ClientApp")
    p.add_argument(
        "--connection",
        metavar="NAME",
        help="use this connection of your own FLWR_HOME/config.toml instead of a private "
        "local SuperLink",
    )
    p.add_argument(
        "--output-dir",
        help=f"folder for run folders (default: output-dir of the config against "
        f"${OUTPUT_DIR_ENV}, else ~/fedreplay)",
    )
    p.add_argument(
        "--resume",
        metavar="RUN_DIR",
        help="resume a killed run from its last completed round, with its own config",
    )
    p.add_argument("--timeout", type=float, default=0.0, help="stop the run after S seconds")
    p.add_argument(
        "--skip-config-check",
        action="store_true",
        help="do not reject an invalid configuration before starting Flower (the run's "
        "failure is still detected afterwards)",
    )
    p.add_argument(
        "--verbose",
        action="store_true",
        help="show Flower's full log on the console too (it is always in the run folder's "
        "flower.log); reaches the ServerApp of local runs",
    )
    p.add_argument(
        "--keep-flwr-home", action="store_true", help="keep the private FLWR_HOME (debugging)"
    )
    args = p.parse_args(argv)
    if args.resume and (args.run_config or args.set or args.output_dir):
        p.error("--resume uses the run's own config: no --run-config, --set or --output-dir")
    if args.sites is not None and args.sites < 1:
        p.error("--sites must be >= 1")
    if args.cpus_per_site < 1:
        p.error("--cpus-per-site must be a whole number >= 1")
    if args.parallel_sites < 0:
        p.error("--parallel-sites must be >= 0 (0: as many as the cores allow)")
    if args.gpus_per_site < 0:
        p.error("--gpus-per-site must be >= 0")
    return args


def _interrupt(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    signal.signal(signal.SIGTERM, _interrupt)  # clean up (stop the SuperLink) on SIGTERM too
    try:
        launch = Launch(args)
    except ConfigError as exc:
        say(f"error: {exc}")
        return EXIT_USAGE
    try:
        return _main(launch)
    finally:
        if launch.private:
            stop_private_superlink(launch.flwr_home)
            if not args.keep_flwr_home:
                shutil.rmtree(launch.flwr_home, ignore_errors=True)
        shutil.rmtree(launch.tmp, ignore_errors=True)


def _main(launch: Launch) -> int:
    args = launch.args
    try:
        cfg, overrides, federation = launch.prepare()
    except ConfigError as exc:
        say(f"error: invalid configuration: {exc}")
        return EXIT_USAGE
    run_config_file = write_overrides(launch.tmp / "run_config.toml", overrides)
    before = {p.name for p in launch.base.iterdir()} if launch.base.is_dir() else set()
    cmd = launch.command(run_config_file, federation)
    say("running: " + " ".join(cmd))
    say(f"overrides: {' '.join(f'{k}={v!r}' for k, v in sorted(overrides.items()))}")
    say(f"FLWR_HOME={launch.flwr_home}" + (" (private)" if launch.private else ""))

    found: list[int] = []

    def superlink_root() -> list[int]:  # the local SuperLink is detached from `flwr run`
        if not found:
            found.extend(superlink_pids(launch.flwr_home))
        return found

    sampler = TreeSampler(extra_roots=superlink_root if launch.simulation else None)
    sampler.start()
    t0 = time.perf_counter()
    try:
        code = launch.stream(cmd)
    except KeyboardInterrupt:
        say("interrupted: stopping the run")
        launch.stop_run()
        sampler.stop()
        return EXIT_INTERRUPTED
    wall = time.perf_counter() - t0
    status = launch.flower_status(wait=30.0 if code == 0 else 5.0)
    sampler.stop()

    folder = launch.find_run_folder(before, cfg)
    problems = []
    if launch.timed_out:
        problems.append(f"timed out after {args.timeout:.0f} s")
    if code != 0:
        problems.append(f"`flwr run` exited with code {code}")
    if status != "unknown" and status != "finished:completed":
        problems.append(f"Flower reports the run as {status!r}")
    summary: dict[str, Any] | None = None
    if folder is None:
        problems.append(f"no run folder was created in {launch.base}")
    else:
        from common.results import load_summary  # torch: not before the run is over

        try:
            summary = load_summary(folder)
        except ValueError as exc:
            problems.append(str(exc))
        with contextlib.suppress(OSError):
            shutil.copy(launch.log_path, folder / "flwr.log")
            sl_log = launch.flwr_home / "local-superlink" / "superlink.log"
            if launch.private and sl_log.is_file():
                shutil.copy(sl_log, folder / "superlink.log")
        resources = {
            "flwr_run_wall_s": round(wall, 2),
            "flower_run_id": launch.run_id,
            "flower_status": status,
            **sampler.report(),
        }
        with contextlib.suppress(OSError):
            (folder / "resources.json").write_text(json.dumps(resources, indent=2) + "\n")

    if problems:
        reason = launch.failure_reason()
        say("FAILED: " + "; ".join(problems))
        if reason:
            say(f"error in the log: {reason}")
        if folder is not None:
            say(f"run folder (incomplete): {folder}")
        else:
            kept = launch.base / f".failed-{time.strftime('%Y%m%d-%H%M%S')}-{secrets.token_hex(2)}"
            with contextlib.suppress(OSError):
                kept.mkdir(parents=True)
                shutil.copy(launch.log_path, kept / "flwr.log")
                sl_log = launch.flwr_home / "local-superlink" / "superlink.log"
                if sl_log.is_file() and launch.private:
                    shutil.copy(sl_log, kept / "superlink.log")
                say(f"logs kept in {kept}")
        return EXIT_FAILED
    assert folder is not None and summary is not None
    say(
        f"completed: Flower status {status}, flwr run {wall:.0f} s, peak memory "
        f"{sampler.peak_rss_kb / 1024:.0f} MB RSS / {sampler.peak_pss_kb / 1024:.0f} MB PSS"
    )
    print(folder, flush=True)
    return EXIT_OK
