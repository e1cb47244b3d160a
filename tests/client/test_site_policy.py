"""The site owns its privacy: a server's run config that asks for less privacy than the
site's own policy is refused through the real ClientApp before any record is read, and
nothing leaves the site."""

from pathlib import Path

import pytest
from flwr.app import ConfigRecord, Context, Message, MessageType, RecordDict
from flwr.supercore.task_identity import TaskIdentity

from client.client_app import app as client_app
from client.policy import PolicyError, SitePolicy, read_policy, site_policy, write_policy
from client.site import Site, SiteIdentity
from common import wire
from common.config import load_config
from server.cli import main as fedreplay

TINY = {
    "tasks.num-tasks": 2,
    "fed.num-sites": 2,
    "solver.hidden": 16,
    "generator.hidden": 16,
    "generator.latent-dim": 4,
    "dp.min-records": 0,
    "dp.delta": 1e-5,
    "dp.target-epsilon": 2.0,
}


@pytest.fixture(autouse=True)
def site_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("FEDREPLAY_SITE_DIR", str(tmp_path))
    return tmp_path


def _train(overrides: dict, node_config: dict) -> Message:
    TaskIdentity.run_id, TaskIdentity.node_id, TaskIdentity.task_id = 1, 0, 0
    context = Context(
        run_id=1,
        node_id=7,
        node_config={"partition-id": 0, "num-partitions": 2, **node_config},
        state=RecordDict(),
        run_config=load_config({**TINY, **overrides}).to_run_config(),
    )
    config = ConfigRecord(
        {
            "task": 0,
            "seed": 0,
            "iterations": 2,
            "server-round": 1,
            wire.RUN_KEY: "9-abc",
            wire.INPUT_SHAPE: "1x8x8",
        }
    )
    template = Site(load_config(TINY), SiteIdentity(1, 2))  # the global scholar's shapes
    scholar = wire.scholar_record(template.solver, template.shared_generator, packed=True)
    content = RecordDict({**wire.part_records(scholar), wire.CONFIG: config})
    msg = Message(content, dst_node_id=7, message_type=MessageType.TRAIN)
    return client_app(msg, context)


def _sent_anything(site_dir: Path) -> bool:
    return any((site_dir / "egress").rglob("*.jsonl")) if (site_dir / "egress").exists() else False


def test_a_spent_simulated_site_asked_to_train_without_dp_refuses(site_dir: Path) -> None:
    """The attack of the audit: spend the site's budget, then run again with
    dp.enabled=false. The records have spent budget: no run config switches DP off."""
    spent = Site(load_config({**TINY, "dp.enabled": True}), SiteIdentity(0, 2))
    spent.train(0, payload=None, iterations=2, seed=0, run_id="1-x", server_round=1)
    ledger = (site_dir / "privacy" / "site-0" / "ledger.json").read_bytes()
    reply = _train({"dp.enabled": False}, {})
    assert reply.has_error()
    assert "dp-required" in reply.error.reason and "dp.enabled" in reply.error.reason
    assert (site_dir / "privacy" / "site-0" / "ledger.json").read_bytes() == ledger
    assert not _sent_anything(site_dir)
    # a site whose records never spent budget is the experimenter's to run without DP
    assert not _train({"dp.enabled": False}, {"partition-id": 1}).has_error()


@pytest.mark.parametrize(
    ("overrides", "key"),
    [
        ({"dp.enabled": False}, "dp-required"),
        ({"dp.enabled": True, "dp.target-epsilon": 8.0}, "max-epsilon"),
        ({"dp.enabled": True, "dp.delta": 1e-3}, "max-delta"),
        ({"dp.enabled": True, "dp.release-metrics": "loss-solver"}, "release-metrics"),
        ({"dp.enabled": True, "dp.min-records": 0}, "min-records"),
    ],
)
def test_a_deployed_site_refuses_a_run_asking_for_less_privacy(
    site_dir: Path, overrides: dict, key: str
) -> None:
    assert (
        fedreplay(
            ["site", "init", "--max-epsilon", "2", "--max-delta", "1e-5", "--min-records", "10"]
        )
        == 0
    )
    policy = read_policy(site_dir / "policy.toml")
    assert policy.dp_required and policy.max_epsilon == 2.0
    reply = _train({"dp.min-records": 10, **overrides}, {"site-id": "st-olav"})
    assert reply.has_error(), "the site trained against its own policy"
    assert key in reply.error.reason and "policy" in reply.error.reason
    assert not (site_dir / "privacy" / "st-olav").exists(), "a record was touched"
    assert not _sent_anything(site_dir)


def test_a_run_may_ask_for_more_privacy_than_the_policy(site_dir: Path) -> None:
    write_policy(
        site_dir,
        SitePolicy(dp_required=True, max_epsilon=2.0, max_delta=1e-5, min_records=0),
    )
    reply = _train(
        {"dp.enabled": True, "dp.target-epsilon": 1.0, "dp.delta": 1e-6}, {"site-id": "st-olav"}
    )
    assert not reply.has_error(), reply.error.reason if reply.has_error() else ""
    metrics = reply.content.metric_records[wire.METRICS]
    assert 0 < float(metrics["dp-epsilon"]) <= 1.0 + 1e-9


def test_a_named_site_without_a_policy_refuses_and_a_bad_policy_is_named(site_dir: Path) -> None:
    reply = _train({"dp.enabled": True}, {"site-id": "st-olav"})
    assert reply.has_error() and "no privacy policy" in reply.error.reason
    (site_dir / "policy.toml").write_text("[policy]\ndp-required = true\nmax-epsilon = -1\n")
    with pytest.raises(PolicyError, match="max-epsilon"):
        site_policy(load_config(TINY), {"site-id": "a"}, site_dir=site_dir, has_spent=False)
    (site_dir / "policy.toml").write_text("[policy]\ndp-required = true\nmax-epsilom = 1\n")
    with pytest.raises(PolicyError, match="unknown keys"):
        read_policy(site_dir / "policy.toml")


def test_a_spent_single_site_refuses_a_run_without_dp(site_dir: Path) -> None:
    """fedreplay single: the operator's run config is the policy, but records that have
    spent budget are never trained on without DP."""
    node = {"site-id": "single", "policy": "run-config"}
    assert not _train({"dp.enabled": True}, node).has_error()
    reply = _train({"dp.enabled": False}, node)
    assert reply.has_error() and "dp-required" in reply.error.reason


def test_the_site_says_what_it_trained_sent_and_spent_and_what_it_refused(
    site_dir: Path,
) -> None:
    """A SuperNode's log showed only Flower's message ids: each instruction now leaves one
    line at the site (console and <site dir>/logs/<site id>.log) with what it trained,
    what it sent, the epsilon spent and left, or why it refused."""
    reply = _train({"dp.enabled": True}, {})
    assert not reply.has_error(), reply.error.reason if reply.has_error() else ""
    sent = wire.scalar_metrics(reply.content.metric_records[wire.METRICS])
    lines = (site_dir / "logs" / "site-0.log").read_text().splitlines()
    assert len(lines) == 1
    assert "site-0 round 1 (task 1): trained" in lines[0]
    assert f"record count sent {sent['num-examples']:.0f}" in lines[0]
    assert f"sent {sent['bytes-up'] / 1024:.0f} kB" in lines[0]
    assert f"epsilon {sent['dp-epsilon']:.3f} spent" in lines[0] and "left" in lines[0]
    refused = _train({"dp.enabled": False}, {})  # its records spent budget: refused
    assert refused.has_error()
    last = (site_dir / "logs" / "site-0.log").read_text().splitlines()[-1]
    assert "train failed: PolicyRefused" in last and "dp-required" in last
