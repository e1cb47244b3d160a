"""fed.aggregation = "secure" (issue 36): the server learns the sum of the sites' releases
under Flower's SecAgg+, never one site's, and survives a site that drops out mid-round."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from flwr.app import ConfigRecord, Context, Message, MessageType, RecordDict
from flwr.clientapp import ClientApp
from flwr.common import bytes_to_ndarray, ndarray_to_bytes
from flwr.common.secure_aggregation.secaggplus_constants import Key, Stage

from client.secure_aggregation import masked_reply, secure_aggregation_mod
from common import protocol, wire
from common.audit.egress_check import message_problems
from common.config import ConfigError, load_config
from server.run.inprocess import InProcessGrid
from server.run.secure_aggregation import SecureAggregationGrid

SECURE_RIDGE = {
    "method": "dgr",
    "solver.arch": "ridge",
    "generator.kind": "embedding",
    "embedding.base": "scatter",
    "replay.mode": "per-task",
    "replay.solver-data": "synthetic",
    "fed.rounds-per-task": 1,
    "fed.aggregation": "secure",
    "fed.num-sites": 5,
}
SHAPE = (12, 10)


def _releases(n: int) -> dict[int, np.ndarray]:
    """Releases of the scale a site sends: sums over hundreds of norm-1 records plus noise."""
    rng = np.random.default_rng(0)
    return {
        1000 + i: (rng.uniform(0, 300, SHAPE) + rng.normal(0, 3, SHAPE)).astype(np.float32)
        for i in range(n)
    }


def _app(releases: dict[int, np.ndarray], shares: int = 3) -> ClientApp:
    cfg = load_config(SECURE_RIDGE)
    app = ClientApp(mods=[secure_aggregation_mod(lambda _: shares)])

    @app.train()
    def train(msg: Message, context: Context) -> Message:
        records = RecordDict(
            {
                wire.METRICS: wire.metrics_record({"num-examples": 300.0}),
                wire.SITE: wire.site_record(f"site-{context.node_id}"),
            }
        )
        return masked_reply(msg, cfg, releases[context.node_id], SHAPE, records)

    return app


def _grid(inner: InProcessGrid, sums: list[tuple[np.ndarray, int]]) -> SecureAggregationGrid:
    return SecureAggregationGrid(
        inner, shape=lambda: SHAPE, on_sum=lambda t, k: sums.append((t, k))
    )


def _round(grid: SecureAggregationGrid, n: int) -> list[Message]:
    config = ConfigRecord({"server-round": 1, "task": 0})
    messages = [
        Message(RecordDict({wire.CONFIG: config}), dst_node_id=node, message_type=MessageType.TRAIN)
        for node in range(1000, 1000 + n)
    ]
    return list(grid.send_and_receive(messages, timeout=60))


def _collect(instruction: Message) -> bool:
    """The instruction is the stage in which a site sends its masked release."""
    stage = instruction.content.config_records[protocol.SECAGG.name][Key.STAGE]
    return stage == Stage.COLLECT_MASKED_VECTORS


@pytest.fixture(autouse=True)
def _site_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FEDREPLAY_SITE_DIR", str(tmp_path / "sites"))


def test_the_server_gets_the_exact_sum_and_no_release(tmp_path: Path) -> None:
    releases = _releases(5)
    sums: list[tuple[np.ndarray, int]] = []
    seen: list[tuple[int, set[str], dict]] = []  # node, records, its SecAgg+ values

    def hook(_instruction: Message, reply: Message) -> Message:
        secagg = reply.content.config_records[protocol.SECAGG.name]
        seen.append((reply.metadata.src_node_id, set(reply.content), dict(secagg)))
        return reply

    inner = InProcessGrid(_app(releases), {}, num_nodes=5, reply_hook=hook)
    grid = _grid(inner, sums)
    replies = _round(grid, 5)
    assert len(sums) == 1 and sums[0][1] == 5
    plain = sum(r.astype(np.float64) for r in releases.values())
    error = np.linalg.norm(sums[0][0] - plain) / np.linalg.norm(plain)
    assert error <= 1e-4, error
    # what left each site: keys, encrypted shares, masked integers; no array, no release
    assert len(seen) == 4 * 5
    assert all(names <= {protocol.SECAGG.name, wire.METRICS, wire.SITE} for _, names, _ in seen)
    masked = {node: values for node, names, values in seen if wire.METRICS in names}
    assert sorted(masked) == sorted(releases)
    for node, values in masked.items():
        vector = bytes_to_ndarray(values[Key.MASKED_PARAMETERS][1])  # ([0]: the weight)
        assert vector.size == np.prod(SHAPE)
        assert not np.allclose(vector, releases[node], atol=1e3)  # masked: uniform mod 2^40
    # the strategy gets each site's metrics and id only
    assert [set(r.content) for r in replies] == [{wire.METRICS, wire.SITE}] * 5
    # and the egress log says what left, each message as declared
    logs = list((tmp_path / "sites" / "egress").rglob("*.jsonl"))
    entries = [json.loads(line) for p in logs for line in p.read_text().splitlines()]
    assert len(entries) == 20 and all(message_problems(e, expected=None) == [] for e in entries)


def test_a_site_dropping_out_mid_round_is_survived(tmp_path: Path) -> None:
    """One of five sites shares its keys, then never sends its masked release: the others'
    shares remove its pairwise masks, and the sum is of the four that sent."""
    releases = _releases(5)
    sums: list[tuple[np.ndarray, int]] = []

    def drop(instruction: Message, reply: Message) -> Message | None:
        return None if instruction.metadata.dst_node_id == 1003 and _collect(instruction) else reply

    inner = InProcessGrid(_app(releases), {}, num_nodes=5, reply_hook=drop)
    grid = _grid(inner, sums)
    replies = _round(grid, 5)
    assert len(sums) == 1 and sums[0][1] == 4
    plain = sum(r.astype(np.float64) for nid, r in releases.items() if nid != 1003)
    assert np.linalg.norm(sums[0][0] - plain) / np.linalg.norm(plain) <= 1e-4
    assert sorted(r.metadata.src_node_id for r in replies) == [1000, 1001, 1002, 1004]


def test_too_few_sites_halt_the_sum_and_every_reply_says_why() -> None:
    releases = _releases(5)
    sums: list[tuple[np.ndarray, int]] = []
    gone = {1001, 1002, 1003}

    def drop(instruction: Message, reply: Message) -> Message | None:
        return None if instruction.metadata.dst_node_id in gone and _collect(instruction) else reply

    inner = InProcessGrid(_app(releases), {}, num_nodes=5, reply_hook=drop)
    grid = _grid(inner, sums)
    replies = _round(grid, 5)
    assert protocol.secure_threshold(5) == 3 and not sums
    assert replies
    assert all(r.has_error() and "secure aggregation halted" in r.error.reason for r in replies)


def test_only_the_solved_solver_is_summed_securely() -> None:
    with pytest.raises(ConfigError, match=r"fed\.aggregation='secure'"):
        load_config({**SECURE_RIDGE, "solver.arch": "mlp", "generator.kind": "vae"})
    with pytest.raises(ConfigError, match="rounds-per-task"):
        load_config({**SECURE_RIDGE, "fed.rounds-per-task": 2})
    with pytest.raises(ConfigError, match="num-sites >= 3"):
        load_config({**SECURE_RIDGE, "fed.num-sites": 2})
    assert load_config(SECURE_RIDGE).secure_aggregation


def test_a_site_refuses_a_secure_exchange_the_run_did_not_declare() -> None:
    cfg = load_config({**SECURE_RIDGE, "fed.aggregation": "fedavg"})
    msg = Message(RecordDict(), dst_node_id=1, message_type=MessageType.TRAIN)
    with pytest.raises(PermissionError, match=r"fed\.aggregation"):
        masked_reply(msg, cfg, None, SHAPE, RecordDict())


def _federation(
    tmp_path: Path, name: str, n: int, **overrides: object
) -> tuple[dict, list[set[str]]]:
    from client.client_app import app as client_app
    from common.results import load_summary
    from server.run.federation import FederatedRun

    cfg = load_config(
        {
            **SECURE_RIDGE,
            "embedding.features": 100,
            "output-dir": str(tmp_path / name),
            "tasks.num-tasks": 2,
            "fed.num-sites": n,
            "generator.quality": False,
            **overrides,
        }
    )
    sent: list[set[str]] = []

    def hook(_message: Message, reply: Message) -> Message:
        sent.append(set(reply.content.array_records) if reply.has_content() else set())
        return reply

    grid = InProcessGrid(client_app, cfg.to_run_config(), num_nodes=n, run_id=1, reply_hook=hook)
    return load_summary(FederatedRun(cfg).run(grid).path), sent


@pytest.mark.slow
def test_a_secure_federation_solves_the_solver_the_plain_one_does(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Three sites, two tasks of the digits, without DP (exact releases): the solver solved
    from the secure sum scores what the one from the plain sum does (no per-site bound
    there either), and no release left a site unmasked."""
    monkeypatch.setenv("FEDREPLAY_SERVER_DIR", str(tmp_path / "server"))
    secure, sent = _federation(tmp_path, "secure", 3)
    plain_sum = {"fed.aggregation": "fedavg", "robust.weight-cap": 0.0}
    plain, plain_sent = _federation(tmp_path, "plain", 3, **plain_sum)
    assert secure["status"] == plain["status"] == "completed"
    assert any("embedding" in r for r in plain_sent) and not any(sent)
    assert secure["final_average_accuracy"] > 0.7, secure["accuracy_matrix"]
    assert abs(secure["final_average_accuracy"] - plain["final_average_accuracy"]) <= 0.005


@pytest.mark.slow
def test_a_private_secure_federation_of_three_sites(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FEDREPLAY_SERVER_DIR", str(tmp_path / "server"))
    dp = {"dp.enabled": True, "dp.min-records": 0, "dp.delta": 1e-5, "dp.target-epsilon": 8.0}
    summary, sent = _federation(tmp_path, "private", 3, **dp)
    assert summary["status"] == "completed" and not any(sent)
    assert summary["final_average_accuracy"] > 0.7, summary["accuracy_matrix"]
    assert all(0 < eps <= 8.0 for eps in summary["dp_epsilon_per_site"].values())


def test_a_site_refuses_a_sum_of_fewer_sites_than_its_noise_share_counts_on() -> None:
    """A site whose release carries 1/4 of the noise refuses a sum unmasked from 3 sites
    (5 sampled: the threshold is 3), at the first stage, before any record is read."""
    inner = InProcessGrid(_app(_releases(5), shares=4), {}, num_nodes=5)
    sums: list[tuple[np.ndarray, int]] = []
    replies = _round(_grid(inner, sums), 5)
    assert not sums and len(replies) == 5
    assert all(r.has_error() and "at least 4" in r.error.reason for r in replies)


DISTRIBUTED = {
    **SECURE_RIDGE,
    "embedding.base": "pixels",
    "embedding.features": 50,
    "tasks.num-tasks": 2,
    "dp.enabled": True,
    "dp.min-records": 0,
    "dp.delta": 1e-5,
    "dp.target-epsilon": 2.0,
}


def _noise(values: torch.Tensor, classes: int) -> np.ndarray:
    """A release's independent values, in the coordinates its noise is drawn in."""
    from common.privacy.embedding import coordinates

    got = coordinates(values).numpy()
    assert len(got) == classes * values.shape[1] + values.shape[1] * (values.shape[1] + 1) // 2
    return got


def test_distributed_noise_the_sum_carries_the_calibrated_noise_and_no_share_does(
    tmp_path: Path,
) -> None:
    """Under secure aggregation each of m sites adds 1/m of the noise's variance: the sum of
    m shares has the variance the ledger's noise multiplier calibrates, no single share has
    more than 1/m of it; the ledger spends at the aggregate's noise and keeps, beside it,
    the larger epsilon of the site's own share (a server colluding with every other site)."""
    from client.site import Site, SiteIdentity
    from common.models.embedding import features_for
    from common.privacy.accountant import compute_epsilon
    from common.privacy.embedding import GRAM_SENSITIVITY, release
    from common.privacy.session import COUNT_NOISE

    cfg = load_config(DISTRIBUTED)
    m = protocol.secure_threshold(cfg.fed.num_sites)
    assert m == 3
    shares, sigmas, metrics = [], [], []
    for p in range(m):
        site = Site(cfg, SiteIdentity(p, cfg.fed.num_sites), noise_shares=m)
        metrics.append(site.train(0, payload=None, iterations=1, seed=0, run_id=1, server_round=1))
        data, classes = site.stream.tasks[0].train, site.stream.tasks[0].classes
        features = features_for(cfg, site.stream.shape)
        exact = release(features, data.x, data.y, classes, sigma=None, gram=True)
        assert site.release is not None
        shares.append(_noise(site.release - exact, len(classes)))
        sigmas.append(metrics[-1]["dp-noise-multiplier"])
    assert max(sigmas) - min(sigmas) < 1e-9  # the same plan at every site
    full = (sigmas[0] * GRAM_SENSITIVITY) ** 2  # the variance the ledger calibrated
    for share in shares:
        assert abs(share.var() / (full / m) - 1) < 0.1, share.var() / full
    total = sum(shares)
    assert abs(total.var() / full - 1) < 0.1, total.var() / full
    # the ledger: the budget held at the aggregate's noise, the own share's epsilon beside
    history = [(COUNT_NOISE, 1.0, 1), (sigmas[0] / m**0.5, 1.0, 1)]
    own = compute_epsilon(history, delta=1e-5, kind="rdp")
    for got in metrics:
        assert got["dp-epsilon"] <= 2.0 + 1e-9
        assert got["dp-epsilon-own-noise"] == pytest.approx(own, rel=1e-6)
        assert got["dp-epsilon-own-noise"] > 1.5 * got["dp-epsilon"]


def test_a_share_of_the_noise_never_leaves_but_in_a_secure_sum(tmp_path: Path) -> None:
    """A release made with a share of the noise is refused to a round that would send it
    with all of it expected (the same run asked again without distributed noise)."""
    from client.site import Site, SiteIdentity

    cfg = load_config(DISTRIBUTED)
    Site(cfg, SiteIdentity(0, 5), noise_shares=3).train(
        0, payload=None, iterations=1, seed=0, run_id=1, server_round=1
    )
    with pytest.raises(PermissionError, match="share of the noise"):
        Site(cfg, SiteIdentity(0, 5), noise_shares=1).train(
            0, payload=None, iterations=1, seed=0, run_id=1, server_round=2
        )


def test_a_site_s_policy_decides_its_share_of_the_noise(tmp_path: Path) -> None:
    from client.policy import PolicyError, SitePolicy, read_policy, write_policy

    cfg = load_config(DISTRIBUTED)
    shared = SitePolicy(dp_required=True, max_epsilon=None, max_delta=None, min_records=0)
    own = SitePolicy(
        dp_required=True, max_epsilon=None, max_delta=None, min_records=0, own_noise=True
    )
    assert shared.noise_shares(cfg) == 3 and own.noise_shares(cfg) == 1
    plain = load_config({**DISTRIBUTED, "fed.aggregation": "fedavg"})
    assert shared.noise_shares(plain) == 1  # no secure sum: all the noise, always
    # the operator's file says so, and nothing but a bool is taken
    path = write_policy(tmp_path, own)
    assert read_policy(path).own_noise and "own-noise = true" in path.read_text()
    path.write_text(path.read_text().replace("own-noise = true", 'own-noise = "yes"'))
    with pytest.raises(PolicyError, match="own-noise"):
        read_policy(path)


def test_a_site_that_sits_the_task_out_still_adds_its_share_of_the_noise(
    tmp_path: Path,
) -> None:
    """Under distributed noise the others' shares count on m shares in the sum: a site with
    too few records sends its share of the noise alone, at the noise of a site that trains
    (no record is read, nothing but its count release is spent)."""
    from client.site import Site, SiteIdentity
    from common.privacy.embedding import GRAM_SENSITIVITY

    cfg = load_config(DISTRIBUTED)
    trained = Site(cfg, SiteIdentity(0, 5), noise_shares=3)
    sigma = trained.train(0, payload=None, iterations=1, seed=0, run_id=1, server_round=1)[
        "dp-noise-multiplier"
    ]
    out = load_config({**DISTRIBUTED, "dp.min-records": 10**6})
    idle = Site(out, SiteIdentity(1, 5), noise_shares=3)
    got = idle.train(0, payload=None, iterations=1, seed=0, run_id=1, server_round=1)
    assert got["num-examples"] == 0 and idle.release is not None
    share = _noise(idle.release, len(idle.stream.tasks[0].classes))
    assert abs(share.var() / ((sigma * GRAM_SENSITIVITY) ** 2 / 3) - 1) < 0.1


def _stage(instruction: Message) -> str:
    return str(instruction.content.config_records[protocol.SECAGG.name][Key.STAGE])


def test_a_malformed_masked_release_is_refused_and_the_others_are_summed() -> None:
    """A hostile site's masked release of another shape (numpy would broadcast a (1,) array
    into every value) is refused before it touches the sum; the others' sum is exact."""
    releases = _releases(5)
    sums: list[tuple[np.ndarray, int]] = []

    def forge(instruction: Message, reply: Message) -> Message:
        if instruction.metadata.dst_node_id == 1002 and _collect(instruction):
            record = reply.content.config_records[protocol.SECAGG.name]
            parts = list(record[Key.MASKED_PARAMETERS])  # type: ignore[arg-type]
            record[Key.MASKED_PARAMETERS] = [parts[0], ndarray_to_bytes(np.array([7]))]
        return reply

    replies = _round(
        _grid(InProcessGrid(_app(releases), {}, num_nodes=5, reply_hook=forge), sums), 5
    )
    assert len(sums) == 1 and sums[0][1] == 4
    plain = sum(r.astype(np.float64) for nid, r in releases.items() if nid != 1002)
    assert np.linalg.norm(sums[0][0] - plain) / np.linalg.norm(plain) <= 1e-4
    refused = [r for r in replies if r.has_error()]
    assert len(refused) == 1 and "masked release of shapes" in refused[0].error.reason


@pytest.mark.parametrize("stage", [Stage.SETUP, Stage.SHARE_KEYS, Stage.UNMASK])
def test_garbage_at_any_stage_never_crashes_the_server(stage: str) -> None:
    """A site that answers a stage with values of the wrong kind is refused there (as if
    it dropped out); the round goes on with the others or fails naming why, never raises."""
    releases = _releases(5)
    sums: list[tuple[np.ndarray, int]] = []

    def garble(instruction: Message, reply: Message) -> Message:
        if instruction.metadata.dst_node_id == 1001 and _stage(instruction) == stage:
            record = reply.content.config_records[protocol.SECAGG.name]
            for key in list(record):
                record[key] = 1.5 if not isinstance(record[key], list) else [1.5]
        return reply

    replies = _round(
        _grid(InProcessGrid(_app(releases), {}, num_nodes=5, reply_hook=garble), sums), 5
    )
    if stage == Stage.UNMASK:  # its masked release is in; the others' shares unmask it
        assert len(sums) == 1 and sums[0][1] == 5 and not any(r.has_error() for r in replies)
        summed = list(releases)
    else:  # refused before it sent a release: survived as a dropout
        assert len(sums) == 1 and sums[0][1] == 4
        assert [r.metadata.src_node_id for r in replies if r.has_error()] == [1001]
        assert "rejected" in next(r.error.reason for r in replies if r.has_error())
        summed = [nid for nid in releases if nid != 1001]
    plain = sum(releases[nid].astype(np.float64) for nid in summed)
    assert np.linalg.norm(sums[0][0] - plain) / np.linalg.norm(plain) <= 1e-4


def test_a_server_that_skips_the_secure_sum_gets_nothing(tmp_path: Path) -> None:
    """A secure, private run's site asked to train by a plain instruction (a server that
    would take its release, carrying a share of the noise, in the clear) refuses before any
    record is read: an error reply, nothing spent, nothing in its egress log."""
    from flwr.supercore.task_identity import TaskIdentity

    from client.client_app import app as client_app

    TaskIdentity.run_id, TaskIdentity.node_id, TaskIdentity.task_id = 1, 0, 0
    cfg = load_config(DISTRIBUTED)
    context = Context(
        run_id=1,
        node_id=1000,
        node_config={"partition-id": 0, "num-partitions": 5},
        state=RecordDict(),
        run_config=cfg.to_run_config(),
    )
    config = ConfigRecord({"task": 0, "seed": 0, "iterations": 1, "server-round": 1})
    plain = Message(RecordDict({wire.CONFIG: config}), dst_node_id=1000, message_type="train")
    reply = client_app(plain, context)
    assert reply.has_error() and "fed.aggregation = 'secure'" in reply.error.reason
    sites = tmp_path / "sites"
    assert not (sites / "privacy").exists() and not (sites / "egress").exists()
