"""The layers: common/ imports nothing from client/ or server/, and only the wire format
(wire.py, wire_packed.py; and the egress log, which records wire messages) import flwr
in common/ and client/'s core."""

import ast
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def imported_modules(path: Path, *, runtime: bool = False) -> set[str]:
    """The modules ``path`` imports; ``runtime``: leaving out those under ``if
    TYPE_CHECKING:`` (annotations only)."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    if runtime:
        for node in ast.walk(tree):
            if isinstance(node, ast.If) and ast.unparse(node.test) == "TYPE_CHECKING":
                node.body = []
    out: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            out.add(node.module)
    return out


def test_common_never_imports_client_or_server() -> None:
    offenders = {
        str(p.relative_to(ROOT)): sorted(
            m for m in imported_modules(p) if m.split(".")[0] in ("client", "server")
        )
        for p in (ROOT / "common").rglob("*.py")
    }
    assert not {k: v for k, v in offenders.items() if v}


def test_flwr_only_where_the_protocol_is_declared_and_encoded() -> None:
    allowed = {"common/wire.py", "common/wire_packed.py", "common/egress.py"}
    allowed.add("client/client_app.py")
    allowed.add("client/secure_aggregation.py")  # the SecAgg+ mod: the protocol at the site
    users = {
        str(p.relative_to(ROOT))
        for folder in ("common", "client")
        for p in (ROOT / folder).rglob("*.py")
        if any(m.split(".")[0] == "flwr" for m in imported_modules(p))
    }
    assert users <= allowed, users - allowed


# within common/: what a lower layer never imports (the back-edges issue 35 found, and the
# layers' order: config < data < models < privacy < training < audit)
NEVER = {
    "common/config": ("common.",),
    "common/data": ("common.models", "common.privacy", "common.training", "common.audit"),
    "common/models": ("common.privacy", "common.training", "common.audit", "common.wire"),
    "common/privacy": ("common.training", "common.audit", "common.wire", "common.replay"),
    "common/wire.py": ("common.privacy", "common.training", "common.audit"),
    "common/egress.py": ("common.privacy", "common.training", "common.audit"),
    "common/sitedata.py": ("common.audit", "common.training"),
    # a regularisation method is a penalty on the solver: below the training loop
    "common/methods": ("common.training", "common.privacy", "common.audit", "common.wire"),
}


# ... except the declaration of what travels (plain Python, importing nothing of common/)
EXCEPT = {"common/config": ("common.protocol",)}


def layer_offenders(
    rules: dict[str, tuple[str, ...]],
    *,
    allowed: dict[str, tuple[str, ...]] | None = None,
    runtime: bool = False,
) -> dict[str, list[str]]:
    """{file: the banned modules it imports} for rules {folder or file: banned prefixes};
    a file may import its own package and what ``allowed`` names for its folder."""
    offenders = {}
    for where, banned in rules.items():
        base = ROOT / where
        files = [base] if base.suffix == ".py" else list(base.rglob("*.py"))
        assert files, where
        ok = (where.replace("/", ".").removesuffix(".py"), *(allowed or {}).get(where, ()))
        for p in files:
            found = imported_modules(p, runtime=runtime)
            bad = sorted(m for m in found if m.startswith(banned) and not m.startswith(ok))
            if bad:
                offenders[str(p.relative_to(ROOT))] = bad
    return offenders


def test_lower_layers_never_import_higher_ones() -> None:
    offenders = layer_offenders(NEVER, allowed=EXCEPT)
    assert not offenders, offenders


# server/'s packages, lowest first: what bounds a hostile site (robust), who the sites are
# (sites), privacy at the server (privacy) < each method's server side (methods) < the run's
# loop and state (run) < the ways in (launch, cli, single, server_app). A method's hooks take
# the run as an argument (annotated under TYPE_CHECKING: a type, not an import that runs).
TOP = ("server.run", "server.launch", "server.cli", "server.single", "server.server_app")
SERVER_NEVER = {
    "server/robust": ("server.methods", "server.sites", "server.privacy", *TOP),
    "server/sites": ("server.methods", "server.robust", *TOP),
    "server/privacy": ("server.methods", "server.robust", *TOP),
    "server/methods": TOP,
    "server/run": ("server.launch", "server.cli", "server.single", "server.server_app"),
    "server/round_record.py": ("server.",),
}


def test_server_packages_never_import_higher_ones() -> None:
    offenders = layer_offenders(SERVER_NEVER, runtime=True)
    assert not offenders, offenders


def test_server_modules_live_in_their_packages() -> None:
    """server/ is grouped by concept (issue 35: it was one flat folder of 33 files): at its
    top only the ways in and the round's record."""
    top = {p.name for p in (ROOT / "server").glob("*.py")}
    assert top <= {"__init__.py", "cli.py", "server_app.py", "single.py", "pki.py",
                   "round_record.py"}, top  # fmt: skip


def test_the_protocol_declaration_imports_nothing_of_the_platform() -> None:
    assert not {m for m in imported_modules(ROOT / "common" / "protocol.py") if m.startswith(
        ("common", "client", "server", "flwr", "torch"))}  # fmt: skip


def test_the_loop_names_no_method() -> None:
    """server/run/federation.py is the loop: a method's server work is a module of
    server/methods/, called through its hooks (issue 35: methods were branches)."""
    loop = (ROOT / "server" / "run" / "federation.py").read_text(encoding="utf-8")
    named = [w for w in ("DGMGenerator", "RidgeSolver", "TaskGenerator", '"embedding"', '"dgm"')
             if w in loop]  # fmt: skip
    assert not named, named


RISKY = {"epsilon", "eps", "delta", "sigma", "noise_multiplier", "clip", "clip_norm",
         "max_grad_norm", "sample_rate", "target_epsilon"}  # fmt: skip


def test_privacy_numbers_are_never_passed_by_position() -> None:
    """Every function and method of the platform that takes epsilon, delta, sigma, a clip
    norm or a sampling rate takes it by keyword (issue 35: a swapped float is a silent
    privacy bug). Nested callbacks (root finding) are exempt."""
    offenders = []
    for folder in ("common", "client", "server"):
        for path in (ROOT / folder).rglob("*.py"):
            tree = ast.parse(path.read_text(encoding="utf-8"))
            scopes = [tree, *(n for n in tree.body if isinstance(n, ast.ClassDef))]
            for scope in scopes:
                for fn in scope.body:
                    if isinstance(fn, ast.FunctionDef | ast.AsyncFunctionDef):
                        positional = [a.arg for a in (*fn.args.posonlyargs, *fn.args.args)]
                        bad = sorted(set(positional) & RISKY)
                        if bad:
                            offenders.append(
                                f"{path.relative_to(ROOT)}:{fn.lineno} {fn.name} {bad}"
                            )
    assert not offenders, offenders


METHOD_NAME = re.compile(
    r"""method\s*(==|!=|in)\s*\(?\s*["']|["'](dgr|dgm|none|exact|joint|lwf|ewc)["']\s*(==|in)\b"""
)
# DGM's own config section's rules and its masked generator (a model of its own)
NAMES_DGM = {"common/config/experiment.py", "common/models/factory.py"}


_MODELS = "vae|gan|embedding|mlp|cnn|conv|discriminator|ridge"
MODEL_NAME = re.compile(
    rf"""\.(kind|arch)\s*(==|!=|in)\s*\(?\s*["']({_MODELS})["']|["']({_MODELS})["']\s*(==|!=|in)\b"""
)
# the one place that maps names to classes, and the sections' own rules
NAMES_MODELS = {"common/models/factory.py", "common/config/experiment.py"}


def test_models_are_traits_not_names() -> None:
    """``generator.kind`` and ``solver.arch`` are declared once with their traits
    (common/config/methods.py: fitted to a release or trained; solved, trained or the
    critic); the factory maps a name to its class; nothing else compares a kind or an
    arch to a name (issue 35: the site branched on them)."""
    offenders = []
    for folder in ("common", "client", "server"):
        for path in (ROOT / folder).rglob("*.py"):
            rel = str(path.relative_to(ROOT))
            if rel == "common/config/methods.py" or rel in NAMES_MODELS:
                continue
            for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
                code = line.split("#", 1)[0]
                if MODEL_NAME.search(code):
                    offenders.append(f"{rel}:{n}: {line.strip()}")
    assert not offenders, offenders


def test_methods_are_traits_not_names() -> None:
    """A method is declared once (common/config/methods.py: what it replays, what it trains
    on, why DP cannot account for it) and its module (common/methods/, server/methods/);
    nothing else compares ``method`` to a name (issue 35: methods were branches)."""
    offenders = []
    for folder in ("common", "client", "server"):
        for path in (ROOT / folder).rglob("*.py"):
            rel = str(path.relative_to(ROOT))
            if rel == "common/config/methods.py" or rel.startswith("common/methods/"):
                continue
            for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
                if METHOD_NAME.search(line) and not (rel in NAMES_DGM and '"dgm"' in line):
                    offenders.append(f"{rel}:{n}: {line.strip()}")
    assert not offenders, offenders
