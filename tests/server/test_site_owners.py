"""A site id bound to a registered node key cannot be claimed by another node: a forged
claim is refused before the server's registry sees it, so it cannot quarantine its victim."""

import json
from pathlib import Path

import pytest

from server.sites.owners import SiteOwners, bind, read_bindings
from server.sites.registry import SiteRegistry


def test_a_bound_site_id_belongs_to_its_node_only(tmp_path: Path) -> None:
    path = tmp_path / "site_nodes.json"
    bind(path, "st-olav", 1000)
    bind(path, "ous", 1001)
    owners = SiteOwners(read_bindings(path))
    assert owners.check(1000, "st-olav") is None
    refused = owners.check(1001, "st-olav")  # the hostile node claims its neighbour's id
    assert refused is not None and "bound to node 1000" in refused
    assert "bound to site 'ous' (its registered key)" in str(owners.check(1001, "forged"))
    assert owners.check(1001, "ous") is None


def test_a_forged_claim_cannot_quarantine_its_victim(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The audit's attack through the real strategy: node 1001's replies claim site-0 with
    epsilon 1000 after 1e9 steps. Before, the registry recorded the claim first and the real
    site-0 was quarantined for good. Now the ownership check refuses it before the
    registry, and site-0 trains in every round."""
    from flwr.app import ConfigRecord, MetricRecord

    from client.client_app import app as client_app
    from common import wire
    from common.config import load_config
    from server.run.federation import FederatedRun
    from server.run.inprocess import InProcessGrid

    monkeypatch.setenv("FEDREPLAY_SITE_DIR", str(tmp_path / "sites"))
    monkeypatch.setenv("FEDREPLAY_SERVER_DIR", str(tmp_path / "server"))
    bind(tmp_path / "server" / "site_nodes.json", "site-0", 1000)
    bind(tmp_path / "server" / "site_nodes.json", "site-1", 1001)

    def forge(sent, reply):
        if (
            sent.metadata.dst_node_id == 1001
            and reply.has_content()
            and (wire.METRICS in reply.content.metric_records)
        ):
            metrics = dict(reply.content.metric_records[wire.METRICS])
            metrics.update({"dp-epsilon": 1000.0, "dp-steps": 1e9})
            reply.content.metric_records[wire.METRICS] = MetricRecord(metrics)
            reply.content.config_records[wire.SITE] = ConfigRecord({wire.SITE_ID: "site-0"})
        return reply

    cfg = load_config(
        {"train.iterations": 5, "tasks.num-tasks": 2, "fed.rounds-per-task": 2,
         "fed.num-sites": 2, "solver.hidden": 16, "generator.hidden": 16,
         "generator.latent-dim": 4, "generator.quality": False, "dp.enabled": True,
         "dp.min-records": 0, "dp.delta": 1e-5, "output-dir": str(tmp_path / "runs")}
    )  # fmt: skip
    grid = InProcessGrid(client_app, cfg.to_run_config(), num_nodes=2, reply_hook=forge)
    run = FederatedRun(cfg).run(grid)
    for r in run.read_jsonl("rounds.jsonl"):
        assert [s["site_id"] for s in r["sites"]] == ["site-0"], r
        assert "bound to node 1000" in r["failures"]["1001"]
        # the refusal is counted against the node bound as site-1, never against site-0
        assert r["site_status"]["site-0"]["status"] == "trained"
        assert r["site_status"]["site-1"]["status"] == "refused"
    sites = json.loads((run.path / "summary.json").read_text())["sites"]
    assert sites["site-0"]["outcome"] == "trained" and sites["site-0"]["refused"] == 0
    assert sites["site-1"]["outcome"] == "refused" and sites["site-1"]["suspicion"] == 1.0
    registry = SiteRegistry(tmp_path / "server" / "site_privacy_registry.json")
    assert not registry.sites["site-0"].get("quarantined")
    assert registry.sites["site-0"]["epsilon"] < 1000


def test_an_unbound_site_id_stays_with_the_node_that_held_it() -> None:
    """Without node keys: a newcomer claiming a held id in the same round as its holder is
    refused and the holder keeps training; only a first-round contest refuses both."""
    from types import SimpleNamespace

    def reply(node: int):
        meta = SimpleNamespace(src_node_id=node, message_id=f"r{node}", reply_to_message_id="")
        return SimpleNamespace(metadata=meta, has_error=lambda: False)

    owners = SiteOwners()
    owners.connected = {1000, 1001}
    both = [reply(1000), reply(1001)]
    owners.begin_round(both, ["site-0", "site-0"], [], [1000, 1001])  # type: ignore[arg-type]
    assert "claimed by nodes [1000, 1001]" in str(owners.check(1000, "site-0"))
    assert "claimed by nodes [1000, 1001]" in str(owners.check(1001, "site-0"))
    owners.begin_round([reply(1000)], ["site-0"], [], [1000, 1001])  # type: ignore[arg-type]
    assert owners.check(1000, "site-0") is None  # the holder, alone
    owners.begin_round(both, ["site-0", "site-0"], [], [1000, 1001])  # type: ignore[arg-type]
    assert owners.check(1000, "site-0") is None  # the holder keeps it
    assert "belongs to node 1000, which is connected" in str(owners.check(1001, "site-0"))
    owners.begin_round([reply(1001)], ["site-0"], [], [1000, 1001])  # type: ignore[arg-type]
    assert owners.check(1001, "site-0") is None  # its holder went silent: the site moved
