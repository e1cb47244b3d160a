"""What can a finished run's replay mixture teach? Train on its samples, test on real data.

Loads a run folder's ``final_ensemble.pt`` (ensemble or per-task replay) and
``final_models.pt``, draws ``--per-class`` samples of every class from the mixture as the
sites would replay it (per-class weights, ``--retries`` redraws judged by the final solver,
labels from that solver), trains a fresh classifier on them alone and prints its real test
accuracy per task. ``--arch``/``--hidden`` pick the classifier; ``--temperature`` scales
the generators' latent draws.

    FEDREPLAY_DATA_ROOT=/path/to/data python docs/notebook/probes/probe_ensemble_usefulness.py RUN \
        --retries 4 --arch mlp --hidden 100
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

from common.audit.run_folder import load_run_config
from common.config.sections import SolverConfig
from common.data.streams import build_stream
from common.data.types import Split
from common.evaluator import train_fresh_solver
from common.metrics import evaluate_tasks
from common.models import build_solver
from common.models.factory import generator_from_state
from common.models.generator import Generator
from common.replay import GenerativeReplay

CPU = torch.device("cpu")


def scaled_sampler(temperature: float):  # type: ignore[no-untyped-def]
    """Generator.sample with z ~ N(0, temperature^2 I)."""

    def sample(self: Generator, labels: torch.Tensor, *, generator=None) -> torch.Tensor:  # type: ignore[no-untyped-def]
        z = torch.randn(labels.shape[0], self.latent_dim, generator=generator) * temperature
        return self(z, labels)

    return sample


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("run", type=Path)
    p.add_argument("--retries", type=int, default=4)
    p.add_argument("--labels", default="hard", choices=["hard", "condition"])
    p.add_argument("--per-class", type=int, default=1000)
    p.add_argument("--iterations", type=int, default=2000)
    p.add_argument("--arch", default="mlp", choices=["mlp", "cnn"])
    p.add_argument("--hidden", type=int, default=100)
    p.add_argument("--temperature", type=float, default=1.0)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args()
    torch.set_num_threads(1)
    Generator.sample = scaled_sampler(args.temperature)  # type: ignore[method-assign]
    cfg = load_run_config(args.run)
    stream = build_stream(cfg)
    ensemble = torch.load(args.run / "final_ensemble.pt", weights_only=True)
    gens = []
    for state in ensemble["generators"]:
        # takes the state's shapes: a grown DGM generator loads too
        gens.append(generator_from_state(cfg, stream.shape, stream.num_classes, state).eval())
    solver = build_solver(cfg, stream.shape, stream.num_classes)
    solver.load_state_dict(torch.load(args.run / "final_models.pt", weights_only=True)["solver"])
    solver.eval()
    last = len(stream) - 1
    replay = GenerativeReplay(
        gens,
        solver,
        stream.classes_seen(last),
        weights=ensemble["weights"],
        generator_classes=ensemble.get("generator_classes", []),
        retries=args.retries,
        labels=args.labels,
        rng=torch.Generator().manual_seed(args.seed),
    )
    batch = replay.sample(args.per_class * stream.num_classes)
    model = train_fresh_solver(
        SolverConfig(args.arch, args.hidden),
        stream.shape,
        stream.num_classes,
        Split.from_tensors(batch.x, batch.y),
        iterations=args.iterations,
        batch_size=128,
        lr=1e-3,
        seed=args.seed,
        device=CPU,
    )
    final = evaluate_tasks(solver, stream.tasks, last, device=CPU)
    accs = evaluate_tasks(model, stream.tasks, last, device=CPU)
    print("the run's final solver:", " / ".join(f"{a:.1%}" for a in final))
    print(
        f"{args.arch} {args.hidden} on {args.per_class} samples per class "
        f"(retries {args.retries}, labels {args.labels}, temperature {args.temperature}): "
        + " / ".join(f"{a:.1%}" for a in accs)
        + f", mean {sum(accs) / len(accs):.1%}"
    )


if __name__ == "__main__":
    main()
