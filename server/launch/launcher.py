"""Launching a run with ``flwr run`` (simulation or a deployment connection) and finding
out whether it worked: see :mod:`server.launch.cli` for what it does and why."""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import secrets
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from common.config import (
    ConfigError,
    ExperimentConfig,
    default_run_config,
    drop_retired,
    load_config,
    run_config_of,
    user_overrides,
)
from common.sitestate import SITE_DIR_ENV, STATE_POINTER, simulated_state_of
from server.launch.preflight import check_simulation
from server.launch.processes import cmdline, superlink_pids
from server.run.console import VERBOSE_ENV
from server.run.output_dir import output_base
from server.sites.registry import SERVER_DIR_ENV

REPO = Path(__file__).resolve().parents[2]  # the Flower app: pyproject.toml and the apps
DISABLE_INSTALL_ENV = "FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION"
DATA_ROOT_ENV = "FEDREPLAY_DATA_ROOT"
LOCAL_ADDRESSES = (":local:", ":local-in-memory:")
RUN_ID_RE = re.compile(r"Successfully started run (\d+)")
RUN_FOLDER_RE = re.compile(r"run folder (\S+) \|")
ERROR_RE = re.compile(r"^\s*([A-Za-z_][\w.]*(?:Error|Exception|Exit)\w*)(:.*)?$")
EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_INTERRUPTED = 0, 1, 2, 130
# seconds a resumed run waits for fed.min-sites (when its config said 0, "as long as it
# takes"): after a SuperLink restart the sites may be gone for good, and the run then
# fails naming how many connected instead of waiting forever
RESUME_START_TIMEOUT = 600.0


class LaunchError(RuntimeError):
    """The run failed or its outcome could not be verified (exit code 1)."""


def say(msg: str) -> None:
    print(f"[fedreplay run] {msg}", file=sys.stderr, flush=True)


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


def resume_overrides(run_dir: Path) -> dict[str, Any]:
    """The full run config of a run folder (its ``config.json``) with ``fed.resume`` set."""
    path = run_dir.expanduser().absolute()
    try:
        saved = json.loads((path / "config.json").read_text(encoding="utf-8"))
        cfg = load_config(drop_retired(run_config_of(saved), source=str(path / "config.json")))
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
        raise ConfigError(f"cannot resume {path}: its config.json is unusable ({exc})") from None
    if (path / "summary.json").is_file():
        raise ConfigError(f"cannot resume {path}: it has finished (summary.json exists)")
    out = {**cfg.to_run_config(), "fed.resume": str(path), "output-dir": str(path.parent)}
    if not cfg.fed.start_timeout:  # a resume never waits for its sites without a limit
        out["fed.start-timeout"] = RESUME_START_TIMEOUT
    return out


# ------------------------------------------------------------------------- simulated state
def simulated_state(base: Path, resume: Path | None) -> Path:
    """The folder of a simulation's own sites' and server's state: the resumed run's (named
    in its ``simulated-state.txt``), else a new one under ``<base>/.simulated-state/``."""
    named = None if resume is None else simulated_state_of(resume)
    if named is not None:
        return named
    stamp = time.strftime("%Y%m%d-%H%M%S")
    return base / ".simulated-state" / f"{stamp}-{secrets.token_hex(3)}"


def isolated_env(state: Path) -> dict[str, str]:
    """``FEDREPLAY_SITE_DIR`` / ``FEDREPLAY_SERVER_DIR`` inside ``state``, for those the user
    did not set (a persistent folder named explicitly is kept)."""
    out = {}
    for env, sub in ((SITE_DIR_ENV, "sites"), (SERVER_DIR_ENV, "server")):
        if not os.environ.get(env):
            (state / sub).mkdir(parents=True, exist_ok=True)
            out[env] = str(state / sub)
    return out


def remember_state(folder: Path, state: Path) -> None:
    """Name the simulated state in the run folder (once), for ``--resume``."""
    pointer = folder / STATE_POINTER
    if not pointer.exists():
        pointer.write_text(f"{state}\n", encoding="utf-8")


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


def warn_about_running_superlink(flwr_home: Path) -> None:
    """A user's local SuperLink started without disabling dependency installation keeps
    installing on every run (the environment variable is read when it starts)."""
    for pid in superlink_pids(flwr_home):
        cmd = cmdline(pid)
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
        if args.verbose:
            self.env[VERBOSE_ENV] = "1"
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
        self.resume: Path | None = None
        self.state: Path | None = None  # a simulation's own sites' and server's folders

    # --- configuration -------------------------------------------------------------------
    def prepare(self) -> tuple[ExperimentConfig | None, dict[str, Any], list[str]]:
        args = self.args
        defaults = default_run_config(REPO / "pyproject.toml")
        if args.resume:
            overrides = resume_overrides(Path(args.resume))
            self.resume = Path(overrides["fed.resume"])  # type: ignore[arg-type]
        else:
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
            if args.parallel_sites:  # Ray runs as many actors as its CPU count allows
                resources += f" init-args-num-cpus={args.parallel_sites * args.cpus_per_site}"
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
        if cfg is not None and self.simulation and not args.resume:
            check_simulation(cfg)  # a run that cannot work is refused with the numbers
        self.base.mkdir(parents=True, exist_ok=True)
        self.isolate()
        return cfg, overrides, federation

    def isolate(self) -> None:
        """A simulation of this launch keeps its simulated sites' state (ledgers, egress
        logs) and the server's registry in a folder of its own, named in the run folder
        (``simulated-state.txt``) so that ``--resume`` finds it again, unless the user named
        persistent folders (``$FEDREPLAY_SITE_DIR`` / ``$FEDREPLAY_SERVER_DIR``). Two
        simulations never share a 'site', and a demo never spends a real site's budget.
        Only a private local SuperLink (no ``--connection``) sees the variables."""
        if not (self.simulation and self.private):
            return
        self.state = simulated_state(self.base, self.resume)
        self.env.update(isolated_env(self.state))
        self.remember_state(self.resume)

    def remember_state(self, folder: Path | None) -> None:
        """Name the simulated state in the run folder (once)."""
        if self.state is None or folder is None or not folder.is_dir():
            return
        remember_state(folder, self.state)

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
            self.remember_state(self.logged_folder)
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
        if self.resume is not None:
            return self.resume
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
