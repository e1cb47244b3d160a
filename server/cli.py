"""``fedreplay``: one command for the platform's tools.

    fedreplay run --run-config simulations/fed_mnist_dgr.toml      # federated, via flwr run
    fedreplay run --resume RUN_DIR                                  # a killed run, resumed
    fedreplay single --run-config simulations/single_mnist_dgr.toml   # one site, no Flower
    fedreplay audit models RUN_DIR                                  # membership inference
    fedreplay privacy show                                          # sites' lifetime ledgers
    fedreplay compare RUN_DIR ... --out DIR                         # runs side by side
    fedreplay protocol                                              # what travels, declared
    fedreplay report RUN_DIR ...                                    # the run's report.html
    fedreplay pki init --dir pki --host superlink.example.org --host 10.0.0.5
    fedreplay pki add-site --dir pki site-berlin
    fedreplay pki register --dir pki site-berlin --pub site-berlin.pub --connection prod
    fedreplay site init --dp-required --max-epsilon 8 --max-delta 1e-5   # at a site

``fedreplay`` is the one command (the ``fedreplay-*`` aliases are gone); ``fedreplay --help``
and ``fedreplay --version`` import nothing heavy.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from pathlib import Path


def _tool(name: str) -> Callable[[list[str]], int | None]:
    if name == "run":
        from server.launch.cli import main as run

        return run
    if name == "single":
        from server.single import main as single

        return single
    if name == "audit":
        from common.audit.cli import main as audit

        return audit
    if name == "compare":
        from common.compare import main as compare

        return compare
    from server.privacy.cli import main as privacy

    return privacy


TOOLS = {
    "run": "a federated run (simulated sites, or a deployment's SuperLink), verified",
    "single": "train one site on a task stream",
    "audit": "egress, model, mechanism and release audits of a run",
    "privacy": "sites' lifetime privacy ledgers and the operator's actions on them",
    "compare": "compare run folders (accuracy, privacy, settings that differ)",
}


EXTRA = {
    "pki": "TLS and node keys",
    "site": "a site's own privacy policy (its operator's rules; the server cannot weaken them)",
    "protocol": "what travels between sites and server (common.protocol)",
    "report": "write a run folder's report.html again (after an audit)",
}


def report_main(argv: list[str]) -> int:
    from common.run_report import write_run_report

    p = argparse.ArgumentParser(prog="fedreplay report", description="one HTML page per run")
    p.add_argument("runs", nargs="+", type=Path, help="run folders")
    args = p.parse_args(argv)
    for run in args.runs:
        try:
            print(write_run_report(run))
        except ValueError as exc:
            print(f"fedreplay report: {exc}", file=sys.stderr)
            return 2
    return 0


def pki_main(argv: list[str]) -> int:
    from server import pki

    p = argparse.ArgumentParser(prog="fedreplay pki", description=pki.__doc__.split("\n")[0])
    sub = p.add_subparsers(dest="action", required=True)
    init = sub.add_parser("init", help="create the CA (once) and the SuperLink's certificate")
    init.add_argument("--host", action="append", default=[], help="SAN: DNS name or IP (repeat)")
    init.add_argument("--days", type=int, default=825, help="server certificate validity")
    init.add_argument("--force", action="store_true", help="replace an existing certificate")
    add = sub.add_parser("add-site", help="create a site's key pair (OpenSSH, EC P-384)")
    add.add_argument("name")
    reg = sub.add_parser("register", help="register a site's public key with the SuperLink")
    reg.add_argument("name")
    reg.add_argument("--connection", required=True, help="SuperLink connection in FLWR_HOME")
    reg.add_argument(
        "--pub", type=Path, default=None, help="the site's public key file it sent (<name>.pub)"
    )
    for sp in (init, add, reg):
        sp.add_argument("--dir", type=Path, default=Path("pki"), help="the PKI folder (pki)")
    args = p.parse_args(argv)
    try:
        if args.action == "init":
            pki.init(args.dir, args.host, days=args.days, force=args.force)
            print(
                f"CA: {args.dir / 'ca.crt'}  SuperLink: {args.dir / 'server.pem'} (SANs: "
                f"{', '.join(args.host)})"
            )
        elif args.action == "add-site":
            keys = pki.add_site(args.dir, args.name)
            print(
                f"{keys.name}: private key {keys.private_key} (stays at the site), "
                f"public key {keys.public_key}, fingerprint {keys.fingerprint}"
            )
        else:
            node_id = pki.register(args.dir, args.name, connection=args.connection, pub=args.pub)
            print(f"{args.name}: registered as node {node_id}")
    except pki.PKIError as exc:
        print(f"fedreplay pki: {exc}", file=sys.stderr)
        return 2
    return 0


def site_main(argv: list[str]) -> int:
    from client.policy import POLICY_FILE, PolicyError, SitePolicy, read_policy, write_policy
    from common.sitestate import site_dir

    p = argparse.ArgumentParser(
        prog="fedreplay site",
        description="A site's privacy policy, kept in its site folder: every instruction from "
        "the server is checked against it before a record is read.",
    )
    sub = p.add_subparsers(dest="action", required=True)
    init = sub.add_parser("init", help="write the site's policy.toml")
    init.add_argument(
        "--dp-required",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="refuse runs without DP (default: required)",
    )
    init.add_argument("--max-epsilon", type=float, default=None, help="lifetime epsilon cap")
    init.add_argument("--max-delta", type=float, default=None, help="largest delta allowed")
    init.add_argument("--min-records", type=int, default=256, help="least dp.min-records")
    init.add_argument(
        "--release-metrics", default="", help="metrics a run may ask for, comma-separated"
    )
    init.add_argument(
        "--own-noise",
        action="store_true",
        help="add all the noise at this site, also under secure aggregation (its epsilon then "
        "holds against a server colluding with every other site)",
    )
    init.add_argument("--force", action="store_true", help="replace an existing policy")
    show = sub.add_parser("show", help="print the site's policy")
    for sp in (init, show):
        sp.add_argument(
            "--dir", type=Path, default=None, help="the site folder (default: $FEDREPLAY_SITE_DIR)"
        )
    args = p.parse_args(argv)
    folder = args.dir or site_dir()
    try:
        if args.action == "init":
            if args.dp_required and (args.max_epsilon is None or args.max_delta is None):
                raise PolicyError("a policy that requires DP needs --max-epsilon and --max-delta")
            policy = SitePolicy(
                dp_required=args.dp_required,
                max_epsilon=args.max_epsilon,
                max_delta=args.max_delta,
                min_records=args.min_records,
                release_metrics=frozenset(
                    m.strip() for m in args.release_metrics.split(",") if m.strip()
                ),
                source="fedreplay site init",
                own_noise=args.own_noise,
            )
            print(f"wrote {write_policy(folder, policy, force=args.force)}")
        else:
            print(read_policy(folder / POLICY_FILE).to_toml(), end="")
    except PolicyError as exc:
        print(f"fedreplay site: {exc}", file=sys.stderr)
        return 2
    return 0


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["--version"]:
        from common.provenance import version_line

        print(version_line())
        return 0
    if not argv or argv[0] in ("-h", "--help"):
        lines = [__doc__.split("\n")[0], "", "commands:"]
        lines += [f"  {name:<9} {what}" for name, what in {**TOOLS, **EXTRA}.items()]
        lines += ["", "  --version  fedreplay's version and commit, and the stack's versions"]
        print("\n".join(lines))
        return 0 if argv else 2
    name, rest = argv[0], argv[1:]
    if name == "pki":
        return pki_main(rest)
    if name == "report":
        return report_main(rest)
    if name == "site":
        return site_main(rest)
    if name == "protocol":
        if rest and rest[0] in ("-h", "--help"):
            print("usage: fedreplay protocol\n\nprints what travels between sites and server")
            return 0
        from common.protocol import describe

        print(describe(), end="")
        return 0
    if name not in TOOLS:
        print(
            f"fedreplay: unknown command {name!r}; one of {', '.join([*TOOLS, *EXTRA])}",
            file=sys.stderr,
        )
        return 2
    sys.argv = [f"fedreplay {name}", *rest]
    code = _tool(name)(rest)
    return int(code or 0)


if __name__ == "__main__":
    raise SystemExit(main())
