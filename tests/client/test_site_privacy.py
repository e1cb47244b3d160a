"""What a site sends and keeps under DP: protocol metrics only, its own stable identity."""

from pathlib import Path

import pytest

from client.site import Site, SiteIdentity
from common.config import load_config

TINY = {
    "tasks.num-tasks": 2,
    "fed.num-sites": 2,
    "solver.hidden": 16,
    "generator.hidden": 16,
    "generator.latent-dim": 4,
    "dp.min-records": 0,
    "dp.delta": 1e-5,
}


@pytest.fixture(autouse=True)
def site_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("FEDREPLAY_SITE_DIR", str(tmp_path))
    return tmp_path


def test_under_dp_a_site_sends_only_protocol_metrics_and_refuses_evaluation() -> None:
    plain = Site(load_config(TINY), SiteIdentity(0, 2)).train(0, payload=None, iterations=2, seed=0)
    assert {"loss-solver", "train-time-s"} <= set(plain)
    site = Site(load_config({**TINY, "dp.enabled": True}), SiteIdentity(0, 2))
    private = site.train(0, payload=None, iterations=2, seed=0, run_id=1, server_round=1)
    assert not {"loss-solver", "loss-generator", "train-time-s"} & set(private)
    assert private["dp-epsilon"] > 0 and private["num-examples"] > 0
    with pytest.raises(PermissionError, match="private test data"):
        site.evaluate(0)
    opted = Site(
        load_config({**TINY, "dp.enabled": True, "dp.release-metrics": "loss-solver"}),
        SiteIdentity(1, 2),
    )
    assert "loss-solver" in opted.train(0, payload=None, iterations=2, seed=0, run_id=1)


def test_the_ledger_is_keyed_by_the_site_id_not_the_data_share(site_dir: Path) -> None:
    cfg = load_config({**TINY, "dp.enabled": True})
    identity = SiteIdentity.from_node_config(
        {"partition-id": 1, "num-partitions": 2, "site-id": "st-olav"}, 2
    )
    assert identity.site_id == "st-olav"
    Site(cfg, identity).train(0, payload=None, iterations=2, seed=0, run_id=5, server_round=1)
    assert (site_dir / "privacy" / "st-olav" / "ledger.json").is_file()
    assert SiteIdentity(3, 5).site_id == "site-3"  # simulation default
    with pytest.raises(ValueError, match="site id"):
        SiteIdentity(0, 1, "../../etc")


def test_under_dp_no_reply_value_is_a_function_of_the_record_count(
    site_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Add/remove adjacency needs n private: the same records trained in three fresh site
    folders give different counts, none n, and a sampling rate that is batch / the released
    count, never batch / n (the noise is calibrated on it; the count is released once a run
    and spent in the ledger)."""
    # a batch well below the ~144 records, so that batch / count does not clamp at rate 1
    cfg = load_config({**TINY, "dp.enabled": True, "train.batch-size": 16})
    n = len(Site(cfg, SiteIdentity(0, 2)).stream.tasks[0].train)
    seen = []
    for k in range(3):
        monkeypatch.setenv("FEDREPLAY_SITE_DIR", str(site_dir / f"fresh-{k}"))
        out = Site(cfg, SiteIdentity(0, 2)).train(0, payload=None, iterations=2, seed=0, run_id=1)
        seen.append((out["num-examples"], out["dp-sample-rate"], out["dp-noise-multiplier"]))
        again = Site(cfg, SiteIdentity(0, 2)).train(
            0, payload=None, iterations=2, seed=0, run_id=1, server_round=2
        )
        assert again["num-examples"] == out["num-examples"], "a count is released once a run"
    assert len({s[0] for s in seen}) > 1, seen
    assert any(s[0] != n for s in seen), (n, seen)
    # the sampling rate is the released count's, never n's (the noise is calibrated on it)
    for count, rate, _ in seen:
        assert rate == pytest.approx(min(1.0, 16 / count), rel=1e-12), (count, rate, n)
