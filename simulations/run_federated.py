#!/usr/bin/env python
"""Run a federated experiment through real Flower (``flwr run``) and check that it worked.

    python simulations/run_federated.py --run-config simulations/fed_mnist_dgr.toml
    python simulations/run_federated.py --set "method='none' tasks.num-tasks=2" --sites 3
    python simulations/run_federated.py --run-config FILE --connection my-deployment

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
  resolved against ``$FEDREPLAY_OUTPUT_DIR`` or the current directory: ``./runs`` by
  default), so run folders land where you expect, not in the SuperLink's working directory.
- Streams the log (and saves it as ``flwr.log`` in the run folder), then checks the outcome
  itself, because ``flwr run`` exits 0 even when the ServerApp crashed: the run folder's
  ``summary.json`` must exist, validate and say ``status: completed``, and ``flwr ls`` must
  not report the run as failed. Exits 1 with a message naming the error otherwise.
- Samples the memory of the whole process tree (SuperLink, ServerApp, Ray workers) from
  ``/proc`` and writes ``resources.json`` into the run folder.

The last line printed on success is the run folder's path. Exit codes: 0 completed,
1 the run failed (or could not be verified), 2 bad arguments or configuration,
130 interrupted.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from common.config import (  # noqa: E402
    ConfigError,
    ExperimentConfig,
    default_run_config,
    load_config,
    parse_overrides,
    read_overrides,
)
from common.results import load_summary  # noqa: E402

DISABLE_INSTALL_ENV = "FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION"
OUTPUT_DIR_ENV = "FEDREPLAY_OUTPUT_DIR"
DATA_ROOT_ENV = "FEDREPLAY_DATA_ROOT"
LOCAL_ADDRESSES = (":local:", ":local-in-memory:")
RUN_ID_RE = re.compile(r"Successfully started run (\d+)")
RUN_FOLDER_RE = re.compile(r"run folder (\S+) \|")
ERROR_RE = re.compile(r"^\s*([A-Za-z_][\w.]*(?:Error|Exception|Exit)\w*)(:.*)?$")
EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_INTERRUPTED = 0, 1, 2, 130


class LaunchError(RuntimeError):
    """The run failed or its outcome could not be verified (exit code 1)."""


def say(msg: str) -> None:
    print(f"[run_federated] {msg}", file=sys.stderr, flush=True)


# ------------------------------------------------------------------------- configuration
def toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value)  # a valid TOML basic string
    raise TypeError(f"cannot write {value!r} to TOML")


def write_overrides(path: Path, overrides: Mapping[str, Any]) -> Path:
    """A ``--run-config`` TOML file of flat dotted keys (Flower flattens it back)."""
    lines = [f"{key} = {toml_value(value)}" for key, value in sorted(overrides.items())]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def user_overrides(run_config: str | None, sets: Sequence[str]) -> dict[str, Any]:
    overrides: dict[str, Any] = {}
    if run_config:
        overrides.update(read_overrides(run_config))
    for text in sets:
        overrides.update(parse_overrides(text))
    return overrides


def output_base(cli_dir: str | None, configured: str) -> Path:
    """Folder the run folder is created in, as an absolute path on this machine."""
    path = Path(cli_dir or configured or "runs").expanduser()
    if not path.is_absolute():
        base = os.environ.get(OUTPUT_DIR_ENV, "")
        path = (Path(base).expanduser() if base else Path.cwd()) / path
    return path.absolute()


# ------------------------------------------------------------------------- Flower plumbing
def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def user_flwr_home() -> Path:
    return Path(os.environ.get("FLWR_HOME", "") or "~/.flwr").expanduser()


def connection_address(flwr_home: Path, name: str) -> str | None:
    """The ``address`` of connection ``name`` in ``<flwr_home>/config.toml`` (None if unknown).

    Returns ``:local:`` for a connection that only has (deprecated) ``options`` fields.
    """
    import tomllib

    path = flwr_home / "config.toml"
    if not path.is_file():  # `flwr` creates it with a `local` simulation connection
        return ":local:" if name == "local" else None
    with path.open("rb") as fh:
        doc = tomllib.load(fh)
    conn = doc.get("superlink", {}).get(name)
    if not isinstance(conn, dict):
        return None
    address = conn.get("address")
    if address is None and "options" in conn:
        return ":local:"
    return str(address) if address is not None else None


def flwr_exe(name: str) -> str:
    """A Flower executable from this interpreter's environment, else from PATH."""
    sibling = Path(sys.executable).parent / name
    if sibling.exists():
        return str(sibling)
    found = shutil.which(name)
    if found is None:
        raise LaunchError(f"cannot find the {name!r} executable (is flwr installed?)")
    return found


# ------------------------------------------------------------------------- /proc sampling
def _proc_table() -> dict[int, tuple[int, str]]:
    """pid -> (ppid, command name) for every visible process."""
    table: dict[int, tuple[int, str]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", encoding="utf-8", errors="replace") as fh:
                stat = fh.read()
        except OSError:
            continue
        # comm may contain spaces/parens: it sits between the first "(" and the last ")"
        comm = stat[stat.find("(") + 1 : stat.rfind(")")]
        rest = stat[stat.rfind(")") + 2 :].split()
        with contextlib.suppress(IndexError, ValueError):
            table[int(entry)] = (int(rest[1]), comm)
    return table


def _cmdline(pid: int) -> list[str]:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as fh:
            return [p.decode(errors="replace") for p in fh.read().split(b"\0") if p]
    except OSError:
        return []


def _memory_kb(pid: int) -> tuple[int, int | None]:
    """(RSS, PSS or None) of a process in KiB."""
    rss, pss = 0, None
    try:
        with open(f"/proc/{pid}/status", encoding="utf-8") as fh:
            for line in fh:
                if line.startswith("VmRSS:"):
                    rss = int(line.split()[1])
                    break
    except (OSError, ValueError):
        return 0, None
    try:
        with open(f"/proc/{pid}/smaps_rollup", encoding="utf-8") as fh:
            for line in fh:
                if line.startswith("Pss:"):
                    pss = int(line.split()[1])
                    break
    except (OSError, ValueError):
        pss = None
    return rss, pss


def descendants(roots: set[int], table: Mapping[int, tuple[int, str]]) -> set[int]:
    children: dict[int, list[int]] = {}
    for pid, (ppid, _) in table.items():
        children.setdefault(ppid, []).append(pid)
    seen, todo = set(), [r for r in roots if r in table]
    while todo:
        pid = todo.pop()
        if pid in seen:
            continue
        seen.add(pid)
        todo.extend(children.get(pid, []))
    return seen


def superlink_pids(flwr_home: Path) -> list[int]:
    """Local SuperLinks that ``flwr`` started for ``flwr_home`` (their log file is in it)."""
    log_file = str(flwr_home / "local-superlink" / "superlink.log")
    pids = []
    for pid, (_, comm) in _proc_table().items():
        if not comm.startswith("flower-superlin") and "python" not in comm:
            continue
        cmd = _cmdline(pid)
        if any("flower-superlink" in part for part in cmd[:2]) and log_file in cmd:
            pids.append(pid)
    return pids


class TreeSampler(threading.Thread):
    """Samples the summed RSS/PSS of this process's tree plus extra roots (e.g. a SuperLink).

    RSS sums count shared pages (torch's libraries in every Ray worker) once per process,
    so ``peak_rss_mb`` overstates real use; ``peak_pss_mb`` splits shared pages fairly.
    """

    def __init__(
        self, extra_roots: Callable[[], Iterable[int]] | None = None, interval: float = 0.5
    ) -> None:
        super().__init__(daemon=True)
        self.extra_roots: Callable[[], Iterable[int]] = extra_roots or (lambda: [])
        self.interval = interval
        self.stop_event = threading.Event()
        self.samples = 0
        self.peak_rss_kb = 0
        self.peak_pss_kb = 0
        self.pss_seen = False
        self.peak_processes = 0
        self.peak_by_command: dict[str, int] = {}
        self.started = time.time()

    def sample(self) -> None:
        table = _proc_table()
        roots = {os.getpid(), *self.extra_roots()}
        pids = descendants(roots, table) - {os.getpid()}
        total_rss, total_pss = 0, 0
        by_command: dict[str, int] = {}
        for pid in pids:
            rss, pss = _memory_kb(pid)
            total_rss += rss
            total_pss += rss if pss is None else pss  # a process without smaps_rollup
            self.pss_seen = self.pss_seen or pss is not None
            name = table[pid][1]
            by_command[name] = by_command.get(name, 0) + rss
        self.samples += 1
        self.peak_processes = max(self.peak_processes, len(pids))
        self.peak_pss_kb = max(self.peak_pss_kb, total_pss)
        if total_rss > self.peak_rss_kb:
            self.peak_rss_kb = total_rss
            self.peak_by_command = by_command

    def run(self) -> None:
        while not self.stop_event.is_set():
            with contextlib.suppress(Exception):  # a sampler must never break the run
                self.sample()
            self.stop_event.wait(self.interval)

    def stop(self) -> None:
        self.stop_event.set()
        self.join(timeout=5)

    def report(self) -> dict[str, Any]:
        return {
            "what": "sum over the process tree of the flwr CLI, the local SuperLink, "
            "ServerApp, simulation and Ray workers (sampled from /proc); RSS counts shared "
            "pages once per process, PSS splits them",
            "peak_rss_mb": round(self.peak_rss_kb / 1024, 1),
            "peak_pss_mb": round(self.peak_pss_kb / 1024, 1) if self.pss_seen else None,
            "peak_processes": self.peak_processes,
            "rss_mb_by_command_at_peak": {
                k: round(v / 1024, 1)
                for k, v in sorted(self.peak_by_command.items(), key=lambda kv: -kv[1])
            },
            "samples": self.samples,
            "interval_s": self.interval,
        }


def terminate(pids: Sequence[int], *, grace: float = 10.0) -> None:
    """SIGTERM these processes (which we started), SIGKILL whatever is left after ``grace``."""
    alive = []
    for pid in pids:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, signal.SIGTERM)
            alive.append(pid)
    deadline = time.monotonic() + grace
    while alive and time.monotonic() < deadline:
        alive = [p for p in alive if Path(f"/proc/{p}").exists() and not _is_zombie(p)]
        time.sleep(0.2)
    for pid in alive:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, signal.SIGKILL)


def _is_zombie(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat", encoding="utf-8") as fh:
            return fh.read().rsplit(")", 1)[1].split()[0] == "Z"
    except (OSError, IndexError):
        return True


def stop_private_superlink(flwr_home: Path) -> None:
    """Stop the local SuperLink (and anything still under it) started for ``flwr_home``."""
    roots = superlink_pids(flwr_home)
    if not roots:
        return
    tree = descendants(set(roots), _proc_table())
    terminate(roots)
    leftovers = [p for p in tree if Path(f"/proc/{p}").exists() and not _is_zombie(p)]
    terminate(leftovers, grace=5.0)


def warn_about_running_superlink(flwr_home: Path) -> None:
    """A user's local SuperLink started without disabling dependency installation keeps
    installing on every run (the environment variable is read when it starts)."""
    for pid in superlink_pids(flwr_home):
        cmd = _cmdline(pid)
        try:
            environ = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
        except OSError:
            continue
        if "--disable-runtime-dependency-installation" in cmd:
            continue
        if f"{DISABLE_INSTALL_ENV}=1".encode() not in environ:
            say(
                f"warning: the local SuperLink (pid {pid}) was started without "
                f"{DISABLE_INSTALL_ENV}=1, so it installs the app's dependencies into a fresh "
                f"environment for every run; stop it (kill {pid}) and rerun to restart it "
                "correctly"
            )


# ------------------------------------------------------------------------- the launch
class Launch:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.private = args.connection is None
        self.simulation = True
        if not self.private:
            address = connection_address(user_flwr_home(), args.connection)
            if address is None:
                raise ConfigError(
                    f"connection {args.connection!r} is not defined in "
                    f"{user_flwr_home() / 'config.toml'} (add [superlink.{args.connection}] "
                    'with address = "HOST:PORT" and insecure = true or root-certificates)'
                )
            self.simulation = address in LOCAL_ADDRESSES
        self.tmp = Path(tempfile.mkdtemp(prefix="fedreplay-launch-"))
        self.flwr_home = self.tmp / "flwr-home" if self.private else user_flwr_home()
        self.env = dict(os.environ)
        self.env[DISABLE_INSTALL_ENV] = "1"
        self.env["FLWR_HOME"] = str(self.flwr_home)
        bindir = str(Path(sys.executable).parent)
        self.env["PATH"] = bindir + os.pathsep + self.env.get("PATH", "")
        if self.private:
            self.flwr_home.mkdir(parents=True)
            (self.flwr_home / "config.toml").write_text(
                '[superlink]\ndefault = "local"\n\n[superlink.local]\naddress = ":local:"\n',
                encoding="utf-8",
            )
            self.env["FLWR_LOCAL_SUPERLINK_HTTP_API_PORT"] = str(free_port())
            self.env["FLWR_LOCAL_CONTROL_API_PORT"] = str(free_port())
        elif self.simulation:
            warn_about_running_superlink(self.flwr_home)
        self.base = Path.cwd()  # set by prepare()
        self.timed_out = False
        self.log_path = self.tmp / "flwr.log"
        self.run_id: str | None = None
        self.logged_folder: Path | None = None
        self.error_lines: list[str] = []

    # --- configuration -------------------------------------------------------------------
    def prepare(self) -> tuple[ExperimentConfig | None, dict[str, Any], list[str]]:
        args = self.args
        defaults = default_run_config(REPO / "pyproject.toml")
        overrides = user_overrides(args.run_config, args.set or [])
        merged = {**defaults, **overrides}
        self.base = output_base(args.output_dir, str(merged["output-dir"]))
        overrides["output-dir"] = str(self.base)
        sites = args.sites
        federation: list[str] = []
        if self.simulation:
            sites = sites or int(merged["fed.num-sites"])
            overrides["fed.num-sites"] = sites
            if int(merged["fed.min-sites"]) > sites:  # Flower would wait forever
                say(f"fed.min-sites={merged['fed.min-sites']} > {sites} sites: using {sites}")
                overrides["fed.min-sites"] = sites
            resources = f"client-resources-num-cpus={args.cpus_per_site}"
            if args.gpus_per_site:
                resources += f" client-resources-num-gpus={args.gpus_per_site}"
            federation = ["--federation-config", f"num-supernodes={sites} {resources}"]
            data_root = os.environ.get(DATA_ROOT_ENV, "")
            if data_root and not merged.get("data.root"):
                # an already running local SuperLink may not have this variable: pass it on
                overrides["data.root"] = str(Path(data_root).expanduser().absolute())
        elif sites:
            overrides["fed.num-sites"] = sites
            overrides["fed.min-sites"] = sites  # wait until that many SuperNodes are connected
        cfg: ExperimentConfig | None
        try:
            cfg = load_config({**merged, **overrides}, defaults=defaults)
        except ConfigError as exc:
            if not args.skip_config_check:
                raise
            say(f"warning: invalid configuration, starting anyway (--skip-config-check): {exc}")
            cfg = None
        self.base.mkdir(parents=True, exist_ok=True)
        return cfg, overrides, federation

    # --- running -------------------------------------------------------------------------
    def command(self, run_config_file: Path, federation: list[str]) -> list[str]:
        cmd = [flwr_exe("flwr"), "run", "."]
        if self.args.connection:
            cmd.append(self.args.connection)
        cmd += ["--stream", "--run-config", str(run_config_file), *federation]
        return cmd

    def stream(self, cmd: list[str]) -> int:
        """Run ``flwr run``, echo and save its output; returns its exit code."""
        timeout = self.args.timeout or None
        with self.log_path.open("w", encoding="utf-8") as log:
            proc = subprocess.Popen(
                cmd,
                cwd=REPO,
                env=self.env,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                text=True,
                bufsize=1,
                errors="replace",
            )
            timer = None
            self.timed_out = False
            if timeout:

                def on_timeout() -> None:
                    self.timed_out = True
                    say(f"timeout: the run took longer than {timeout:.0f} s, stopping it")
                    self.stop_run()
                    with contextlib.suppress(ProcessLookupError):
                        proc.kill()

                timer = threading.Timer(timeout, on_timeout)
                timer.daemon = True
                timer.start()
            try:
                assert proc.stdout is not None
                for line in proc.stdout:
                    sys.stdout.write(line)
                    sys.stdout.flush()
                    log.write(line)
                    self._scan(line.rstrip("\n"))
                return proc.wait()
            finally:
                if timer is not None:
                    timer.cancel()
                if proc.poll() is None:
                    proc.kill()
                    proc.wait()

    def _scan(self, line: str) -> None:
        plain = re.sub(r"\x1b\[[0-9;]*m", "", line)
        if self.run_id is None and (m := RUN_ID_RE.search(plain)):
            self.run_id = m.group(1)
        if m := RUN_FOLDER_RE.search(plain):
            self.logged_folder = Path(m.group(1))
        if ERROR_RE.match(plain) or "Exit Code:" in plain or plain.startswith("ERROR"):
            self.error_lines.append(plain.strip())

    def flwr(self, *args: str, timeout: float = 30.0) -> subprocess.CompletedProcess[str]:
        cmd = [flwr_exe("flwr"), *args]
        return subprocess.run(
            cmd, cwd=REPO, env=self.env, capture_output=True, text=True, timeout=timeout
        )

    def stop_run(self) -> None:
        if self.run_id is None:
            return
        with contextlib.suppress(Exception):
            extra = [self.args.connection] if self.args.connection else []
            self.flwr("stop", self.run_id, *extra, timeout=20)

    def flower_status(self, wait: float = 30.0) -> str:
        """The run's status in ``flwr ls`` (e.g. ``finished:completed``), or ``unknown``."""
        if self.run_id is None:
            return "unknown"
        extra = [self.args.connection] if self.args.connection else []
        deadline = time.monotonic() + wait
        status = "unknown"
        while True:
            try:
                out = self.flwr("ls", *extra, "--run-id", self.run_id, "--format", "json")
                runs = json.loads(out.stdout).get("runs", [])
                status = str(runs[0].get("status", "unknown")) if runs else "unknown"
            except (subprocess.SubprocessError, ValueError, OSError, IndexError):
                status = "unknown"
            if status.startswith("finished") or time.monotonic() > deadline:
                return status
            time.sleep(1.0)

    # --- outcome -------------------------------------------------------------------------
    def find_run_folder(self, before: set[str], cfg: ExperimentConfig | None) -> Path | None:
        """The run folder this launch created under ``self.base``."""
        if self.logged_folder is not None and self.logged_folder.is_dir():
            return self.logged_folder
        new = [
            p
            for p in self.base.iterdir()
            if p.is_dir() and p.name not in before and (p / "config.json").is_file()
        ]
        if cfg is not None:
            want = json.loads(json.dumps(cfg.to_dict()))
            same = []
            for p in new:
                with contextlib.suppress(ValueError, OSError):
                    if json.loads((p / "config.json").read_text(encoding="utf-8")) == want:
                        same.append(p)
            new = same
        return new[0] if len(new) == 1 else None

    def failure_reason(self) -> str:
        errors = [e for e in self.error_lines if ERROR_RE.match(e)]
        if errors:
            return errors[-1]
        return self.error_lines[-1] if self.error_lines else ""


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
        f"${OUTPUT_DIR_ENV} or the current directory)",
    )
    p.add_argument("--timeout", type=float, default=0.0, help="stop the run after S seconds")
    p.add_argument(
        "--skip-config-check",
        action="store_true",
        help="do not reject an invalid configuration before starting Flower (the run's "
        "failure is still detected afterwards)",
    )
    p.add_argument(
        "--keep-flwr-home", action="store_true", help="keep the private FLWR_HOME (debugging)"
    )
    args = p.parse_args(argv)
    if args.sites is not None and args.sites < 1:
        p.error("--sites must be >= 1")
    if args.cpus_per_site < 1:
        p.error("--cpus-per-site must be a whole number >= 1")
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


if __name__ == "__main__":
    sys.exit(main())
