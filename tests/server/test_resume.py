"""A killed federated run resumed from its checkpoint (in-process grid): nothing counted
twice, nothing spent twice, the same result as a run that was never killed."""

import json
import re
from pathlib import Path

import pytest
import torch
from flwr.app import Message

from client.client_app import app as client_app
from common.audit.cli import audit_egress
from common.config import load_config
from common.results import load_summary
from server.run import federation
from server.run.checkpoint import CHECKPOINT, ResumeError, RunCheckpoint
from server.run.federation import FederatedRun
from server.run.inprocess import InProcessGrid
from server.sites.sampling import ranked

TINY = {
    "train.iterations": 10,
    "tasks.num-tasks": 2,
    "fed.rounds-per-task": 2,
    "fed.num-sites": 2,
    "solver.hidden": 32,
    "generator.hidden": 32,
    "generator.latent-dim": 8,
    "generator.quality": False,
}
DP = {"dp.enabled": True, "dp.min-records": 0, "dp.delta": 1e-5, "dp.target-epsilon": 8.0}
DGM = {  # the generator grows at the task boundary: a resumed run must take its shapes
    "method": "dgm",
    "generator.kind": "gan",
    "generator.arch": "conv",
    "generator.hidden": 8,
    "replay.mode": "global",
}

EMB = {  # sites send releases; the server's sum of task 2's must survive the kill
    "generator.kind": "embedding",
    "embedding.features": 50,
    "embedding.fit-steps": 20,
    "replay.mode": "per-task",
    "replay.solver-data": "synthetic",
}
RIDGE = {**EMB, "solver.arch": "ridge"}  # the server's solved solver and its statistics too
# the sites' reported counts per class must survive the kill (the next replay is built of them)
COUNTS = {
    "replay.mode": "ensemble",
    "replay.mixture": "class-counts",
    "partition.kind": "dirichlet",
}


class Killed(BaseException):
    """The server process dies (not an Exception: nothing on the way may catch it)."""


def use_dirs(monkeypatch: pytest.MonkeyPatch, base: Path) -> Path:
    """A fresh world: the sites' disk and the server's registry."""
    monkeypatch.setenv("FEDREPLAY_SITE_DIR", str(base / "sites"))
    monkeypatch.setenv("FEDREPLAY_SERVER_DIR", str(base / "server"))
    return base / "sites"


def run(base: Path, *, run_id: int, hook=None, nodes: int = 2, **overrides) -> Path:
    cfg = load_config({**TINY, "output-dir": str(base / "runs"), **overrides})
    grid = InProcessGrid(
        client_app, cfg.to_run_config(), num_nodes=nodes, run_id=run_id, reply_hook=hook
    )
    return FederatedRun(cfg).run(grid).path


def kill_when_round(n: int):
    """Kills the server once the sites have answered round ``n`` (they trained and spent)."""

    def hook(sent: Message, reply: Message) -> Message:
        config = sent.content.config_records.get("config")
        if sent.metadata.message_type == "train" and int(config["server-round"]) == n:
            raise Killed
        return reply

    return hook


def whole_ensemble(base: Path) -> dict:
    (folder,) = (base / "runs").iterdir()
    return torch.load(folder / "final_ensemble.pt", weights_only=True)


def killed_run(base: Path, n: int, **overrides) -> Path:
    with pytest.raises(Killed):
        run(base, run_id=1, hook=kill_when_round(n), **overrides)
    (folder,) = (base / "runs").iterdir()
    return folder


def ledger(sites: Path, site_id: str) -> list[dict]:
    """The ledger's training rows (a run's first round also releases each task's count)."""
    rows = json.loads((sites / "privacy" / site_id / "ledger.json").read_text())["ledger"]
    return [r for r in rows if r["kind"] == "training"]


@pytest.mark.parametrize(
    "method", [{}, DGM, EMB, RIDGE, COUNTS], ids=["dgr", "dgm", "embedding", "ridge", "counts"]
)
def test_a_resumed_run_equals_an_uninterrupted_one(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, method: dict
) -> None:
    use_dirs(monkeypatch, tmp_path / "a")
    whole = load_summary(run(tmp_path / "a", run_id=1, **method))

    use_dirs(monkeypatch, tmp_path / "b")
    releases = method is EMB or method is RIDGE
    kill = 4 if releases else 3  # embedding: after task 2's first round (its releases)
    folder = killed_run(tmp_path / "b", kill, **method)  # mid task 2, its replay delivered
    assert not (folder / "summary.json").exists()
    if releases:
        replies = RunCheckpoint.load(folder).state.task_replies
        assert sorted(replies.releases.snapshot()) == ["site-0", "site-1"]
    key = RunCheckpoint.load(folder).state.run_key  # what the sites keyed their state by
    if method is COUNTS:  # the counts of task 2's first round, kept in the run's state
        replies = RunCheckpoint.load(folder).state.task_replies
        assert sorted(replies.class_counts) == ["site-0", "site-1"]
    resumed_path = run(tmp_path / "b", run_id=2, **{"fed.resume": str(folder)}, **method)
    assert resumed_path == folder
    resumed = load_summary(folder)
    assert resumed["status"] == "completed"
    assert resumed["accuracy_matrix"] == whole["accuracy_matrix"]  # deterministic without DP
    assert resumed["flower_run_ids"] == [1, 2] and resumed["run_key"] == key
    assert resumed.get("generator_sizes") == whole.get("generator_sizes")
    if method is COUNTS:
        weights = torch.load(folder / "final_ensemble.pt", weights_only=True)["class_weights"]
        assert weights and weights == whole_ensemble(tmp_path / "a")["class_weights"]
    rounds = [json.loads(line) for line in (folder / "rounds.jsonl").read_text().splitlines()]
    assert [r["round"] for r in rounds] == [1, 2, 3, 4], "no round counted twice or lost"
    # the egress audit covers what left the sites under both Flower runs
    report = audit_egress(folder, sites_dir=tmp_path / "b" / "sites", run_id=None)
    assert report.ok, report.deviations
    assert {Path(log).parent.name for log in report.logs} == {"run-1", "run-2"}
    assert sum(s.by_type.get("train", 0) for s in report.sites.values()) >= 8


def test_a_resumed_per_task_run_keeps_every_finished_tasks_generators(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """replay.mode=per-task: the replay of task 3 is the generators of tasks 1 and 2 with
    the classes each draws; a run killed in task 3 must resume with all of them."""
    per_task = {"replay.mode": "per-task", "tasks.num-tasks": 3}
    use_dirs(monkeypatch, tmp_path / "a")
    whole = load_summary(run(tmp_path / "a", run_id=1, **per_task))
    use_dirs(monkeypatch, tmp_path / "b")
    folder = killed_run(tmp_path / "b", 5, **per_task)  # mid task 3
    payload = RunCheckpoint.load(folder).payload
    assert payload is not None and payload["generator_classes"] == [[0, 1]] * 2 + [[2, 3]] * 2
    run(tmp_path / "b", run_id=2, **{"fed.resume": str(folder)}, **per_task)
    assert load_summary(folder)["accuracy_matrix"] == whole["accuracy_matrix"]


@pytest.mark.parametrize("where", ["after the sites answered", "after aggregation"])
def test_no_privacy_budget_is_spent_twice(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, where: str
) -> None:
    sites_a = use_dirs(monkeypatch, tmp_path / "a")
    run(tmp_path / "a", run_id=1, **DP)

    sites_b = use_dirs(monkeypatch, tmp_path / "b")
    if where == "after the sites answered":
        folder = killed_run(tmp_path / "b", 3, **DP)
    else:  # round 3 aggregated, logged and registered; its checkpoint never written
        real = federation.FederatedRun._checkpoint

        def checkpoint(self, *, task, task_rounds, payload):
            if task == 1 and task_rounds == 1:
                raise Killed
            real(self, task=task, task_rounds=task_rounds, payload=payload)

        monkeypatch.setattr(federation.FederatedRun, "_checkpoint", checkpoint)
        with pytest.raises(Killed):
            run(tmp_path / "b", run_id=1, **DP)
        monkeypatch.setattr(federation.FederatedRun, "_checkpoint", real)
        (folder,) = (tmp_path / "b" / "runs").iterdir()
    summary_b = load_summary(run(tmp_path / "b", run_id=2, **DP, **{"fed.resume": str(folder)}))
    assert summary_b["status"] == "completed"
    for site in ("site-0", "site-1"):
        whole, resumed = ledger(sites_a, site), ledger(sites_b, site)
        assert [r["round"] for r in resumed] == [1, 2, 3, 4], "a round was spent twice"
        # each run releases its own noised counts (sampling rates, sigma): both end at
        # the target within the calibration's 1% tolerance
        assert resumed[-1]["epsilon"] == pytest.approx(whole[-1]["epsilon"], rel=0.02)
    # the resumed round's replies were the same releases: the registry accepted them again
    registry = json.loads((tmp_path / "b" / "server" / "site_privacy_registry.json").read_text())
    assert not any(s.get("quarantined") for s in registry["sites"].values())


def test_a_dgm_round_answered_packed_is_not_paid_again_when_resent_whole(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """DGM: round 4 (task 2's second round) goes packed to sites holding the generator; the
    resumed server holds no such list and sends it whole. The same instruction all the
    same: each site answers with its earlier reply and spends nothing twice."""
    sites = use_dirs(monkeypatch, tmp_path)
    folder = killed_run(tmp_path, 4, **DP, **DGM)
    summary = load_summary(run(tmp_path, run_id=2, **DP, **DGM, **{"fed.resume": str(folder)}))
    assert summary["status"] == "completed"
    for site in ("site-0", "site-1"):
        assert [r["round"] for r in ledger(sites, site)] == [1, 2, 3, 4], "round 4 paid twice"
    rounds = [json.loads(line) for line in (folder / "rounds.jsonl").read_text().splitlines()]
    assert rounds[-1]["round"] == 4 and not rounds[-1]["failures"], rounds[-1]["failures"]
    assert len(rounds[-1]["sites"]) == 2  # the site that had answered answered again


def test_a_site_that_lost_its_state_pays_again(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Honest over-counting: a site without its reply cache trains the round again and its
    ledger records both (the budget is never under-counted)."""
    sites = use_dirs(monkeypatch, tmp_path)
    folder = killed_run(tmp_path, 3, **DP)  # killed after the first site answered round 3
    (first,) = [s for s in ("site-0", "site-1") if len(ledger(sites, s)) == 3]
    other = "site-1" if first == "site-0" else "site-0"
    (reply,) = (sites / "runs").glob(f"*/{first}/reply.pt")
    reply.unlink()
    run(tmp_path, run_id=2, **DP, **{"fed.resume": str(folder)})
    assert [r["round"] for r in ledger(sites, other)] == [1, 2, 3, 4]
    # round 3 twice: the task's planned budget is gone, and round 4 is refused by the ledger
    assert [r["round"] for r in ledger(sites, first)] == [1, 2, 3, 3]
    assert ledger(sites, first)[-1]["epsilon"] == pytest.approx(
        ledger(sites, other)[-1]["epsilon"], rel=0.02
    )
    last = [json.loads(line) for line in (folder / "rounds.jsonl").read_text().splitlines()][-1]
    assert last["round"] == 4 and len(last["sites"]) == 1
    assert "budget" in " ".join(last["failures"].values()).lower()


def test_resume_refuses_what_it_cannot_resume(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    use_dirs(monkeypatch, tmp_path)
    folder = killed_run(tmp_path, 2)
    checkpoint = (folder / CHECKPOINT).read_bytes()
    with pytest.raises(ResumeError, match=r"train.iterations: 10 in the run, 11 now"):
        run(tmp_path, run_id=2, **{"fed.resume": str(folder), "train.iterations": 11})
    assert (folder / CHECKPOINT).read_bytes() == checkpoint, "a refused resume changes nothing"
    with pytest.raises(ResumeError, match=r"no checkpoint\.pt"):
        run(tmp_path, run_id=2, **{"fed.resume": str(tmp_path / "nowhere")})
    # a global model damaged on disk is named, not sent to the sites to be blamed on them
    damaged = torch.load(folder / CHECKPOINT, weights_only=True)
    key = sorted(damaged["arrays"])[0]
    damaged["arrays"][key] = torch.full_like(damaged["arrays"][key], float("nan"))
    torch.save(damaged, folder / CHECKPOINT)
    with pytest.raises(ResumeError, match=rf"non-finite values \({re.escape(key)}"):
        run(tmp_path, run_id=2, **{"fed.resume": str(folder)})
    (folder / CHECKPOINT).write_bytes(checkpoint)
    run(tmp_path, run_id=2, **{"fed.resume": str(folder)})
    with pytest.raises(ResumeError, match="has finished"):
        run(tmp_path, run_id=3, **{"fed.resume": str(folder)})


def test_a_resumed_run_samples_the_sites_the_uninterrupted_one_would(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """fed.fraction-train < 1: the restarted federation numbers its nodes otherwise (new
    SuperNodes, another order), yet every round trains the sites the run's sampling key
    ranks first, before and after the crash, and every site's ledger holds exactly the
    rounds it was sampled for: no site spends on a round it would not have, none twice."""
    four = {**TINY, **DP, "fed.num-sites": 4, "fed.fraction-train": 0.5, "fed.min-sites": 2}
    sites = use_dirs(monkeypatch, tmp_path)

    def federation(node_ids: list[int], partitions: list[int], **kw) -> None:
        cfg = load_config({**four, "output-dir": str(tmp_path / "runs"), **kw.pop("o", {})})
        configs = [{"partition-id": p, "num-partitions": 4} for p in partitions]
        grid = InProcessGrid(
            client_app, cfg.to_run_config(), num_nodes=4, node_configs=configs,
            node_ids=node_ids, **kw,
        )  # fmt: skip
        FederatedRun(cfg).run(grid)

    with pytest.raises(Killed):
        federation([1000, 1001, 1002, 1003], [0, 1, 2, 3], run_id=1, reply_hook=kill_when_round(3))
    (folder,) = (tmp_path / "runs").iterdir()
    key = RunCheckpoint.load(folder).sampling_key
    assert len(key) == 32
    federation([77, 5, 3000, 12], [2, 0, 3, 1], run_id=2, o={"fed.resume": str(folder)})
    assert load_summary(folder)["status"] == "completed"
    names = [f"site-{i}" for i in range(4)]
    expected = [set(ranked(names, key=key, server_round=r)[:2]) for r in range(1, 5)]
    lines = (folder / "rounds.jsonl").read_text().splitlines()
    assert [{s["site_id"] for s in json.loads(line)["sites"]} for line in lines] == expected
    for site in names:
        rounds = [r for r in range(1, 5) if site in expected[r - 1]]
        if not rounds:  # never sampled (the key is random): never spent
            assert not (sites / "privacy" / site / "ledger.json").exists(), site
            continue
        assert [row["round"] for row in ledger(sites, site)] == rounds, site


def test_a_resume_waits_for_its_sites_with_a_time_limit(tmp_path: Path) -> None:
    """After a SuperLink restart the sites may never come back: `fedreplay run --resume`
    used to wait for fed.min-sites with no limit. It sets one (the run then fails naming
    how many connected), and the resume check accepts it as the same run."""
    import json as _json

    from common.config import load_config as _load
    from server.launch.launcher import RESUME_START_TIMEOUT, resume_overrides
    from server.run.checkpoint import comparable

    cfg = _load({"output-dir": str(tmp_path)})
    folder = tmp_path / "run"
    folder.mkdir()
    (folder / "config.json").write_text(_json.dumps(cfg.to_dict()))
    resumed = resume_overrides(folder)
    assert resumed["fed.start-timeout"] == RESUME_START_TIMEOUT
    assert comparable(_load(resumed)) == comparable(cfg)


def test_a_resume_names_the_sites_that_did_not_come_back(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A resume that times out waiting for its sites used to say only how many connected;
    it now names the run's sites that are missing (asking the connected nodes which site
    they hold), and the checkpoint is left as it was for a later try."""
    from server.sites.sampling import SitesMissing

    use_dirs(monkeypatch, tmp_path)
    both = {"fed.min-sites": 2}
    folder = killed_run(tmp_path, 2, **both)
    checkpoint = (folder / CHECKPOINT).read_bytes()
    resume = {**both, "fed.resume": str(folder), "fed.start-timeout": 2}
    with pytest.raises(SitesMissing, match=r"missing: site-1 \(the run's sites: site-0, site-1; "
                       r"connected: site-0\)"):  # fmt: skip
        run(tmp_path, run_id=2, nodes=1, **resume)
    assert (folder / CHECKPOINT).read_bytes() == checkpoint
    run(tmp_path, run_id=3, **resume)  # both back: it completes


@pytest.mark.parametrize("version", [1, 2])
def test_a_checkpoint_of_an_earlier_format_resumes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, version: int
) -> None:
    """A run killed under format 1 (the run state's fields at the top level) or 2 (what the
    strategy collected beside the state) resumes: its state is read whole (rounds, accuracy
    matrix, run key, the task's collected replies, each site's last update) and the run
    completes."""
    use_dirs(monkeypatch, tmp_path)
    folder = killed_run(tmp_path, 3)
    saved = torch.load(folder / CHECKPOINT, weights_only=True)
    assert saved["version"] == 3 and "rounds" not in saved and "strategy" not in saved
    state = saved.pop("state")
    strategy = {
        **state.pop("task_replies"),
        "evaluate_records": state.pop("evaluations"),
        "site_updates": state.pop("site_updates"),
    }
    assert sorted(strategy["site_updates"]) == ["site-0", "site-1"]
    old_layout = {**saved, **state} if version == 1 else {**saved, "state": state}
    torch.save({**old_layout, "strategy": strategy, "version": version}, folder / CHECKPOINT)
    old = RunCheckpoint.load(folder)
    assert old.state.run_key == state["run_key"] and old.state.rounds == state["rounds"]
    assert old.state.matrix.rows[0][0] == state["matrix"][0][0]
    assert sorted(old.state.site_updates) == ["site-0", "site-1"]
    assert old.state.task_replies.declared == strategy["declared"]
    run(tmp_path, run_id=2, **{"fed.resume": str(folder)})
    summary = load_summary(folder)
    assert summary["status"] == "completed" and summary["rounds"] == 4
    assert summary["run_key"] == state["run_key"] and summary["flower_run_ids"] == [1, 2]


def test_a_run_saved_before_keys_moved_or_were_removed_resumes_with_its_config() -> None:
    """The checkpoint's config is read as the loader reads a saved run: moved keys under
    their new names, removed ones at their "off" value dropped; one that was on is refused
    (the run needs the version that ran it)."""
    from common.metrics import AccuracyMatrix
    from server.run.checkpoint import RunState, comparable

    cfg = load_config(TINY)
    old = comparable(cfg)
    old["train"] = {**old["train"], "generator_lr": old["generator"].pop("lr")}
    old["solver"] = {**old["solver"], "ridge": old.pop("ridge")["penalty"]}
    old["gan"] = {**old["gan"], "loss": "bce"}
    ckpt = RunCheckpoint(
        state=RunState(matrix=AccuracyMatrix(1)),
        config=old,
        task=0,
        task_rounds=0,
        arrays={},
        payload=None,
    )
    ckpt.check_config(cfg)  # the same run
    with pytest.raises(ResumeError, match=r"train\.iterations: 10 in the run, 11 now"):
        ckpt.check_config(load_config({**TINY, "train.iterations": 11}))
    ckpt.config = {**old, "gan": {**old["gan"], "loss": "wgan-gp"}}
    with pytest.raises(ResumeError, match=r"gan\.loss = 'wgan-gp'.*no longer has"):
        ckpt.check_config(cfg)
