"""Probe: a private generator from one noisy release per task (DP-MERF, Harder et al. 2021).

Not a platform feature: a measurement of what a different private generator could give the
DP benchmark (issue 12), on the benchmark's own federation (split-MNIST, 5 sites,
Dirichlet 0.5, the audit holdout cut off, each site's share as the sites load it).

Per task, every site releases once the per-class sums of random Fourier features of its
records, psi(x) = [cos(Wx), sin(Wx), 1] / norm (||psi|| = 1, so adding or removing one
record moves the released vector by at most 1: L2 sensitivity 1; the last coordinate
counts the class), plus Gaussian noise N(0, sigma^2 I) from a secret generator, with sigma
the smallest that keeps one release at (epsilon, delta) under the RDP accountant. Records
of different tasks are disjoint, so a record's epsilon is its task's (per-task
composition). The server sums the sites' releases (noise std sigma sqrt(sites)) and,
as post-processing, trains one conditional generator per task to match each class's
noisy mean embedding (MMD with the random-feature kernel); a solver that never sees a
record learns, after each task, every class so far from the generators' samples (per-task
replay). Prints the accuracy matrix on the real test data.

    FEDREPLAY_DATA_ROOT=/path/to/data python docs/notebook/probes/probe_mean_embedding.py \
        --epsilon 1 --steps 3000 --bandwidth 6

Measured on 2026-12-03 (docs/notebook/results.md, "Probe: a private generator from one noisy
release per task"). The kernel bandwidth is an argument: the measured 6 was read off the
median distance of site 0's records (a choice on private data, outside the budget); 7 is
the data-free rule sqrt(784) / 4.
"""

from __future__ import annotations

import argparse
import json
import math
import time

import torch
from torch import nn

from common.config import load_config
from common.config.loading import read_overrides
from common.config.sections import SolverConfig
from common.data.types import Split
from common.evaluator import train_fresh_solver
from common.metrics import evaluate_tasks
from common.models.embedding import RandomFeatures
from common.privacy.calibrate import noise_for_budget
from common.privacy.embedding import release
from common.sitedata import SiteIdentity, site_records

CONFIG = "simulations/fed_mnist_dgr_dp_syn_eps1.toml"


class Generator(nn.Module):
    def __init__(self, classes: int, shape: tuple[int, ...], latent: int, hidden: int) -> None:
        super().__init__()
        self.shape, self.latent, self.classes = shape, latent, classes
        self.net = nn.Sequential(
            nn.Linear(latent + classes, hidden),
            nn.ReLU(),
            nn.Linear(hidden, hidden),
            nn.ReLU(),
            nn.Linear(hidden, math.prod(shape)),
            nn.Sigmoid(),
        )

    def forward(self, labels: torch.Tensor) -> torch.Tensor:  # (B,) -> (B, *shape)
        z = torch.randn(labels.shape[0], self.latent)
        onehot = nn.functional.one_hot(labels, self.classes).float()
        return self.net(torch.cat([z, onehot], 1)).view(-1, *self.shape)


def train_generator(
    targets: dict[int, torch.Tensor],
    phi: RandomFeatures,
    args: argparse.Namespace,
    shape: tuple[int, int, int],
    classes: int,
) -> Generator:
    gen = Generator(classes, shape, args.latent, args.hidden)
    opt = torch.optim.Adam(gen.parameters(), lr=args.lr)
    labels = list(targets)
    for _ in range(args.steps):
        loss = torch.zeros(())
        for y in labels:
            x = gen(torch.full((args.batch,), y))
            loss = loss + (phi(x).mean(0) - targets[y]).square().sum()
        opt.zero_grad()
        loss.backward()
        opt.step()
    return gen


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--epsilon", type=float, default=1.0)
    p.add_argument("--delta", type=float, default=1e-5)
    p.add_argument("--pairs", type=int, default=2000, help="random Fourier feature pairs")
    p.add_argument("--bandwidth", type=float, default=5.0)
    p.add_argument("--steps", type=int, default=1500)
    p.add_argument("--batch", type=int, default=100, help="samples per class per step")
    p.add_argument("--latent", type=int, default=10)
    p.add_argument("--hidden", type=int, default=200)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--per-class", type=int, default=3000, help="synthetic samples per class")
    p.add_argument("--solver-hidden", type=int, default=100)
    p.add_argument("--solver-iterations", type=int, default=2000)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default="")
    args = p.parse_args()
    torch.manual_seed(args.seed)
    started = time.perf_counter()
    cfg = load_config(read_overrides(CONFIG))
    sites = [
        site_records(cfg, SiteIdentity(s, cfg.fed.num_sites)) for s in range(cfg.fed.num_sites)
    ]
    stream = sites[0]
    shape, classes = stream.shape, stream.num_classes
    # the platform's feature map (common.models.embedding), W drawn from the seed as before
    phi = RandomFeatures(math.prod(shape), args.pairs, args.bandwidth, seed=args.seed)
    # one Gaussian release (q = 1, one step) per task: the task's whole budget
    plan = [(1.0, 1)]
    sigma = (
        noise_for_budget(plan, target_epsilon=args.epsilon, delta=args.delta, accountant="rdp")
        if args.epsilon > 0
        else 0.0
    )
    from common.data.streams import build_stream  # the real test data of every task

    tests = build_stream(cfg).tasks
    generators: list[tuple[Generator, list[int]]] = []
    rows = []
    for t, task in enumerate(stream.tasks):
        total = {y: torch.zeros(phi.size) for y in task.classes}
        for site in sites:
            split = site.tasks[t].train
            # the platform's release (common.privacy.embedding): per-class sums, + secret
            # N(0, sigma^2) noise: one Gaussian release per task, the task's whole budget
            released = release(
                phi, split.x, split.y, task.classes, sigma=sigma if sigma > 0 else None
            )
            for row, y in enumerate(task.classes):
                total[y] += released[row]
        targets = {}
        for y, s in total.items():
            count = max(float(s[-1]) / phi.scale, 1.0)  # the noisy record count
            targets[y] = s / count
            targets[y][-1] = phi.scale  # the constant feature's mean is known
        gen = train_generator(targets, phi, args, shape, classes)
        generators.append((gen, list(task.classes)))
        with torch.no_grad():
            xs, ys = [], []
            for g, cls in generators:
                for y in cls:
                    xs.append(g(torch.full((args.per_class,), y)))
                    ys.append(torch.full((args.per_class,), y))
        solver = train_fresh_solver(
            SolverConfig("mlp", args.solver_hidden),
            shape,
            classes,
            Split.from_tensors(torch.cat(xs), torch.cat(ys)),
            iterations=args.solver_iterations,
            batch_size=256,
            lr=1e-3,
            seed=args.seed,
            device=torch.device("cpu"),
        )
        accs = evaluate_tasks(solver, tests, t, device=torch.device("cpu"))
        rows.append(accs)
        shown = " / ".join(f"{a:.1%}" for a in accs)
        print(f"after task {t + 1}: {shown} ({time.perf_counter() - started:.0f} s)", flush=True)
    final = sum(rows[-1]) / len(rows[-1])
    result = {
        "epsilon": args.epsilon,
        "delta": args.delta,
        "sigma": sigma,
        "final_average_accuracy": final,
        "accuracy_matrix": rows,
        "wall_time_s": time.perf_counter() - started,
        "args": vars(args),
    }
    print(json.dumps(result))
    if args.out:
        with open(args.out, "w", encoding="utf-8") as f:
            json.dump(result, f, indent=1)


if __name__ == "__main__":
    main()
