"""Where a finished class-incremental run's errors go, and what refitting its solver's head
on balanced generated samples would change (a post-hoc probe on a run folder).

    python simulations/probe_head_balance.py RUN_DIR [--steps 500] [--samples 1000]

Prints the confusion matrix of the final solver on every task's test split, the share of
errors that went to the last task's classes, then the accuracy per task after refitting
the head (common.training.balance.balance_head) on generated samples of every class from
the run's final generator, with the layers below frozen: on fakes only (what
``solver.balance-steps`` does), and on fakes plus the last task's real training data.
"""

from __future__ import annotations

import argparse
import copy
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from common.audit.run_folder import load_run_config
from common.data.streams import build_stream
from common.data.types import TaskStream
from common.metrics import evaluate_tasks
from common.models import build_solver, generator_from_state
from common.models.solver import split_head
from common.training.balance import balance_head, generated_features

CPU = torch.device("cpu")


def show(name: str, solver: torch.nn.Module, stream: TaskStream) -> None:
    accs = evaluate_tasks(solver, stream.tasks, len(stream) - 1, device=CPU)
    row = " / ".join(f"{100 * a:.1f}" for a in accs)
    print(f"{name}: {row}; average {100 * sum(accs) / len(accs):.2f}%")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("run_dir", type=Path)
    p.add_argument("--steps", type=int, default=500)
    p.add_argument("--samples", type=int, default=1000)
    args = p.parse_args()
    cfg = load_run_config(args.run_dir)
    stream = build_stream(cfg)
    k = stream.num_classes
    models = torch.load(args.run_dir / "final_models.pt", map_location="cpu", weights_only=True)
    solver = build_solver(cfg, stream.shape, k)
    solver.load_state_dict(models["solver"])
    solver.eval()
    generator = generator_from_state(cfg, stream.shape, k, models["generator"])
    with torch.no_grad():
        x = torch.cat([t.test.x for t in stream.tasks])
        y = torch.cat([t.test.y for t in stream.tasks])
        pred = solver(x).argmax(1)
    confusion = np.zeros((k, k), dtype=int)
    np.add.at(confusion, (y.numpy(), pred.numpy()), 1)
    print("confusion (rows: true class, columns: predicted)\n", confusion)
    last = list(stream.tasks[-1].classes)
    errors = confusion.sum() - np.trace(confusion)
    to_last = sum(confusion[c, last].sum() for c in range(k) if c not in last)
    print(
        f"errors: {errors}; to the last task's classes {last}: {to_last} ({to_last / errors:.0%})"
    )
    show("as trained", solver, stream)
    seen = stream.classes_seen(len(stream) - 1)
    fakes_only = copy.deepcopy(solver)
    balance_head(
        fakes_only,
        generator,
        seen,
        steps=args.steps,
        samples=args.samples,
        lr=cfg.train.lr,
        rng=torch.Generator().manual_seed(0),
    )
    show("head refitted on balanced fakes", fakes_only, stream)
    # the same with the last task's real data mixed in (a fifth of each batch)
    mixed = copy.deepcopy(solver)
    body, head = split_head(mixed)
    rng = torch.Generator().manual_seed(0)
    feats, labels = generated_features(body, generator, seen, samples=args.samples, rng=rng)
    real = stream.tasks[-1].train
    with torch.no_grad():
        real_feats = body(real.x)
    opt = torch.optim.Adam(head.parameters(), lr=cfg.train.lr)
    for _ in range(args.steps):
        i = torch.randint(len(labels), (256,), generator=rng)
        j = torch.randint(len(real.y), (51,), generator=rng)
        logits = head(torch.cat([feats[i], real_feats[j]]))
        loss = F.cross_entropy(logits, torch.cat([labels[i], real.y[j]]))
        opt.zero_grad()
        loss.backward()
        opt.step()
    show("head refitted on balanced fakes + the last task's real data", mixed, stream)


if __name__ == "__main__":
    main()
