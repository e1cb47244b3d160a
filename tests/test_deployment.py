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
from pathlib import Path

import pytest
from flwr.app import Context, RecordDict

sys.path.insert(0, str(Path(__file__).parent))  # tests/flower_helpers.py (importlib mode)
from flower_helpers import (
    REPO,
    TINY,
    LoopbackDeployment,
    check_completed_run,
    clean_env,
    run_script,
    shared_data,
)

from client.client_app import _site
from client.site import apply_node_config
from common.config import default_run_config, load_config

SITES = 2


@pytest.fixture
def deployment(tmp_path: Path) -> Iterator[LoopbackDeployment]:
    data = shared_data()
    if not (data / "MNIST" / "raw").is_dir():
        pytest.fail(f"real test data not found at {data}; set FEDREPLAY_TEST_DATA")
    # The ServerApp (central evaluation) finds MNIST through the SuperLink's environment;
    # the sites only through their node config's data-root.
    dep = LoopbackDeployment(
        tmp_path,
        server_env={
            "FEDREPLAY_DATA_ROOT": str(data),
            "FEDREPLAY_CACHE": str(tmp_path / "cache-server"),
        },
    )
    try:
        for pid in range(SITES):
            dep.start_site(pid, num=SITES, node_config=f'data-root="{data}"')
        yield dep
    finally:
        dep.close()


@pytest.mark.slow
def test_two_supernodes_two_tasks(deployment: LoopbackDeployment, tmp_path: Path) -> None:
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


@pytest.mark.slow
def test_a_deployed_site_refuses_a_run_its_policy_forbids(tmp_path: Path) -> None:
    """Real SuperNodes with their own site ids and policies (written with ``fedreplay site
    init`` at each site): the server's run config switches DP off; the site whose policy
    requires DP answers every round with an error naming its policy and the key, reads no
    record and sends nothing; the site whose policy allows it trains."""
    from server.cli import main as fedreplay

    data = shared_data()
    dep = LoopbackDeployment(
        tmp_path,
        server_env={"FEDREPLAY_DATA_ROOT": str(data), "FEDREPLAY_CACHE": str(tmp_path / "c")},
    )
    try:
        strict = ["--max-epsilon", "2", "--max-delta", "1e-5"]
        assert fedreplay(["site", "init", "--dir", str(tmp_path / "site0"), *strict]) == 0
        assert (
            fedreplay(["site", "init", "--dir", str(tmp_path / "site1"), "--no-dp-required"]) == 0
        )
        for pid, name in enumerate(("st-olav", "ous")):
            dep.start_site(pid, num=SITES, node_config=f'data-root="{data}" site-id="{name}"')
        result = run_script(
            [
                "--connection",
                dep.connection,
                "--sites",
                str(SITES),
                "--set",
                f"{TINY} data.name='mnist' dp.enabled=false",
                "--output-dir",
                str(tmp_path / "runs"),
                "--timeout",
                "200",
            ],
            env=clean_env(FLWR_HOME=str(dep.flwr_home)),
            timeout=240,
        )
        folder = Path(result.last_line) if result.last_line.startswith("/") else None
        assert folder is not None and folder.is_dir(), result.describe() + dep.log_tail()
        rounds = [json.loads(line) for line in (folder / "rounds.jsonl").read_text().splitlines()]
        for r in rounds:
            assert [s["site_id"] for s in r["sites"]] == ["ous"], r
            (reason,) = r["failures"].values()
            assert "privacy policy" in reason and "dp-required" in reason, reason
        assert not (tmp_path / "site0" / "privacy").exists(), "the refusing site read records"
        # the failing site, its status and its reason, everywhere a person looks: the
        # console, rounds.jsonl, summary.json's sites table and the report
        for r in rounds:
            (status,) = [v for k, v in r["site_status"].items() if k != "ous"]
            assert status["status"] == "failed" and "dp-required" in status["why"], r
            assert r["site_status"]["ous"]["status"] == "trained", r
        summary = json.loads((folder / "summary.json").read_text())
        table = summary["sites"]
        assert table["ous"]["outcome"] == "trained", table
        (failing,) = [row for site, row in table.items() if site != "ous"]
        assert failing["outcome"] == "failed" and failing["failed"] == len(rounds), failing
        assert any("dp-required" in why for why in failing["reasons"]), failing
        console = result.stdout + result.stderr
        assert "failed (" in console and "dp-required" in console, result.describe()
        report = (folder / "report.html").read_text(encoding="utf-8")
        assert "dp-required" in report and "failed" in report

        def sent(site: str) -> list[str]:  # the message types a site's egress log holds
            logs = (tmp_path / site / "egress").rglob("*.jsonl")
            return [
                json.loads(x)["message_type"] for p in logs for x in p.read_text().splitlines() if x
            ]

        assert "train" not in sent("site0"), "the refusing site sent a model"
        assert "train" in sent("site1")
    finally:
        dep.close()
