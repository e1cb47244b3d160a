"""Helpers for the tests that run real Flower machinery (``flwr run``, SuperLink, SuperNodes).

Imported by ``tests/test_flwr_run.py`` and ``tests/test_deployment.py`` (pytest puts
``tests/`` on ``sys.path`` for them). Everything binds to 127.0.0.1 only, every process is
started here in its own session and stopped by its process-group id with bounded waits.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from common.results import RunFolder, load_summary

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
FEDREPLAY = [sys.executable, "-m", "server.cli", "run"]  # `fedreplay run`, this interpreter

# Settings for a run that takes seconds of training: digits (bundled with scikit-learn),
# 2 tasks, one short round per task, no generator-quality evaluator.
TINY = (
    "tasks.num-tasks=2 train.iterations=20 fed.rounds-per-task=1 generator.quality=false "
    "solver.hidden=64 generator.hidden=64 generator.latent-dim=16"
)


def shared_data() -> Path:
    """The real test data (tests/real_data.py: found, or downloaded once)."""
    from real_data import real_data

    return real_data()


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_for_port(
    port: int,
    timeout: float,
    proc: subprocess.Popen[Any] | None = None,
    *,
    host: str = "127.0.0.1",
) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"process {proc.args!r} exited with {proc.returncode}")
        with contextlib.suppress(OSError), socket.create_connection((host, port), 0.5):
            return
        time.sleep(0.2)
    raise TimeoutError(f"nothing listens on {host}:{port} after {timeout:.0f} s")


def fedreplay(*args: str, cwd: Path, env: Mapping[str, str]) -> str:
    """``fedreplay ARGS``, which must succeed; returns its output."""
    done = subprocess.run(
        [str(BIN / "fedreplay"), *args],
        cwd=cwd,
        env=dict(env),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout


def clean_env(**extra: str) -> dict[str, str]:
    """This environment without the user's Flower/fedreplay settings, plus ``extra``."""
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("FLWR_", "FEDREPLAY_OUTPUT_DIR", "FEDREPLAY_DATA_ROOT"))
    }
    env["PATH"] = str(BIN) + os.pathsep + env.get("PATH", "")
    env["FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION"] = "1"
    env["FLWR_DISABLE_UPDATE_CHECK"] = "1"
    env.update(extra)
    return env


@dataclass
class ScriptResult:
    returncode: int
    stdout: str
    stderr: str
    seconds: float

    @property
    def last_line(self) -> str:
        lines = [line for line in self.stdout.splitlines() if line.strip()]
        return lines[-1].strip() if lines else ""

    def describe(self) -> str:
        return (
            f"exit {self.returncode} after {self.seconds:.0f} s\n--- stderr\n{self.stderr[-4000:]}"
            f"\n--- stdout (tail)\n{self.stdout[-4000:]}"
        )


def run_script(
    args: Sequence[str], *, env: Mapping[str, str], timeout: float, cwd: Path = REPO
) -> ScriptResult:
    """``fedreplay run ARGS`` with a hard time limit."""
    start = time.monotonic()
    proc = subprocess.Popen(
        [*FEDREPLAY, *args],
        cwd=cwd,
        env=dict(env),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        stop_group(proc, grace=10)  # the script stops its own SuperLink on SIGTERM... or not
        out, err = proc.communicate()
        err += f"\n[test] killed after {timeout:.0f} s"
    return ScriptResult(proc.returncode, out, err, time.monotonic() - start)


def stop_group(proc: subprocess.Popen[Any], *, grace: float = 10.0) -> None:
    """SIGTERM the process group of ``proc`` (started with ``start_new_session``), SIGKILL
    it if it is still there after ``grace`` seconds."""
    if proc.poll() is not None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signal.SIGKILL)  # leftovers of an exited leader
        return
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGTERM)
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(timeout=grace)
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(timeout=5)


def _ppids() -> dict[int, int]:
    table = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            with contextlib.suppress(OSError, IndexError, ValueError):
                stat = Path(f"/proc/{entry}/stat").read_text(errors="replace")
                table[int(entry)] = int(stat[stat.rfind(")") + 2 :].split()[1])
    return table


def process_tree(roots: Sequence[int]) -> set[int]:
    """``roots`` and all their descendants now (from /proc)."""
    children: dict[int, list[int]] = {}
    for pid, ppid in _ppids().items():
        children.setdefault(ppid, []).append(pid)
    seen: set[int] = set()
    todo = list(roots)
    while todo:
        pid = todo.pop()
        if pid not in seen:
            seen.add(pid)
            todo.extend(children.get(pid, []))
    return seen


def kill_leftovers(pids: set[int]) -> None:
    """SIGKILL those of ``pids`` (a tree we started) that still run."""
    for pid in pids:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, signal.SIGKILL)


def stop_all(procs: Sequence[subprocess.Popen[Any]], handles: Sequence[IO[str]]) -> None:
    """Stop what :func:`start` started (last first), then any leftovers; close the logs."""
    tree = process_tree([p.pid for p in procs])
    for proc in reversed(procs):
        stop_group(proc, grace=10)
    kill_leftovers(tree)
    for fh in handles:
        fh.close()


def start(
    cmd: Sequence[str], *, env: Mapping[str, str], log: Path, cwd: Path
) -> tuple[subprocess.Popen[Any], IO[str]]:
    """Start a long-running process in its own session, output into ``log``."""
    fh = log.open("w", encoding="utf-8")
    proc = subprocess.Popen(
        list(cmd),
        cwd=cwd,
        env=dict(env),
        stdout=fh,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    return proc, fh


def check_completed_run(folder: Path, *, tasks: int, sites: int, rounds_per_task: int = 1) -> dict:
    """Assert that ``folder`` holds a completed run and return its summary."""
    summary = load_summary(folder)  # exists, validates, status == completed
    assert summary["status"] == "completed"
    assert summary["num_tasks"] == tasks
    matrix = summary["accuracy_matrix"]
    assert len(matrix) == tasks and all(len(row) == tasks for row in matrix)
    for i, row in enumerate(matrix):  # accuracy on every task seen so far is recorded
        for j in range(i + 1):
            assert row[j] is not None and 0.0 <= row[j] <= 1.0, (i, j, row)
    rounds = RunFolder(folder).read_jsonl("rounds.jsonl")
    assert len(rounds) == tasks * rounds_per_task
    for r in rounds:
        assert len(r["sites"]) == sites, r
        assert not r["failures"], r["failures"]
        assert all(s["metrics"]["num-examples"] > 0 for s in r["sites"])
    assert summary["rounds"] == tasks * rounds_per_task
    assert summary["num_sites"] == sites
    return summary


class LoopbackDeployment:
    """A SuperLink and SuperNodes on 127.0.0.1 (insecure), each process in its own session:
    sites can be killed and started again under the same node config; :meth:`close` stops
    everything that was started (SIGTERM, SIGKILL after a bounded wait, then leftovers)."""

    connection = "e2e"

    def __init__(self, tmp_path: Path, *, server_env: Mapping[str, str] | None = None) -> None:
        self.tmp = tmp_path
        self.logs = tmp_path / "logs"
        self.logs.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.flwr_home = tmp_path / "flwr-home"
        self.flwr_home.mkdir(exist_ok=True)
        (self.flwr_home / "config.toml").write_text(
            '[superlink]\ndefault = "local"\n\n[superlink.local]\naddress = ":local:"\n\n'
            f'[superlink.{self.connection}]\naddress = "127.0.0.1:{self.port}"\ninsecure = true\n',
            encoding="utf-8",
        )
        self.superlink: subprocess.Popen[Any] | None = None
        self.sites: dict[int, subprocess.Popen[Any]] = {}
        self.started: list[subprocess.Popen[Any]] = []
        self.files: list[IO[str]] = []
        env = clean_env(FLWR_HOME=str(self.flwr_home), **dict(server_env or {}))
        cmd = [
            str(BIN / "flower-superlink"),
            "--insecure",
            "--host",
            "127.0.0.1",
            "--port",
            str(self.port),
            "--disable-runtime-dependency-installation",
        ]
        self.superlink = self._start(cmd, env, "superlink")
        wait_for_port(self.port, 45, self.superlink)

    def _start(self, cmd: list[str], env: Mapping[str, str], name: str) -> subprocess.Popen[Any]:
        n = sum(1 for _ in self.logs.glob(f"{name}*.log"))
        proc, fh = start(cmd, env=env, log=self.logs / f"{name}-{n}.log", cwd=self.tmp)
        self.started.append(proc)
        self.files.append(fh)
        return proc

    def start_site(self, pid: int, *, num: int, node_config: str = "", **env: str) -> None:
        """SuperNode ``pid`` of ``num``; its disk (privacy ledger, run state) is
        ``<tmp>/site<pid>`` whichever process it runs in."""
        site_env = clean_env(
            FLWR_HOME=str(self.tmp / f"flwr-home-site{pid}"),
            FEDREPLAY_CACHE=str(self.tmp / f"cache-site{pid}"),
            FEDREPLAY_SITE_DIR=str(self.tmp / f"site{pid}"),
            **env,
        )
        config = f"partition-id={pid} num-partitions={num} {node_config}".strip()
        cmd = [
            str(BIN / "flower-supernode"),
            "--insecure",
            "--superlink",
            f"127.0.0.1:{self.port}",
            "--host",
            "127.0.0.1",
            "--port",
            str(free_port()),
            "--node-config",
            config,
            "--max-wait-time",
            "60",
        ]
        self.sites[pid] = self._start(cmd, site_env, f"supernode{pid}")

    def kill_site(self, pid: int) -> None:
        """SIGKILL SuperNode ``pid`` and everything in its session (its ClientApp)."""
        proc = self.sites.pop(pid)
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)

    def serverapps(self) -> list[int]:
        """The ServerApp processes the SuperLink runs now."""
        assert self.superlink is not None
        return [
            pid
            for pid in process_tree([self.superlink.pid]) - {self.superlink.pid}
            if b"flwr-serverapp" in _cmdline(pid)
        ]

    def log_tail(self, chars: int = 3000) -> str:
        out = []
        for log in sorted(self.logs.glob("*.log")):
            out.append(f"--- {log.name}\n{log.read_text(errors='replace')[-chars:]}")
        return "\n".join(out)

    def close(self) -> None:
        tree = process_tree([p.pid for p in self.started])
        for proc in reversed(self.started):  # SuperNodes first, then the SuperLink
            stop_group(proc, grace=10)
        kill_leftovers(tree)
        for fh in self.files:
            fh.close()


def _cmdline(pid: int) -> bytes:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return b""
