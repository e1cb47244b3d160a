"""What does each of a finished run's generators draw for each class, read two ways?

Loads a run folder's ``final_ensemble.pt`` (ensemble or per-task replay) and
``final_models.pt``, draws ``--per-class`` samples of every class from every generator and
prints, per generator and class, how a reference classifier trained on real data reads
them (its most frequent answer and that answer's share) and how often the run's own final
solver reads them as the class they were drawn for. A class the run's solver recognises
but the reference reads as another class is replay that teaches the solver a wrong
boundary (docs/notebook/results.md, "Aggregation, replay weighting ... under DP").

    FEDREPLAY_DATA_ROOT=/path/to/data python docs/notebook/probes/probe_generator_classes.py RUN
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

from common.audit.run_folder import load_run_config
from common.data.streams import build_stream
from common.evaluator import train_evaluator
from common.models import build_solver
from common.models.factory import generator_from_state

CPU = torch.device("cpu")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("run", type=Path)
    p.add_argument("--per-class", type=int, default=200)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args()
    torch.set_num_threads(1)
    cfg = load_run_config(args.run)
    stream = build_stream(cfg)
    ensemble = torch.load(args.run / "final_ensemble.pt", weights_only=True)
    solver = build_solver(cfg, stream.shape, stream.num_classes)
    solver.load_state_dict(torch.load(args.run / "final_models.pt", weights_only=True)["solver"])
    solver.eval()
    reference = train_evaluator(stream, device=CPU, seed=cfg.seed).eval()
    rng = torch.Generator().manual_seed(args.seed)
    classes = stream.classes_seen(len(stream) - 1)
    print(f"{args.run}: {len(ensemble['generators'])} generators, {args.per_class} samples each")
    print("generator  class  reference reads (share)  run's solver reads the class")
    with torch.no_grad():
        for k, state in enumerate(ensemble["generators"]):
            gen = generator_from_state(cfg, stream.shape, stream.num_classes, state).eval()
            for c in classes:
                x = gen.sample(torch.full((args.per_class,), c), generator=rng)
                counts = torch.bincount(reference(x).argmax(1), minlength=stream.num_classes)
                top = int(counts.argmax())
                own = float((solver(x).argmax(1) == c).float().mean())
                share = float(counts[top]) / args.per_class
                flag = "  <- reads as another class" if top != c else ""
                print(f"{k:9d}  {c:5d}  {top:>15d} ({share:4.0%})  {own:28.0%}{flag}")


if __name__ == "__main__":
    main()
