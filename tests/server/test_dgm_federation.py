"""DGM in federation through the ServerApp and ClientApp logic (in-process grid): the server
binarises the averaged masks and grows the generator at each task boundary, every site
takes the grown shapes, and what finished tasks reserved is frozen everywhere, even
against a site that moves it."""

from pathlib import Path

import numpy as np
import torch
from flwr.app import Message

from client.client_app import app as client_app
from common import wire
from common.config import load_config
from common.models import masks
from common.results import load_summary
from server.federation import FederatedRun
from server.inprocess import InProcessGrid

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
    "eval.generator-quality": False,
}
HOSTILE = 1001


def federate(tmp_path: Path, *, hook=None, nodes: int = 2, **overrides):
    cfg = load_config({**DGM, "output-dir": str(tmp_path), "fed.num-sites": nodes, **overrides})
    grid = InProcessGrid(client_app, cfg.to_run_config(), num_nodes=nodes, reply_hook=hook)
    run = FederatedRun(cfg).run(grid)
    return run, grid


def generator_arrays(msg: Message) -> dict[str, np.ndarray]:
    record = msg.content.array_records[wire.SCHOLAR]
    return {k[10:]: v.numpy() for k, v in record.items() if k.startswith("generator.")}


def train_messages(grid: InProcessGrid, task: int) -> list[Message]:
    return [
        m
        for m in grid.sent
        if m.metadata.message_type == "train"
        and int(m.content.config_records[wire.CONFIG]["task"]) == task
    ]


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
    # ... and the final models too
    final = torch.load(run.path / "final_models.pt", weights_only=True)["generator"]
    assert final["up.weight"].shape[:2] == widths[-1]


def test_what_task_1_reserved_is_frozen_even_against_a_hostile_site(tmp_path: Path) -> None:
    def shift_everything(sent: Message, reply: Message) -> Message:
        """Node HOSTILE adds 0.5 to every generator value it sends, reserved ones too."""
        if sent.metadata.dst_node_id != HOSTILE or wire.SCHOLAR not in reply.content.array_records:
            return reply
        record = reply.content.array_records[wire.SCHOLAR]
        for key in [k for k in record if k.startswith("generator.")]:
            record[key] = wire.Array(record[key].numpy() + np.float32(0.5))
        return reply

    # plain FedAvg, no bounds: only the masked aggregation stands between the site and
    # the reserved weights
    unbounded = {"fed.aggregation": "fedavg", "fed.update-clip": 0.0, "fed.weight-cap": 0.0}
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
