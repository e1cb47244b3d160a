"""How useful is a finished run's generator as a replay source?

Generator quality (``eval.generator-quality``) asks whether a classifier trained on real
data recognises generated samples as their conditioning label. It does not see diversity:
a generator that draws one good "1" a thousand times scores 100%. Replay needs more: the
solver must learn from the samples a boundary that holds on real data. This probe measures
that directly, per run folder (``final_models.pt`` + ``config.json``):

- train on synthetic, test on real (Shmelkov et al. 2018, "GAN-train"): an MLP trained
  only on generated samples of every class, tested per task on the real test split, next
  to the same MLP trained on as many real training records (drawn at random);
- diversity: mean pairwise pixel distance of generated samples within a class, divided by
  the same for real training records of that class (1 = as varied as the data).

    FEDREPLAY_DATA_ROOT=/path/to/data \
        python docs/notebook/probes/probe_replay_usefulness.py RUN [RUN ...]
"""

from __future__ import annotations

import argparse
import json
from dataclasses import dataclass
from pathlib import Path

import torch

from common.audit.run_folder import load_run_config
from common.config import ExperimentConfig
from common.data.streams import build_stream
from common.data.types import Split, TaskStream, concat
from common.evaluator import train_fresh_solver
from common.metrics import evaluate_tasks
from common.models import build_generator


@dataclass
class Row:
    source: str
    accuracy: float  # mean over tasks of the real test accuracy
    per_task: list[float]
    diversity: float


def spread(x: torch.Tensor) -> float:
    """Mean pairwise Euclidean distance of the rows of x (n, ...)."""
    return float(torch.pdist(x.flatten(1)).mean())


def train_and_test(
    cfg: ExperimentConfig, stream: TaskStream, data: Split, *, iterations: int, seed: int
) -> list[float]:
    """The run's solver architecture trained on ``data`` alone, tested on every task."""
    model = train_fresh_solver(
        cfg.solver,
        stream.shape,
        stream.num_classes,
        data,
        iterations=iterations,
        batch_size=128,
        lr=1e-3,
        seed=seed,
        device=torch.device("cpu"),
    )
    return evaluate_tasks(model, stream.tasks, len(stream) - 1, device=torch.device("cpu"))


def probe(
    run: Path,
    cfg: ExperimentConfig,
    stream: TaskStream,
    *,
    per_class: int,
    iterations: int,
    seed: int,
) -> Row:
    """The run's MLP trained on ``per_class`` samples per class of its final generator."""
    generator = build_generator(cfg, stream.shape, stream.num_classes)
    state = torch.load(run / "final_models.pt", map_location="cpu", weights_only=True)
    generator.load_state_dict(state["generator"])
    labels = torch.arange(stream.num_classes).repeat_interleave(per_class)
    fake = Split.from_tensors(
        generator.sample(labels, generator=torch.Generator().manual_seed(seed)), labels
    )
    train = concat([t.train for t in stream.tasks])
    train_x, train_y, fake_x = train.x, train.y, fake.x
    ratios = [
        spread(fake_x[labels == c][:1000]) / spread(train_x[train_y == c][:1000])
        for c in range(stream.num_classes)
    ]
    accs = train_and_test(cfg, stream, fake, iterations=iterations, seed=seed)
    mean = sum(accs) / len(accs)
    return Row(f"{run.name} ({cfg.generator.kind})", mean, accs, sum(ratios) / len(ratios))


def reference(
    cfg: ExperimentConfig, stream: TaskStream, *, count: int, iterations: int, seed: int
) -> Row:
    """The same MLP trained on ``count`` real training records drawn at random."""
    train = concat([t.train for t in stream.tasks])
    order = torch.randperm(len(train), generator=torch.Generator().manual_seed(seed))
    real = train.subset(torch.sort(order[:count]).values)
    accs = train_and_test(cfg, stream, real, iterations=iterations, seed=seed)
    return Row("real training records", sum(accs) / len(accs), accs, 1.0)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("runs", nargs="+", type=Path)
    p.add_argument("--per-class", type=int, default=1000, help="generated samples per class")
    p.add_argument("--iterations", type=int, default=2000, help="steps of the probe's solver")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", type=Path, default=None, help="also write the rows as JSON")
    args = p.parse_args()
    configs = [load_run_config(run) for run in args.runs]
    first = configs[0]
    for run, cfg in zip(args.runs, configs, strict=True):
        if (cfg.data.name, cfg.tasks, cfg.solver) != (first.data.name, first.tasks, first.solver):
            p.error(
                f"{run}: dataset, tasks or solver differ from {args.runs[0]}; the runs are "
                "compared against one real-data reference, so they must share them"
            )
    stream = build_stream(first)
    rows = [
        probe(
            run, cfg, stream, per_class=args.per_class, iterations=args.iterations, seed=args.seed
        )
        for run, cfg in zip(args.runs, configs, strict=True)
    ]
    # the real-data reference: same architecture, data and count, trained once
    count = args.per_class * stream.num_classes
    rows.append(reference(first, stream, count=count, iterations=args.iterations, seed=args.seed))
    print(f"solver trained on {args.per_class} records per class, {args.iterations} steps")
    print("| trained on | real test accuracy | per task | diversity (1 = data) |")
    print("|---|---|---|---|")
    for r in rows:
        per = " / ".join(f"{a:.1%}" for a in r.per_task)
        print(f"| {r.source} | {r.accuracy:.1%} | {per} | {r.diversity:.2f} |")
    if args.out:
        args.out.write_text(json.dumps([r.__dict__ for r in rows], indent=2))


if __name__ == "__main__":
    main()
