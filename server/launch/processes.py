"""The processes of a local run, read from ``/proc``: the process tree's memory (sampled
while a run goes on), the local SuperLinks ``flwr`` started for a ``FLWR_HOME``, and
stopping what this launch started."""

from __future__ import annotations

import contextlib
import os
import signal
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any


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


def cmdline(pid: int) -> list[str]:
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
        cmd = cmdline(pid)
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
