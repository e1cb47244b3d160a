"""DGM in federation through the ServerApp and ClientApp logic (in-process grid): the server
binarises the averaged masks and grows the generator at each task boundary, every site
takes the grown shapes, and what finished tasks reserved is frozen everywhere, even
against a site that moves it."""

from pathlib import Path

import numpy as np
import torch
from flwr.app import Message

from client.client_app import app as client_app
from common import wire, wire_packed
from common.config import load_config
from common.models import masks
from common.models.dgm import DGMGenerator
from common.models.growth import fit_state
from common.results import load_summary
from server.run.federation import FederatedRun
from server.run.inprocess import InProcessGrid

DGM = {
    "method": "dgm",
    "generator.kind": "gan",
    "generator.arch": "conv",
    "replay.mode": "global",
    "train.iterations": 15,
    "tasks.num-tasks": 3,
    "fed.rounds-per-task": 2,
    "solver.hidden": 32,
    "generator.hidden": 8,
    "generator.latent-dim": 8,
    "generator.quality": False,
}
HOSTILE = 1001


def federate(tmp_path: Path, *, hook=None, nodes: int = 2, **overrides):
    cfg = load_config({**DGM, "output-dir": str(tmp_path), "fed.num-sites": nodes, **overrides})
    grid = InProcessGrid(client_app, cfg.to_run_config(), num_nodes=nodes, reply_hook=hook)
    run = FederatedRun(cfg).run(grid)
    return run, grid


def server_generator(msg: Message) -> DGMGenerator:
    """The generator a train instruction carries, as the site rebuilds it."""
    state = {k: torch.from_numpy(v.copy()) for k, v in generator_arrays(msg).items()}
    gen = DGMGenerator((1, 8, 8), 10, 8, 8)
    fit_state(gen, state)
    gen.load_state_dict(state)
    return gen


def generator_arrays(msg: Message) -> dict[str, np.ndarray]:
    record = msg.content.array_records["generator"]  # the generator part's own record
    return {k[10:]: v.numpy() for k, v in record.items()}


def train_messages(grid: InProcessGrid, task: int, *, packed: bool = False) -> list[Message]:
    """The task's train instructions that carry the whole generator (``packed``: those
    that carry only its free elements, for sites that hold the rest)."""
    return [
        m
        for m in grid.sent
        if m.metadata.message_type == "train"
        and int(m.content.config_records[wire.CONFIG]["task"]) == task
        and is_packed(m) == packed
    ]


def is_packed(msg: Message) -> bool:
    return wire_packed.GENERATOR_BASE in msg.content.config_records[wire.CONFIG]


def test_sites_and_server_agree_on_the_grown_shapes(tmp_path: Path) -> None:
    run, grid = federate(tmp_path)
    summary = load_summary(run.path)
    assert summary["status"] == "completed"
    sizes = summary["generator_sizes"]
    assert len(sizes) == 3
    widths = [(s["c1"], s["c2"]) for s in sizes]
    assert widths[-1] > (16, 8), "the generator never grew"  # hidden 8: (16, 8) at the start
    rounds = run.read_jsonl("rounds.jsonl")
    assert all(r["accepted"] and not r["failures"] for r in rounds)
    for task in (1, 2):  # what the server sent in the task has the grown shapes ...
        sent = train_messages(grid, task)
        fc = {generator_arrays(m)["fc.weight"].shape for m in sent}
        c1, _ = widths[task - 1]
        assert fc == {(c1 * 2 * 2, 8 + 10)}, fc  # digits 8x8: (c1 x 2 x 2, z + classes)
        assert len(train_messages(grid, task, packed=True)) == 2  # round 2: both sites hold it
    # ... and the final models too
    final = torch.load(run.path / "final_models.pt", weights_only=True)["generator"]
    assert final["up.weight"].shape[:2] == widths[-1]


def test_what_task_1_reserved_is_frozen_even_against_a_hostile_site(tmp_path: Path) -> None:
    def shift_everything(sent: Message, reply: Message) -> Message:
        """Node HOSTILE adds 0.5 to every generator value it sends, reserved ones too."""
        if sent.metadata.dst_node_id != HOSTILE or "generator" not in reply.content.array_records:
            return reply
        record = reply.content.array_records["generator"]
        for key in list(record):
            record[key] = wire.Array(record[key].numpy() + np.float32(0.5))
        return reply

    # plain FedAvg, no bounds: only the masked aggregation stands between the site and
    # the reserved weights
    unbounded = {"fed.aggregation": "fedavg", "robust.update-clip": 0.0, "robust.weight-cap": 0.0}
    run, grid = federate(tmp_path, hook=shift_everything, nodes=3, **unbounded)
    after_task_1 = generator_arrays(train_messages(grid, 1)[0])  # consolidated, grown
    final = torch.load(run.path / "final_models.pt", weights_only=True)["generator"]
    checked = 0
    for name in ("fc.weight", "up.weight"):
        unit = "fc" if name.startswith("fc") else "up"
        used = masks.task_bit(torch.from_numpy(after_task_1[f"usage_{unit}"]), 0).bool()
        before = torch.from_numpy(after_task_1[name])
        now = final[name][tuple(slice(0, s) for s in before.shape)]
        rows = used.repeat_interleave(4) if unit == "fc" else None  # fc: 2x2 per channel
        if unit == "fc":
            assert torch.equal(now[rows], before[rows]), "a reserved fc weight moved"
            checked += int(rows.sum())
        else:
            both = masks.task_bit(torch.from_numpy(after_task_1["usage_fc"]), 0).bool()
            sel = both.view(-1, 1) & used.view(1, -1)
            assert torch.equal(now[sel], before[sel]), "a reserved up weight moved"
            checked += int(sel.sum())
    assert checked > 0
    head = torch.from_numpy(after_task_1["heads.0.weight"])  # task 1's own output head
    assert torch.equal(final["heads.0.weight"][: head.shape[0]], head)
    # the hostile site was answered every round (bounded, not dropped)
    rounds = run.read_jsonl("rounds.jsonl")
    assert all(any(s["node_id"] == HOSTILE for s in r["sites"]) for r in rounds)


def test_reserved_weights_and_mask_state_are_not_in_a_site_s_update(tmp_path: Path) -> None:
    seen: list[tuple[Message, dict[str, np.ndarray]]] = []

    def spy(sent: Message, reply: Message) -> Message:
        if sent.metadata.message_type == "train":  # what the site sent, as it sent it
            seen.append((sent, {k: v.copy() for k, v in generator_arrays(reply).items()}))
        return reply

    run, _ = federate(tmp_path, hook=spy)
    checked = 0
    whole: dict[int, DGMGenerator] = {}  # task -> its generator as sent whole
    for sent, up in seen:
        task = int(sent.content.config_records[wire.CONFIG]["task"])
        if not is_packed(sent):
            whole[task] = server_generator(sent)
        gen = whole[task]  # a packed instruction: the frozen elements are the task's
        frozen = gen.frozen_elements()
        assert not any(k.startswith("usage_") or k == "class_task" for k in up)
        for name, value in gen.state_dict().items():
            f = frozen.get(name)
            if f is None:
                assert up[name].shape == tuple(value.shape)
            elif bool(f.all()):
                assert name not in up
            else:  # only the free elements travel
                assert up[name].shape == (int((~f).sum()),)
                checked += int(f.sum())
    assert checked > 0, "no reserved weight was ever left out"
    rounds = run.read_jsonl("rounds.jsonl")
    sent_bytes = [s["metrics"]["bytes-up"] for r in rounds for s in r["sites"]]
    full = sum(t.numel() * 4 for t in whole[max(whole)].state_dict().values())
    solver = sum(
        a.nbytes for k, a in wire.numpy_arrays(seen[-1][0].content.array_records["solver"]).items()
    )
    last_task = sent_bytes[-2:]  # the last task's round: most of the generator is reserved
    assert max(last_task) < solver + 0.9 * full, (last_task, solver, full)


def test_within_a_task_only_the_free_generator_elements_travel_down(tmp_path: Path) -> None:
    """Masked transfer down: after a site has the task's generator whole, the server sends
    it only the free elements (and no mask state); the site fills in the rest itself."""
    run, grid = federate(tmp_path, **{"fed.rounds-per-task": 3})
    assert load_summary(run.path)["status"] == "completed"
    for task in (1, 2):
        whole, packed = train_messages(grid, task), train_messages(grid, task, packed=True)
        assert len(whole) == 2 and len(packed) == 4  # round 1 whole, rounds 2-3 packed
        gen = server_generator(whole[0])
        frozen = gen.frozen_elements()
        for msg in packed:
            sent = generator_arrays(msg)
            assert not any(k.startswith("usage_") or k == "class_task" for k in sent)
            for name, f in frozen.items():
                assert name not in sent if bool(f.all()) else sent[name].size == int((~f).sum())
    rounds = run.read_jsonl("rounds.jsonl")
    assert all(r["accepted"] and not r["failures"] for r in rounds)
    down = {
        (r["round"], s["node_id"]): s["metrics"]["bytes-down"] for r in rounds for s in r["sites"]
    }
    for r in (8, 9):  # task 3, rounds 2 and 3 against its round 1 (round 7, replay aside)
        for node in {n for (_, n) in down}:
            assert down[(r, node)] < down[(7, node)], (r, node, down)


def test_a_site_that_lost_its_generator_is_refused_the_packed_one_then_sent_it_whole(
    tmp_path: Path, monkeypatch
) -> None:
    sites = tmp_path / "sites"
    monkeypatch.setenv("FEDREPLAY_SITE_DIR", str(sites))

    def forget(sent: Message, reply: Message) -> Message:
        """Every site loses its stored generator right after answering round 1."""
        if int(sent.content.config_records[wire.CONFIG]["server-round"]) == 1:
            for f in sites.rglob("generator_base.pt"):
                f.unlink()
        return reply

    run, grid = federate(tmp_path, hook=forget, **{"fed.rounds-per-task": 3, "tasks.num-tasks": 1})
    rounds = run.read_jsonl("rounds.jsonl")
    assert [r["round"] for r in rounds] == [1, 2, 3]
    assert rounds[0]["accepted"] and not rounds[0]["failures"]
    reasons = list(rounds[1]["failures"].values())
    assert len(reasons) == 2 and all("no whole generator" in r for r in reasons), reasons
    assert rounds[2]["accepted"] and not rounds[2]["failures"]  # sent whole again
    assert [is_packed(m) for m in train_messages(grid, 0) + train_messages(grid, 0, packed=True)]
    third = [
        m for m in grid.sent if int(m.content.config_records[wire.CONFIG]["server-round"]) == 3
    ]
    assert len(third) == 2 and not any(is_packed(m) for m in third)
    assert load_summary(run.path)["status"] == "completed"


def test_a_site_sending_its_whole_generator_is_rejected_with_the_reason(tmp_path: Path) -> None:
    def unpacked(sent: Message, reply: Message) -> Message:
        if sent.metadata.dst_node_id != HOSTILE or "generator" not in reply.content.array_records:
            return reply
        record = reply.content.array_records["generator"]
        for key, value in generator_arrays(sent).items():  # the whole server state back
            record[f"generator.{key}"] = wire.Array(value)
        return reply

    run, _ = federate(tmp_path, hook=unpacked, nodes=3)
    rounds = run.read_jsonl("rounds.jsonl")
    reasons = [r["failures"].get(str(HOSTILE), "") for r in rounds]
    assert all(reason.startswith("rejected: packed") for reason in reasons), reasons
    assert load_summary(run.path)["status"] == "completed"  # the honest sites carried on


def test_the_egress_audit_passes_a_dgm_run_with_grown_and_packed_shapes(
    tmp_path: Path, monkeypatch
) -> None:
    from common import egress
    from common.audit.cli import main as audit_main

    sites = tmp_path / "sites"
    monkeypatch.setenv(egress.SITE_DIR_ENV, str(sites))
    run, _ = federate(tmp_path)
    assert audit_main(["egress", str(run.path), "--sites-dir", str(sites)]) == 0
    summary = load_summary(run.path)
    assert len(summary["generator_upload_shapes"]) == 3


def test_dgm_under_sample_level_dp_spends_and_reports_budget(tmp_path: Path, monkeypatch) -> None:
    """The discriminator trains under DP-SGD; the masked generator is post-processing."""
    monkeypatch.setenv("FEDREPLAY_SITE_DIR", str(tmp_path / "sites"))
    monkeypatch.setenv("FEDREPLAY_SERVER_DIR", str(tmp_path / "server"))
    dp = {"dp.enabled": True, "dp.min-records": 0, "dp.delta": 1e-5, "dp.target-epsilon": 8.0}
    run, _ = federate(tmp_path, **{**dp, "tasks.num-tasks": 2})
    summary = load_summary(run.path)
    assert summary["status"] == "completed" and len(summary["generator_sizes"]) == 2
    rounds = run.read_jsonl("rounds.jsonl")
    eps = [s["metrics"]["dp-epsilon"] for r in rounds for s in r["sites"]]
    assert len(eps) == 2 * len(rounds) and all(0 < e <= 8.0 + 1e-6 for e in eps)


def test_the_discriminator_as_solver_travels_as_the_solver_and_is_averaged(
    tmp_path: Path, monkeypatch
) -> None:
    """solver.arch='discriminator': the discriminator is the solver part of every train
    message and reply (validated, averaged, audited like any solver); no site keeps a
    critic file of its own."""
    from common import egress
    from common.audit.cli import main as audit_main

    sites = tmp_path / "sites"
    monkeypatch.setenv(egress.SITE_DIR_ENV, str(sites))
    monkeypatch.setenv("FEDREPLAY_SITE_DIR", str(sites))
    run, grid = federate(tmp_path, **{"solver.arch": "discriminator", "solver.hidden": 8})
    assert load_summary(run.path)["status"] == "completed"
    sent = wire.scholar_of(train_messages(grid, 1)[0].content)
    solver_keys = {k for k in sent if k.startswith("solver.")}
    assert "solver.discriminator.aux.weight" in solver_keys
    assert "solver.discriminator.source.weight" in solver_keys, "the whole critic travels"
    assert not list(sites.rglob("critic.pt")), "nothing of the critic stays private"
    assert audit_main(["egress", str(run.path), "--sites-dir", str(sites)]) == 0
