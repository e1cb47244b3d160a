"""The Deployment Engine on loopback: a real SuperLink, two real SuperNodes, a real run.

The SuperLink and SuperNodes bind 127.0.0.1 on free ports, run in their own sessions and are
always stopped (SIGTERM, then SIGKILL after a bounded wait, then any process they left).
The sites get their data location from ``--node-config "data-root=..."`` only (no
``FEDREPLAY_DATA_ROOT``, an empty cache), so the run also shows that a site's own
``data-root`` is honoured.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from flwr.app import Context, RecordDict

sys.path.insert(0, str(Path(__file__).parent))  # tests/flower_helpers.py (importlib mode)
from flower_helpers import (
    BIN,
    REPO,
    TINY,
    check_completed_run,
    clean_env,
    free_port,
    kill_leftovers,
    process_tree,
    run_script,
    shared_data,
    start,
    stop_group,
    wait_for_port,
)

from client.client_app import _site
from client.site import apply_node_config
from common.config import default_run_config, load_config

SITES = 2


@dataclass
class Deployment:
    connection: str
    flwr_home: Path
    superlink_port: int
    logs: Path
    procs: list[Any] = field(default_factory=list)

    def log_tail(self, chars: int = 3000) -> str:
        out = []
        for log in sorted(self.logs.glob("*.log")):
            out.append(f"--- {log.name}\n{log.read_text(errors='replace')[-chars:]}")
        return "\n".join(out)


@pytest.fixture
def deployment(tmp_path: Path) -> Iterator[Deployment]:
    data = shared_data()
    if not (data / "MNIST" / "raw").is_dir():
        pytest.fail(f"real test data not found at {data}; set FEDREPLAY_TEST_DATA")
    logs = tmp_path / "logs"
    logs.mkdir()
    port = free_port()
    flwr_home = tmp_path / "flwr-home"
    flwr_home.mkdir()
    (flwr_home / "config.toml").write_text(
        '[superlink]\ndefault = "local"\n\n[superlink.local]\naddress = ":local:"\n\n'
        f'[superlink.e2e]\naddress = "127.0.0.1:{port}"\ninsecure = true\n',
        encoding="utf-8",
    )
    dep = Deployment("e2e", flwr_home, port, logs)
    opened = []
    try:
        # The ServerApp (central evaluation) finds MNIST through the SuperLink's environment.
        server_env = clean_env(
            FLWR_HOME=str(flwr_home),
            FEDREPLAY_DATA_ROOT=str(data),
            FEDREPLAY_CACHE=str(tmp_path / "cache-server"),
        )
        cmd = [
            str(BIN / "flower-superlink"),
            "--insecure",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--disable-runtime-dependency-installation",
        ]
        proc, fh = start(cmd, env=server_env, log=logs / "superlink.log", cwd=tmp_path)
        dep.procs.append(proc)
        opened.append(fh)
        wait_for_port(port, 45, proc)
        for pid in range(SITES):
            site_env = clean_env(
                FLWR_HOME=str(tmp_path / f"flwr-home-site{pid}"),
                FEDREPLAY_CACHE=str(tmp_path / f"cache-site{pid}"),
            )
            node_config = f'data-root="{data}" partition-id={pid} num-partitions={SITES}'
            cmd = [
                str(BIN / "flower-supernode"),
                "--insecure",
                "--superlink",
                f"127.0.0.1:{port}",
                "--host",
                "127.0.0.1",
                "--port",
                str(free_port()),
                "--node-config",
                node_config,
                "--max-wait-time",
                "60",
            ]
            proc, fh = start(cmd, env=site_env, log=logs / f"supernode{pid}.log", cwd=tmp_path)
            dep.procs.append(proc)
            opened.append(fh)
        yield dep
    finally:
        tree = process_tree([p.pid for p in dep.procs])
        for proc in reversed(dep.procs):  # SuperNodes first, then the SuperLink
            stop_group(proc, grace=10)
        kill_leftovers(tree)
        for fh in opened:
            fh.close()


@pytest.mark.slow
def test_two_supernodes_two_tasks(deployment: Deployment, tmp_path: Path) -> None:
    runs = tmp_path / "runs"
    overrides = f"{TINY} data.name='mnist'"
    result = run_script(
        [
            "--connection",
            deployment.connection,
            "--sites",
            str(SITES),  # fed.min-sites=2: the run waits for both SuperNodes
            "--set",
            overrides,
            "--output-dir",
            str(runs),
            "--timeout",
            "200",
        ],
        env=clean_env(FLWR_HOME=str(deployment.flwr_home)),
        timeout=240,
    )
    assert result.returncode == 0, result.describe() + deployment.log_tail()
    folder = Path(result.last_line)
    assert folder.parent == runs
    summary = check_completed_run(folder, tasks=2, sites=SITES)
    assert summary["dataset"] == "mnist"
    resources = json.loads((folder / "resources.json").read_text())
    assert resources["flower_status"] == "finished:completed"
    sites = json.loads((folder / "rounds.jsonl").read_text().splitlines()[0])["sites"]
    assert sorted(s["metrics"]["partition-id"] for s in sites) == [0.0, 1.0]


def test_node_config_data_root_overrides_data_root(tmp_path: Path) -> None:
    """A site's ``data-root`` node config replaces ``data.root`` of the run config."""
    cfg = load_config({"data.root": "/server/data"})
    assert apply_node_config(cfg, {"partition-id": 0}).data.root == "/server/data"
    assert apply_node_config(cfg, {"data-root": ""}).data.root == "/server/data"
    site_cfg = apply_node_config(cfg, {"data-root": str(tmp_path)})
    assert site_cfg.data.root == str(tmp_path)
    assert site_cfg.method == cfg.method and site_cfg.train == cfg.train

    run_config = {**default_run_config(), "data.root": "/nonexistent"}
    context = Context(
        run_id=1,
        node_id=1,
        node_config={"data-root": str(tmp_path), "partition-id": 1, "num-partitions": 2},
        state=RecordDict(),
        run_config=run_config,
    )
    site = _site(context)  # digits: no files needed; the site's config carries its root
    assert site.cfg.data.root == str(tmp_path)
    assert (site.identity.partition_id, site.identity.num_partitions) == (1, 2)


def test_deployment_doc_names_the_commands() -> None:
    doc = (REPO / "docs" / "deployment.md").read_text(encoding="utf-8")
    for needle in (
        "flower-superlink",
        "flower-supernode",
        "--disable-runtime-dependency-installation",
        "data-root=",
        "partition-id=",
        "num-partitions=",
        "fedreplay run",
        "--resume",
    ):
        assert needle in doc, needle
