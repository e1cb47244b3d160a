"""``fedreplay audit models``: membership inference against a run's released models
(loss attack and LiRA on the solver, GAN-Leaks on the generator) per site, and the
one-run canary bound on the solver and the generator, each with the largest bound it
could reach."""

from __future__ import annotations

import logging
import sys
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
from common.audit.generator_leaks import nearest_sample_distance
from common.audit.lira import TrainFn
from common.audit.run_folder import (
    CANARIES_FILE,
    DEFAULT_CANARY_DELTA,
    load_run_config,
    read_json,
    site_updates_by_partition,
)
from common.config import ExperimentConfig
from common.data.holdout import withhold
from common.data.streams import build_stream
from common.data.types import Shape, Split, TaskStream, concat
from common.device import select_device
from common.evaluator import train_fresh_solver
from common.models import (
    build_generator,
    build_solver,
    generator_from_state,
    load_generator_state,
)
from common.models.ridge import RidgeSolver
from common.privacy.embedding import release
from common.sitedata import SiteIdentity, site_records
from common.sitestate import default_site_id

log = logging.getLogger("fedreplay.audit")


def _ridge_shadow(solver: nn.Module, split: Split) -> nn.Module:
    """A ridge solver solved on ``split``'s exact statistics (a shadow model: no noise)."""
    assert isinstance(solver, RidgeSolver)
    classes = sorted(int(c) for c in split.y.unique())
    features = solver.random_features()
    solver.absorb(release(features, split.x, split.y, classes, sigma=None, gram=True), classes)
    return solver.eval()


# --- model audit --------------------------------------------------------------------------
def make_train_fn(
    cfg: ExperimentConfig, shape: Shape, num_classes: int, iterations: int, device: torch.device
) -> TrainFn:
    """LiRA's ``train_fn``: a fresh solver of the run's architecture, Adam at the run's lr
    and batch size for ``iterations`` steps on the given split (on ``device``); a ridge
    solver (``solver.arch = "ridge"``) solved on the split's exact statistics instead."""

    def train(split: Split, seed: int) -> nn.Module:
        if cfg.solver_traits.solved:  # solved, not trained: the exact fit on the split
            return _ridge_shadow(build_solver(cfg, shape, num_classes), split)
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
    """Run the attacks of the module docstring and write ``run_dir/audit`` (``sites``: the
    simulated shares to attack, p of site id ``site-<p>``; None: every site of the run)."""
    cfg = load_run_config(run_dir, data_root)
    summary = read_json(run_dir / "summary.json")
    device = select_device(device_name or cfg.device)
    stream = build_stream(cfg)
    shape, k = stream.shape, stream.num_classes
    models = torch.load(run_dir / "final_models.pt", map_location="cpu", weights_only=True)
    solver = build_solver(cfg, shape, k)
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
        label = default_site_id(pid)  # the id the site trained and sent under
        if n < 2:
            print(f"{label}: too few records to attack ({n}); skipped", file=sys.stderr)
            continue
        log.info("%s: %d members and %d class-matched non-members", label, n, n)
        solvers: dict[str, nn.Module] = {"solver (global)": solver}
        generators: dict[str, nn.Module] = {}
        if generator is not None and cfg.replay.mode == "global":
            generators["generator (global)"] = generator
        if pid in updates:  # what this site itself sent last: the DP guarantee's release
            own = f"site's round-{updates[pid]['round']} update"
            solvers[f"solver ({own})"] = _model(build_solver(cfg, shape, k), updates[pid])
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
                build_solver(cfg, shape, k), updates[site]
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
