"""Single-site continual-learning runner: ``fedreplay-single --config simulations/x.toml``.

Same configuration schema as the federated app (``[tool.flwr.app.config]`` defaults plus
an override file and/or ``--set "key=value ..."``). One site learns the task stream with
``cfg.method`` and ``cfg.train.iterations`` updates per task; after each task it is
evaluated on the test data of every task seen (single head). The run folder gets
``config.json``, ``tasks.jsonl``, ``summary.json`` and PNG plots; the folder's path is the
last line printed.
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from collections.abc import Sequence

import torch
from torch import nn

from common.config import ExperimentConfig, load_config, parse_overrides, read_overrides
from common.data.holdout import withhold
from common.data.streams import build_stream
from common.device import seed_everything, select_device
from common.evaluator import train_evaluator
from common.metrics import AccuracyMatrix, evaluate_tasks, per_task_generator_quality
from common.privacy.composition import LIFETIME, scope
from common.privacy.ledger import BudgetExceeded, PrivacyStateError
from common.privacy.session import PrivacySession
from common.results import RunFolder, build_summary, summary_line
from common.run_artifacts import save_final_artifacts
from common.training.learner import Learner, ReplaySource, real_data_for, replay_for

log = logging.getLogger("fedreplay")


def run_single_site(
    cfg: ExperimentConfig, *, progress: bool = True, site_id: str = "single"
) -> RunFolder:
    """Learn the whole stream at one site; returns the finished run folder.

    With ``dp.enabled`` the site trains with DP-SGD through the same private session as a
    federated site (one round per task), spending from its lifetime ledger ``site_id``."""
    start = time.perf_counter()
    device = select_device(cfg.device)
    seed_everything(cfg.seed)
    # The audit holdout (if any) is never trained on; test splits are untouched.
    stream, _ = withhold(build_stream(cfg), fraction=cfg.audit.holdout, seed=cfg.seed)
    run = RunFolder.create(cfg.output_dir, cfg.experiment)
    run.save_config(cfg)
    log.info(
        "run folder %s | %s on %s, %d tasks, device %s",
        run.path,
        cfg.method,
        stream.dataset,
        len(stream),
        device,
    )
    evaluator: nn.Module | None = None
    if cfg.uses_generator and cfg.eval.generator_quality:
        evaluator = train_evaluator(stream, device=device, seed=cfg.seed)

    learner = Learner(cfg, shape=stream.shape, num_classes=stream.num_classes, device=device)
    session = PrivacySession(cfg, site_id=site_id, tasks=stream.tasks) if cfg.dp.enabled else None
    privacy: dict[str, float] = {}
    matrix = AccuracyMatrix(len(stream))
    previous: ReplaySource | None = None
    quality: list[list[float]] = []
    for t, task in enumerate(stream.tasks):
        seen = stream.classes_seen(t)
        replay = replay_for(
            cfg, stream.tasks, t, previous, rng=torch.Generator().manual_seed(cfg.seed + 7919 * t)
        )
        prepared = None
        if session is not None:  # spent before any step (write-ahead)
            prepared = session.begin_round(
                run_key=run.path.name, task=t, iterations=cfg.train.iterations, server_round=t + 1
            )
            if prepared is None:
                raise ValueError(
                    f"task {t + 1} has fewer than dp.min-records={cfg.dp.min_records} records: "
                    "a single site cannot sit a task out; lower dp.min-records"
                )
        metrics = learner.train(
            real_data_for(cfg.method, stream.tasks, t),
            replay=replay,
            num_tasks_seen=t + 1,
            classes_seen=seen,
            iterations=cfg.train.iterations,
            seed=cfg.seed + t,
            desc=f"task {t + 1}/{len(stream)} ({task.name})",
            progress=progress,
            dp=prepared.plan if prepared is not None else None,
        )
        if prepared is not None:
            prepared.check()
            privacy = prepared.metrics
            metrics.update({k.replace("-", "_"): v for k, v in privacy.items()})
        accs = evaluate_tasks(learner.solver, stream.tasks, t, device=device)
        matrix.record(t, accs)
        record = {
            "task": t,
            "name": task.name,
            "accuracies": accs,
            "average_accuracy": matrix.average_accuracy(t),
            **metrics,
        }
        if learner.generator is not None:
            previous = ReplaySource.from_scholar(learner.scholar, seen)
            if evaluator is not None:
                q = per_task_generator_quality(
                    learner.generator.sample,
                    evaluator,
                    stream.tasks,
                    t,
                    samples_per_class=cfg.eval.samples_per_class,
                    device=device,
                )
                quality.append(q)
                record["generator_quality"] = q
        run.append_jsonl("tasks.jsonl", record)
        log.info(
            "after task %d/%d: accuracies %s, average %.1f%%",
            t + 1,
            len(stream),
            " ".join(f"{a:.1%}" for a in accs),
            100 * matrix.average_accuracy(t),
        )

    save_final_artifacts(
        run,
        matrix=matrix,
        stream=stream,
        method=cfg.method,
        solver=learner.solver,
        generator=learner.generator,
        where="single site",
    )
    extra: dict = {"num_sites": 1, "seed": cfg.seed, "device": str(device)}
    if session is not None:
        extra.update(
            dp_scope=scope(session.composition),
            dp_composition=session.composition,
            dp_accountant=cfg.dp.accountant,
            dp_delta=cfg.dp.delta,
            dp_epsilon=privacy["dp-epsilon"],  # lifetime of the site after the run
            dp_epsilon_run=privacy["dp-run-epsilon"],  # this run's own share
            dp_epsilon_is=LIFETIME,
            dp_target_epsilon=cfg.dp.target_epsilon,
            dp_site_id=site_id,
        )
    if quality:
        extra["generator_quality"] = quality[-1]
    summary = build_summary(
        matrix=matrix,
        wall_time_s=time.perf_counter() - start,
        method=cfg.method,
        dataset=stream.dataset,
        scenario=stream.scenario,
        experiment=cfg.experiment,
        extra=extra,
    )
    run.write_summary(summary)
    print(summary_line(summary))
    return run


def config_from_args(config: Sequence[str], overrides: str) -> ExperimentConfig:
    merged: dict = {}
    for path in config:
        merged.update(read_overrides(path))
    if overrides:
        merged.update(parse_overrides(overrides))
    return load_config(merged)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="fedreplay-single", description=__doc__.split("\n")[0])
    parser.add_argument(
        "--config",
        action="append",
        default=[],
        help="override file(s) in TOML with [tool.flwr.app.config] keys",
    )
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        dest="overrides",
        help="inline overrides (repeatable), e.g. --set \"method='none' train.iterations=100\"",
    )
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")
    parser.add_argument(
        "--site-id",
        default="single",
        help="the site's stable id: its lifetime privacy ledger under dp.enabled",
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    try:
        cfg = config_from_args(args.config, " ".join(args.overrides))
    except ValueError as exc:
        print(f"fedreplay-single: {exc}", file=sys.stderr)
        return 2
    try:
        run = run_single_site(
            cfg, progress=not args.no_progress and sys.stderr.isatty(), site_id=args.site_id
        )
    except (BudgetExceeded, PrivacyStateError) as exc:
        print(f"fedreplay-single: {exc}", file=sys.stderr)
        return 3
    print(run.path)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
