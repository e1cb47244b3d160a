"""``fedreplay audit``: privacy audits of a finished run folder.

fedreplay audit egress RUN_DIR [--sites-dir D] [--run-id N] [--data-root R]
    Check the sites' egress logs against the protocol; writes ``egress_audit.json``
    into the run folder; exit status 1 on any deviation, 2 if no logs are found.
fedreplay audit models RUN_DIR [--quick] [--shadows K] [--data-root R]
    Membership inference against the final models (loss attack and LiRA on the
    solver, GAN-Leaks on the generator) per site, plus the one-run canary bound on the
    solver and the generator if the run folder holds ``canaries.pt``, each with the largest
    bound it could reach; writes ``audit/`` (audit.json, audit.md, roc.png).
fedreplay audit mechanism [--run-config F] [--epsilon E] [--sample-rate Q] [--steps T]
    White-box audit of the private step itself with gradient canaries
    (common.audit.whitebox): the epsilon lower bounds it certifies against the claim;
    exit status 1 on a violation.
fedreplay audit release [--run-config F] [--epsilon E] [--gram] [--trials N]
    White-box audit of the embedding release (common.audit.release_audit): repeated
    releases with and without a canary record; exit status 1 on a violation.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from common.config import ExperimentConfig, load_config
from common.sitestate import STATE_POINTER, simulated_state_of, site_dir

# the audits load torch (and Flower, matplotlib): imported where they run, so that
# `fedreplay audit --help` answers at once
if TYPE_CHECKING:
    from common.audit.egress_check import EgressReport
    from common.data.types import Shape

log = logging.getLogger("fedreplay.audit")


def find_egress_logs(sites_dir: Path, run_id: int | None) -> tuple[int | None, list[Path]]:
    """The logs of ``run_id``, or of the most recently written run if it is unknown."""
    if run_id is None:
        runs = [p for p in (sites_dir / "egress").glob("run-*") if p.is_dir()]
        if not runs:
            return None, []
        latest = max(runs, key=lambda p: p.stat().st_mtime)
        run_id = int(latest.name.removeprefix("run-"))
    from common.egress import run_dir as egress_run_dir

    return run_id, sorted(egress_run_dir(sites_dir, run_id).glob("*.jsonl"))


class EgressLogsMissing(RuntimeError):
    """No egress log of the run where the audit looked."""


def _data_shape(cfg: ExperimentConfig, summary: Mapping[str, Any]) -> tuple[Shape, int]:
    """The run's input shape and class count: from its summary (every run since
    2026-12-06 records them), else from the data (older runs; needs the data here)."""
    if "input_shape" in summary and "num_classes" in summary:
        c, h, w = (int(d) for d in summary["input_shape"])
        return (c, h, w), int(summary["num_classes"])
    from common.data.streams import build_stream

    stream = build_stream(cfg)
    return stream.shape, stream.num_classes


def recorded_run_id(run_dir: Path) -> int | None:
    """Flower's run id as the run folder records it: ``summary.json`` ``run_id``, else
    ``resources.json`` ``flower_run_id`` (fedreplay run), else None."""
    from common.audit.run_folder import read_json

    for name, key in (("summary.json", "run_id"), ("resources.json", "flower_run_id")):
        value = read_json(run_dir / name).get(key)
        if isinstance(value, int) or (isinstance(value, str) and value.isdigit()):
            return int(value)
    return None


def audit_egress(
    run_dir: Path, *, sites_dir: Path, run_id: int | None, data_root: str | None = None
) -> EgressReport:
    """Check the egress logs of the run in ``run_dir``; writes ``egress_audit.json``."""
    from common.audit.egress_check import (
        check_egress,
        compare_with_server,
        registered_architectures,
    )
    from common.audit.run_folder import EGRESS_REPORT, load_run_config, read_json
    from common.results import RunFolder

    cfg = load_run_config(run_dir, data_root)
    # a resumed run was worked on by several Flower runs: the logs of all of them
    resumed = [int(r) for r in read_json(run_dir / "summary.json").get("flower_run_ids", [])]
    if run_id is None:
        run_id = recorded_run_id(run_dir)
    run_id, logs = find_egress_logs(sites_dir, run_id)
    for other in resumed if run_id in resumed else []:
        if other != run_id:
            logs += find_egress_logs(sites_dir, other)[1]
    if not logs:  # nothing to check: said with where it looked, nothing written
        where = sites_dir / "egress" / (f"run-{run_id}" if run_id is not None else "run-*")
        raise EgressLogsMissing(
            f"no egress logs of run {run_id if run_id is not None else '(any)'} at {where}. "
            "A simulation's sites log under the folder named in the run folder's "
            f"{STATE_POINTER}; a deployed site's under its own $FEDREPLAY_SITE_DIR/egress "
            "(run the audit at the site, or pass --sites-dir)"
        )
    summary = read_json(run_dir / "summary.json")
    shape, num_classes = _data_shape(cfg, summary)
    report = check_egress(
        logs,
        cfg=cfg,
        shape=shape,
        num_classes=num_classes,
        runs=resumed if run_id in resumed else None,
        architectures=registered_architectures(cfg, shape, num_classes, summary),
    )
    if (run_dir / "rounds.jsonl").is_file():
        compare_with_server(report, RunFolder(run_dir).read_jsonl("rounds.jsonl"))
    payload = {"run_id": run_id, "sites_dir": str(sites_dir), **report.to_dict()}
    if len(resumed) > 1:
        payload["flower_run_ids"] = resumed
    RunFolder(run_dir).write_json(EGRESS_REPORT, payload)
    return report


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="fedreplay audit", description=__doc__.split("\n")[0])
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
    m.add_argument(
        "--sites", default=None, help="comma-separated site ids, e.g. site-0,site-2 (default all)"
    )
    m.add_argument("--data-root", default=None, help="where the auditor's copy of the data is")
    m.add_argument("--device", default=None, help="default: the run's device setting")
    m.add_argument("--seed", type=int, default=0)
    w = sub.add_parser("mechanism", help="white-box audit of the DP step (gradient canaries)")
    w.add_argument("--run-config", type=Path, default=None, help="take delta from this file")
    w.add_argument("--epsilon", type=float, default=2.0, help="claimed epsilon to calibrate to")
    w.add_argument("--delta", type=float, default=None, help="default: the config's, else 1e-5")
    w.add_argument(
        "--sample-rate", type=float, default=0.5, help="1: full batch, the tight Gaussian bound"
    )
    w.add_argument("--steps", type=int, default=20)
    w.add_argument("--canaries", type=int, default=1_000_000)
    w.add_argument("--out", type=Path, default=None, help="write the result as JSON here")
    r = sub.add_parser("release", help="white-box audit of the embedding release (canary)")
    r.add_argument("--run-config", type=Path, default=None, help="take delta from this file")
    r.add_argument("--epsilon", type=float, default=1.0, help="claimed epsilon of one release")
    r.add_argument("--delta", type=float, default=None, help="default: the config's, else 1e-5")
    r.add_argument("--gram", action="store_true", help="the ridge form (sums and Gram)")
    r.add_argument(
        "--base",
        choices=("pixels", "scatter"),
        default="pixels",
        help="features on the pixels or on their ScatterNet coefficients (embedding.base)",
    )
    r.add_argument("--trials", type=int, default=100_000)
    r.add_argument("--out", type=Path, default=None, help="write the result as JSON here")
    return p


def _claimed_delta(args: argparse.Namespace) -> float:
    from common.config import read_overrides

    delta = args.delta
    if delta is None and args.run_config is not None:
        delta = load_config(read_overrides(args.run_config)).dp.delta or None
    return float(delta or 1e-5)


def _report(d: dict, out: Path | None, line: str) -> None:
    print(json.dumps(d, indent=1))
    if out is not None:
        out.write_text(json.dumps(d, indent=1))
    log.info(line)


def audit_release_cli(args: argparse.Namespace) -> int:
    from common.audit.release_audit import audit_release
    from common.privacy.calibrate import noise_for_budget

    delta = _claimed_delta(args)
    sigma = noise_for_budget([(1.0, 1)], target_epsilon=args.epsilon, delta=delta, accountant="rdp")
    log.info(
        "auditing %d %s releases at sigma=%.3f (epsilon %.2f at delta %.0e)",
        args.trials,
        "ridge (sums and Gram)" if args.gram else "embedding (sums)",
        sigma,
        args.epsilon,
        delta,
    )
    result = audit_release(
        noise_multiplier=sigma, delta=delta, gram=args.gram, trials=args.trials, base=args.base
    )
    _report(
        result.to_dict(),
        args.out,
        f"{result.verdict}: certified epsilon >= {result.epsilon_lower_bound:.3f} (no "
        f"assumption), >= {result.epsilon_lower_bound_gaussian:.3f} if the curve is Gaussian; "
        f"claimed {result.claimed_epsilon:.3f}, true {result.epsilon_exact:.3f}",
    )
    return 1 if result.verdict.startswith("VIOLATION") else 0


def audit_mechanism_cli(args: argparse.Namespace) -> int:
    from common.audit.whitebox import audit_mechanism
    from common.privacy.calibrate import noise_for_budget

    delta = _claimed_delta(args)
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
    gaussian = result.epsilon_lower_bound_gaussian
    _report(
        result.to_dict(),
        args.out,
        f"{result.verdict}: certified epsilon >= {result.epsilon_lower_bound:.3f} (no "
        "assumption)"
        + ("" if gaussian is None else f", >= {gaussian:.3f} if the curve is Gaussian")
        + f"; claimed {result.claimed_epsilon:.3f}, accountant PRV {result.epsilon_prv:.3f}",
    )
    return 1 if result.verdict.startswith("VIOLATION") else 0


def _log_progress() -> None:
    """Progress of the long model audit on stderr (sites, shadows, attacks)."""
    if not log.handlers:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("%(asctime)s %(message)s", "%H:%M:%S"))
        log.addHandler(handler)
    log.setLevel(logging.INFO)
    log.propagate = False


def simulated_sites(run_dir: Path) -> Path | None:
    """A simulation's own sites' folder, named in its run folder (``fedreplay run`` and
    ``run_inprocess.py`` keep simulated sites' state apart from real ones)."""
    state = simulated_state_of(run_dir)
    return None if state is None else state / "sites"


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.command in ("mechanism", "release"):
        _log_progress()
        return audit_mechanism_cli(args) if args.command == "mechanism" else audit_release_cli(args)
    from common.audit.models_audit import audit_models
    from common.audit.run_folder import EGRESS_REPORT
    from common.data.root import DatasetNotFoundError

    run_dir: Path = args.run_dir
    if not (run_dir / "config.json").is_file():
        print(f"{run_dir} is not a run folder (no config.json)", file=sys.stderr)
        return 2
    if args.command == "egress":
        sites_dir = args.sites_dir or simulated_sites(run_dir) or site_dir()
        try:
            report = audit_egress(
                run_dir, sites_dir=sites_dir, run_id=args.run_id, data_root=args.data_root
            )
        except (EgressLogsMissing, DatasetNotFoundError) as exc:
            print(f"fedreplay audit egress: {exc}", file=sys.stderr)
            return 2
        print(report.summary())
        print(f"written {run_dir / EGRESS_REPORT}")
        return 2 if not report.logs else (0 if report.ok else 1)
    _log_progress()
    start = time.perf_counter()
    from common.audit.run_folder import simulated_partition

    sites = None  # the site ids, read once into the simulated shares they name
    if args.sites:
        sites = []
        for site_id in (s.strip() for s in args.sites.split(",") if s.strip()):
            partition = simulated_partition(site_id)
            if partition is None:
                print(
                    f"fedreplay audit models: --sites: site id {site_id!r} is not a simulated "
                    "site (site-<p>, e.g. site-0): the model audit rebuilds a site's records "
                    "from its simulated share, and a deployed site's records are only at the "
                    "site",
                    file=sys.stderr,
                )
                return 2
            sites.append(partition)
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
