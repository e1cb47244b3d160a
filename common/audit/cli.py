"""``fedreplay-audit``: privacy audits of a finished run folder.

fedreplay-audit egress RUN_DIR [--sites-dir D] [--run-id N] [--data-root R]
    Check the sites' egress logs against the protocol; writes ``egress_audit.json``
    into the run folder; exit status 1 on any deviation, 2 if no logs are found.
fedreplay-audit models RUN_DIR [--quick] [--shadows K] [--data-root R]
    Membership inference against the final models (loss attack and LiRA on the
    solver, GAN-Leaks on the generator) per site, plus the one-run canary bound on the
    solver and the generator if the run folder holds ``canaries.pt``, each with the largest
    bound it could reach; writes ``audit/`` (audit.json, audit.md, roc.png).
fedreplay-audit mechanism [--run-config F] [--epsilon E] [--sample-rate Q] [--steps T]
    White-box audit of the private step itself with gradient canaries
    (common.audit.whitebox): the epsilon lower bound it certifies against the claim;
    exit status 1 on a violation.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from common.audit import (
    Canaries,
    best_lower_bound,
    canary_scores,
    generator_leak_attack,
    lira_attacks_many,
    loss_attack,
    write_report,
)
from common.audit.egress_check import (
    EgressReport,
    check_egress,
    compare_with_server,
    registered_architectures,
)
from common.audit.generator_leaks import nearest_sample_distance
from common.audit.lira import TrainFn
from common.config import ExperimentConfig, load_config
from common.data.holdout import withhold
from common.data.streams import build_stream
from common.data.types import Shape, Split, TaskStream, concat
from common.device import select_device
from common.egress import run_dir as egress_run_dir
from common.evaluator import train_fresh_solver
from common.models import (
    build_generator,
    build_solver,
    generator_from_state,
    load_generator_state,
)
from common.results import RunFolder
from common.sitedata import SiteIdentity, site_records
from common.sitestate import site_dir

log = logging.getLogger("fedreplay.audit")

CANARIES_FILE = "canaries.pt"
SITE_UPDATES_FILE = "site_updates.pt"
EGRESS_REPORT = "egress_audit.json"
DEFAULT_CANARY_DELTA = 1e-5


# --- the run folder ---------------------------------------------------------------------
def site_updates_by_partition(run_dir: Path) -> dict[int, dict[str, Any]]:
    """The last update each site sent (``site_updates.pt``, keyed by site id), by the
    simulated data share it holds (the audits rebuild a site's records from it)."""
    path = run_dir / SITE_UPDATES_FILE
    if not path.is_file():
        return {}
    saved = torch.load(path, map_location="cpu", weights_only=True)
    return {int(u["partition"]): u for u in saved.values()}


def load_run_config(run_dir: Path, data_root: str | None = None) -> ExperimentConfig:
    """The run's ``config.json`` back as an :class:`ExperimentConfig` (optionally another
    data root: the auditor's copy of the data)."""
    flat: dict[str, Any] = {}
    for key, value in json.loads((run_dir / "config.json").read_text()).items():
        if isinstance(value, dict):
            flat.update({f"{key}.{k.replace('_', '-')}": v for k, v in value.items()})
        else:
            flat[key.replace("_", "-")] = value
    cfg = load_config(flat)
    if data_root:
        cfg = dataclasses.replace(cfg, data=dataclasses.replace(cfg.data, root=data_root))
    return cfg


def _read_json(path: Path) -> dict[str, Any]:
    return dict(json.loads(path.read_text())) if path.is_file() else {}


def find_egress_logs(sites_dir: Path, run_id: int | None) -> tuple[int | None, list[Path]]:
    """The logs of ``run_id``, or of the most recently written run if it is unknown."""
    if run_id is None:
        runs = [p for p in (sites_dir / "egress").glob("run-*") if p.is_dir()]
        if not runs:
            return None, []
        latest = max(runs, key=lambda p: p.stat().st_mtime)
        run_id = int(latest.name.removeprefix("run-"))
    return run_id, sorted(egress_run_dir(sites_dir, run_id).glob("*.jsonl"))


def recorded_run_id(run_dir: Path) -> int | None:
    """Flower's run id as the run folder records it: ``summary.json`` ``run_id``, else
    ``resources.json`` ``flower_run_id`` (simulations/run_federated.py), else None."""
    for name, key in (("summary.json", "run_id"), ("resources.json", "flower_run_id")):
        value = _read_json(run_dir / name).get(key)
        if isinstance(value, int) or (isinstance(value, str) and value.isdigit()):
            return int(value)
    return None


def audit_egress(
    run_dir: Path, *, sites_dir: Path, run_id: int | None, data_root: str | None = None
) -> EgressReport:
    """Check the egress logs of the run in ``run_dir``; writes ``egress_audit.json``."""
    cfg = load_run_config(run_dir, data_root)
    # a resumed run was worked on by several Flower runs: the logs of all of them
    resumed = [int(r) for r in _read_json(run_dir / "summary.json").get("flower_run_ids", [])]
    if run_id is None:
        run_id = recorded_run_id(run_dir)
    run_id, logs = find_egress_logs(sites_dir, run_id)
    for other in resumed if run_id in resumed else []:
        if other != run_id:
            logs += find_egress_logs(sites_dir, other)[1]
    stream = build_stream(cfg)
    summary = _read_json(run_dir / "summary.json")
    report = check_egress(
        logs,
        cfg=cfg,
        shape=stream.shape,
        num_classes=stream.num_classes,
        runs=resumed if run_id in resumed else None,
        architectures=registered_architectures(cfg, stream.shape, stream.num_classes, summary),
    )
    if (run_dir / "rounds.jsonl").is_file():
        compare_with_server(report, RunFolder(run_dir).read_jsonl("rounds.jsonl"))
    payload = {"run_id": run_id, "sites_dir": str(sites_dir), **report.to_dict()}
    if len(resumed) > 1:
        payload["flower_run_ids"] = resumed
    RunFolder(run_dir).write_json(EGRESS_REPORT, payload)
    return report


# --- model audit --------------------------------------------------------------------------
def make_train_fn(
    cfg: ExperimentConfig, shape: Shape, num_classes: int, iterations: int, device: torch.device
) -> TrainFn:
    """LiRA's ``train_fn``: a fresh solver of the run's architecture, Adam at the run's lr
    and batch size for ``iterations`` steps on the given split (on ``device``)."""

    def train(split: Split, seed: int) -> nn.Module:
        return train_fresh_solver(
            cfg.solver,
            shape,
            num_classes,
            split,
            iterations=iterations,
            batch_size=cfg.train.batch_size,
            lr=cfg.train.lr,
            seed=seed,
            device=device,
        )

    return train


def _model(module: nn.Module, parts: dict[str, Any], part: str = "solver") -> nn.Module:
    if part == "generator":  # a DGM generator takes the update's (grown) shapes
        load_generator_state(module, parts[part])
    else:
        module.load_state_dict(parts[part])
    return module


def matched_members(
    pool: Split, holdout: Split, n: int, rng: np.random.Generator
) -> tuple[Split, Split]:
    """Up to ``n`` members drawn from ``pool`` and as many non-members from ``holdout``,
    with the same number of records of every class on both sides.

    A site's training data is label-skewed; held-out data with another class mix would let
    an attack score the class instead of membership (a loss attack then "finds" or "loses"
    signal that has nothing to do with privacy). Classes ``holdout`` lacks are cut down.
    """
    take = torch.from_numpy(np.sort(rng.permutation(len(pool))[:n]))
    labels = pool.y[take]
    member_rows: list[Tensor] = []
    holdout_rows: list[Tensor] = []
    for c in torch.unique(labels).tolist():
        mine = take[labels == c]
        theirs = torch.nonzero(holdout.y == c).flatten()
        k = min(len(mine), len(theirs))
        member_rows.append(mine[:k])
        holdout_rows.append(theirs[torch.from_numpy(rng.permutation(len(theirs))[:k])])
    members = torch.sort(torch.cat(member_rows)).values
    non_members = torch.sort(torch.cat(holdout_rows)).values
    return pool.subset(members), holdout.subset(non_members)


def audit_non_members(cfg: ExperimentConfig, stream: TaskStream) -> tuple[Split, str]:
    """Records no site trained on, and where they come from: the run's audit holdout
    (``audit.holdout`` > 0: withheld training records, the same distribution as the
    members), else the test split of every task."""
    if cfg.audit.holdout > 0:
        _, held = withhold(stream, fraction=cfg.audit.holdout, seed=cfg.seed)
        return concat(list(held)), (
            f"the run's audit holdout ({cfg.audit.holdout:g} of every task's training "
            "records, withheld from every site)"
        )
    return concat([t.test for t in stream.tasks]), (
        "the test split (the run has no audit holdout; a test split can differ in "
        "distribution from the training split, see docs/privacy-audit.md)"
    )


def audit_models(
    run_dir: Path,
    *,
    quick: bool,
    shadows: int | None,
    records: int | None,
    data_root: str | None,
    device_name: str | None,
    sites: Sequence[int] | None,
    seed: int = 0,
) -> dict[str, Path]:
    """Run the attacks of the module docstring and write ``run_dir/audit``."""
    cfg = load_run_config(run_dir, data_root)
    summary = _read_json(run_dir / "summary.json")
    device = select_device(device_name or cfg.device)
    stream = build_stream(cfg)
    shape, k = stream.shape, stream.num_classes
    models = torch.load(run_dir / "final_models.pt", map_location="cpu", weights_only=True)
    solver = build_solver(cfg.solver, shape, k)
    solver.load_state_dict(models["solver"])
    solver.to(device).eval()
    generator = None
    if models.get("generator") is not None:
        generator = generator_from_state(cfg, shape, k, models["generator"])
        generator.to(device).eval()
    updates = site_updates_by_partition(run_dir)
    num_shadows = shadows or (4 if quick else 8)
    per_side = records or (200 if quick else 2000)
    steps = cfg.train.iterations * cfg.fed.rounds_per_task * len(stream)
    train_fn = make_train_fn(cfg, shape, k, min(steps, 300) if quick else steps, device)
    n_sites = cfg.fed.num_sites
    rng = np.random.default_rng(seed)
    holdout, non_member_source = audit_non_members(cfg, stream)
    log.info("non-members: %s", non_member_source)
    results: dict[str, Any] = {}
    for pid in sites if sites is not None else range(n_sites):
        # Members: the site's real training records (canaries are audited separately).
        # Non-members: held-out test records no site trained on, class for class as many.
        local = site_records(cfg, SiteIdentity(pid, n_sites))
        pool = concat([t.train for t in local.tasks])
        members, non_members = matched_members(pool, holdout, per_side, rng)
        n = len(members)
        if n < 2:
            print(f"site {pid}: too few records to attack ({n}); skipped", file=sys.stderr)
            continue
        label = f"site {pid}"
        log.info("%s: %d members and %d class-matched non-members", label, n, n)
        solvers: dict[str, nn.Module] = {"solver (global)": solver}
        generators: dict[str, nn.Module] = {}
        if generator is not None and cfg.replay.mode == "global":
            generators["generator (global)"] = generator
        if pid in updates:  # what this site itself sent last: the DP guarantee's release
            own = f"site's round-{updates[pid]['round']} update"
            solvers[f"solver ({own})"] = _model(build_solver(cfg.solver, shape, k), updates[pid])
            if "generator" in updates[pid]:
                gen = build_generator(cfg, shape, k)
                generators[f"generator ({own})"] = _model(gen, updates[pid], "generator")
        for name, model in solvers.items():
            model.to(device).eval()
            results[f"{label} / {name} / loss"] = loss_attack(
                model, members, non_members, device=device
            )
        is_member = np.r_[np.ones(n, bool), np.zeros(n, bool)]
        lira = lira_attacks_many(
            solvers,
            train_fn,
            candidates=concat([members, non_members]),
            is_member=is_member,
            num_shadows=num_shadows,
            seed=seed + pid,
            device=device,
        )
        for name, attacks in lira.items():
            results.update({f"{label} / {name} / {a}": r for a, r in attacks.items()})
        for name, target in generators.items():
            log.info("%s: GAN-Leaks on the %s", label, name)
            leak = generator_leak_attack(
                target.to(device).eval(),  # type: ignore[arg-type]
                members,
                non_members,
                samples_per_class=200 if quick else 2000,
                seed=seed,
                device=device,
            )
            results[f"{label} / {name} / {leak.name}"] = leak
    delta = summary.get("dp_delta")
    canary_file = run_dir / CANARIES_FILE
    if canary_file.is_file():  # canaries inserted at training time (audit.canaries)
        saved = torch.load(canary_file, map_location="cpu", weights_only=True)
        include = torch.as_tensor(saved["include"]).bool().numpy()
        canaries = Canaries(Split.from_tensors(saved["x"].float(), saved["y"].long()), include)
        canary_delta = float(delta) if delta else DEFAULT_CANARY_DELTA
        targets = {"solver (global)": solver}
        site = int(saved.get("site", -1))
        if site in updates:
            targets[f"solver (site {site}'s round-{updates[site]['round']} update)"] = _model(
                build_solver(cfg.solver, shape, k), updates[site]
            )
        # The canaries are this run's records: the claim they test is this run's own share.
        claimed = summary.get("dp_epsilon_run", summary.get("dp_epsilon"))
        for name, model in targets.items():
            scores = canary_scores(model.to(device).eval(), canaries, device=device)
            results[f"canaries / {name}"] = best_lower_bound(
                scores, include, delta=canary_delta, claimed_epsilon=claimed
            )
        gen_targets: dict[str, nn.Module] = {}
        if generator is not None and cfg.replay.mode == "global":
            gen_targets["generator (global)"] = generator
        if site in updates and "generator" in updates[site]:
            gen = build_generator(cfg, shape, k)
            own = f"generator (site {site}'s round-{updates[site]['round']} update)"
            gen_targets[own] = _model(gen, updates[site], "generator")
        for name, target in gen_targets.items():  # GAN-Leaks distance as the canary score
            distance = nearest_sample_distance(
                target.to(device).eval(),  # type: ignore[arg-type]
                canaries.split,
                samples_per_class=200 if quick else 2000,
                seed=seed,
                device=device,
            )
            results[f"canaries / {name}"] = best_lower_bound(
                -distance, include, delta=canary_delta, claimed_epsilon=claimed
            )
    return write_report(
        results,
        run_dir / "audit",
        title=f"Privacy audit of {run_dir.name} ({cfg.method} on {stream.dataset})",
        accountant_epsilon=summary.get("dp_epsilon"),
        delta=delta,
        accountant=summary.get("dp_accountant"),
        scope=summary.get("dp_scope") or "no differential privacy",
        non_members=non_member_source,
    )


# --- command line -------------------------------------------------------------------------
def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="fedreplay-audit", description=__doc__.split("\n")[0])
    sub = p.add_subparsers(dest="command", required=True)
    e = sub.add_parser("egress", help="check the sites' egress logs against the protocol")
    e.add_argument("run_dir", type=Path)
    e.add_argument("--sites-dir", type=Path, default=None, help="default: $FEDREPLAY_SITE_DIR")
    e.add_argument("--run-id", type=int, default=None, help="default: summary.json, else latest")
    e.add_argument("--data-root", default=None, help="data for the input shape (default: run's)")
    m = sub.add_parser("models", help="membership inference against the final models")
    m.add_argument("run_dir", type=Path)
    m.add_argument("--quick", action="store_true", help="4 shadows, 200 records per side")
    m.add_argument("--shadows", type=int, default=None, help="LiRA shadow models (default 8)")
    m.add_argument("--records", type=int, default=None, help="members (= non-members) per site")
    m.add_argument("--sites", default=None, help="comma-separated partition ids (default all)")
    m.add_argument("--data-root", default=None, help="where the auditor's copy of the data is")
    m.add_argument("--device", default=None, help="default: the run's device setting")
    m.add_argument("--seed", type=int, default=0)
    w = sub.add_parser("mechanism", help="white-box audit of the DP step (gradient canaries)")
    w.add_argument("--run-config", type=Path, default=None, help="take delta from this file")
    w.add_argument("--epsilon", type=float, default=2.0, help="claimed epsilon to calibrate to")
    w.add_argument("--delta", type=float, default=None, help="default: the config's, else 1e-5")
    w.add_argument("--sample-rate", type=float, default=0.5)
    w.add_argument("--steps", type=int, default=20)
    w.add_argument("--canaries", type=int, default=1_000_000)
    w.add_argument("--out", type=Path, default=None, help="write the result as JSON here")
    return p


def audit_mechanism_cli(args: argparse.Namespace) -> int:
    from common.audit.whitebox import audit_mechanism
    from common.config import read_overrides
    from common.privacy.calibrate import noise_for_budget

    delta = args.delta
    if delta is None and args.run_config is not None:
        delta = load_config(read_overrides(args.run_config)).dp.delta or None
    delta = delta or 1e-5
    sigma = noise_for_budget(
        [(args.sample_rate, args.steps)], target_epsilon=args.epsilon, delta=delta, accountant="rdp"
    )
    log.info(
        "auditing %d steps at q=%.3g, sigma=%.3f (epsilon %.2f at delta %.0e) with %d canaries",
        args.steps,
        args.sample_rate,
        sigma,
        args.epsilon,
        delta,
        args.canaries,
    )
    result = audit_mechanism(
        noise_multiplier=sigma,
        sample_rate=args.sample_rate,
        steps=args.steps,
        delta=delta,
        claimed_epsilon=args.epsilon,
        num_canaries=args.canaries,
    )
    d = result.to_dict()
    print(json.dumps(d, indent=1))
    if args.out is not None:
        args.out.write_text(json.dumps(d, indent=1))
    return 1 if result.verdict.startswith("VIOLATION") else 0


def _log_progress() -> None:
    """Progress of the long model audit on stderr (sites, shadows, attacks)."""
    if not log.handlers:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("%(asctime)s %(message)s", "%H:%M:%S"))
        log.addHandler(handler)
    log.setLevel(logging.INFO)
    log.propagate = False


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.command == "mechanism":
        _log_progress()
        return audit_mechanism_cli(args)
    run_dir: Path = args.run_dir
    if not (run_dir / "config.json").is_file():
        print(f"{run_dir} is not a run folder (no config.json)", file=sys.stderr)
        return 2
    if args.command == "egress":
        sites_dir = args.sites_dir or site_dir()
        report = audit_egress(
            run_dir, sites_dir=sites_dir, run_id=args.run_id, data_root=args.data_root
        )
        print(report.summary())
        print(f"written {run_dir / EGRESS_REPORT}")
        return 2 if not report.logs else (0 if report.ok else 1)
    _log_progress()
    start = time.perf_counter()
    sites = [int(s) for s in args.sites.split(",")] if args.sites else None
    paths = audit_models(
        run_dir,
        quick=args.quick,
        shadows=args.shadows,
        records=args.records,
        data_root=args.data_root,
        device_name=args.device,
        sites=sites,
        seed=args.seed,
    )
    print(paths["markdown"].read_text())
    print(f"written {paths['json'].parent} in {time.perf_counter() - start:.1f} s")
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
