"""Is a dataset's test split a fair source of audit non-members?

Trains a solver on a random subset of the training split and runs the loss attack twice,
with the same members: once against test records, once against training records the
solver never saw (both class-matched). Equal AUCs mean the test split is as good as a
holdout; a gap is a distribution shift the attack reads as membership (or its absence).
docs/privacy-audit.md ("The model audit") quotes this probe.

    FEDREPLAY_DATA_ROOT=/path/to/data \
        python docs/notebook/probes/probe_test_shift.py --dataset mnist
"""

from __future__ import annotations

import argparse

import numpy as np
import torch

from common.audit import loss_attack
from common.audit.models_audit import matched_members
from common.config import load_config
from common.data.streams import build_stream
from common.data.types import concat
from common.evaluator import train_fresh_solver


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--dataset", default="mnist")
    p.add_argument("--members", type=int, default=5000, help="training records of the solver")
    p.add_argument("--records", type=int, default=2000, help="attacked records per side")
    p.add_argument("--hidden", type=int, default=100)
    p.add_argument("--iterations", default="150,1500", help="comma-separated step counts")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args()
    cfg = load_config({"data.name": args.dataset, "solver.hidden": args.hidden})
    stream = build_stream(cfg)
    train = concat([t.train for t in stream.tasks])
    test = concat([t.test for t in stream.tasks])
    rng = np.random.default_rng(args.seed)
    order = torch.from_numpy(rng.permutation(len(train)))
    members = train.subset(torch.sort(order[: args.members]).values)
    unseen = train.subset(torch.sort(order[args.members :]).values)
    device = torch.device("cpu")
    print(f"{args.dataset}: solver MLP {args.hidden}-{args.hidden} on {args.members} records")
    print("| steps (batch 128) | loss-attack AUC vs test | vs unseen training records |")
    print("|---|---|---|")
    for steps in (int(s) for s in args.iterations.split(",")):
        model = train_fresh_solver(
            cfg.solver,
            stream.shape,
            stream.num_classes,
            members,
            iterations=steps,
            batch_size=128,
            lr=1e-3,
            seed=args.seed,
            device=device,
        )
        aucs = []
        for pool in (test, unseen):
            m, n = matched_members(members, pool, args.records, np.random.default_rng(1))
            aucs.append(loss_attack(model, m, n, device=device).auc)
        print(f"| {steps} | {aucs[0]:.3f} | {aucs[1]:.3f} |")


if __name__ == "__main__":
    main()
