"""Check a run's egress logs (:mod:`common.egress`) against what the protocol allows.

Allowed per message (see :mod:`common.wire`):

* ``train`` replies: records ``{solver, metrics, site}`` and, for methods with a
  generator, ``generator`` (``site``: one site-id string); the part records together
  hold exactly the ``solver.<param>`` (and ``generator.<param>``) tensors of the
  registered architectures, each in its own part's record, float32, the registered
  shape; ``metrics`` only finite scalar numbers declared for ``train`` in
  :data:`common.protocol.METRIC_LIST`, and under DP only those
  :mod:`common.privacy.release` allows (losses and timings only when opted in);
* ``query`` replies: records exactly ``{site}``;
* ``evaluate`` replies: records exactly ``{metrics}`` with names declared for ``evaluate``
  (``accuracy-task-<j>``, ...); under DP only when ``dp.release-metrics`` names
  ``evaluation``.

Every departure is a :class:`Deviation` (site, message index, what was wrong).

    report = check_egress(paths, cfg=cfg, shape=(1, 8, 8), num_classes=10)
    report.ok, report.deviations, print(report.summary()), report.to_dict()
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from common.config import ExperimentConfig
from common.data.streams import parse_class_groups
from common.data.types import Shape
from common.egress import EgressLog
from common.models import build_generator, build_solver
from common.models.dgm import DGMGenerator
from common.models.growth import widen_
from common.privacy.release import allowed_train_metrics, evaluation_allowed
from common.protocol import NEVER_DP, REPLIES, SECAGG, metric_declared, part_of, reply_spec
from common.sitestate import check_site_id
from common.wire import EMBEDDING_KEY

# message type -> record name -> kind: what common.protocol allows to leave a site
ALLOWED_RECORDS: dict[str, dict[str, str]] = {t: m.allowed for t, m in REPLIES.items()}
FLOAT32 = "float32"
SITE_FILE = re.compile(r"site-(\d+)\.jsonl")


@dataclass(frozen=True)
class Deviation:
    """One departure from the protocol in one logged message."""

    site: str  # the site id (its log's file name); "-" for the run as a whole
    index: int  # 0-based message index within the site's log
    message_type: str
    problem: str
    log: str

    def __str__(self) -> str:
        return f"{self.site}, message {self.index} ({self.message_type}): {self.problem}"


@dataclass
class SiteStats:
    messages: int = 0
    by_type: dict[str, int] = field(default_factory=dict)
    total_bytes: int = 0
    array_bytes: int = 0
    tensors: int = 0  # tensors sent, summed over messages
    nodes: set[int] = field(default_factory=set)
    partitions: set[int] = field(default_factory=set)  # the partition ids its entries say


@dataclass
class EgressReport:
    logs: list[str]
    deviations: list[Deviation] = field(default_factory=list)
    sites: dict[str, SiteStats] = field(default_factory=dict)  # by site id

    @property
    def ok(self) -> bool:
        return not self.deviations and bool(self.logs)

    @property
    def messages(self) -> int:
        return sum(s.messages for s in self.sites.values())

    def to_dict(self) -> dict[str, Any]:
        sites = {
            k: {**asdict(s), "nodes": sorted(s.nodes), "partitions": sorted(s.partitions)}
            for k, s in sorted(self.sites.items())
        }
        return {
            "ok": self.ok,
            "messages": self.messages,
            "logs": self.logs,
            "sites": sites,
            "deviations": [asdict(d) for d in self.deviations],
        }

    def summary(self) -> str:
        verdict = "OK" if self.ok else f"{len(self.deviations)} DEVIATION(S)"
        if not self.logs:
            verdict = "NO LOGS FOUND"
        lines = [f"egress audit: {verdict}: {self.messages} messages in {len(self.logs)} log(s)"]
        for site, s in sorted(self.sites.items()):
            kinds = ", ".join(f"{n} {t}" for t, n in sorted(s.by_type.items()))
            lines.append(
                f"  {site}: {s.messages} messages ({kinds}), {s.total_bytes:,} bytes "
                f"({s.array_bytes:,} in {s.tensors} tensors)"
            )
        lines += [f"  - {d}" for d in self.deviations[:50]]
        if len(self.deviations) > 50:
            lines.append(f"  ... and {len(self.deviations) - 50} more (see egress_audit.json)")
        return "\n".join(lines)


def expected_tensors(
    cfg: ExperimentConfig,
    shape: Shape,
    num_classes: int,
    *,
    widths: tuple[int, int] | None = None,
) -> dict[str, tuple[int, ...]]:
    """Name -> shape of every tensor a train reply must carry for this config (a DGM
    generator: at ``widths``, the shapes the server gave it after some task)."""
    out = {
        f"solver.{k}": tuple(v.shape)
        for k, v in build_solver(cfg, shape, num_classes).state_dict().items()
    }
    if cfg.uses_generator and not cfg.releases_statistics:  # (a release: below)
        gen = build_generator(cfg, shape, num_classes)
        if widths is not None and isinstance(gen, DGMGenerator):
            widen_(gen, widths)
        out.update({f"generator.{k}": tuple(v.shape) for k, v in gen.state_dict().items()})
    return out


def registered_architectures(
    cfg: ExperimentConfig, shape: Shape, num_classes: int, summary: Mapping[str, Any]
) -> list[dict[str, tuple[int, ...]]]:
    """Every architecture the run's server registered: the initial one, and for DGM the
    grown generator after every task (``generator_sizes`` of the run's summary) and the
    packed generator sites send in every task (``generator_upload_shapes``)."""
    out = [expected_tensors(cfg, shape, num_classes)]
    for size in summary.get("generator_sizes") or []:
        widths = (int(size["c1"]), int(size["c2"]))
        out.append(expected_tensors(cfg, shape, num_classes, widths=widths))
    solver = {k: v for k, v in out[0].items() if k.startswith("solver.")}
    for packed in summary.get("generator_upload_shapes") or []:  # DGM: what sites send
        out.append({**solver, **{k: tuple(v) for k, v in packed.items()}})
    if cfg.releases_statistics:  # a release: a task's classes
        size = 2 * cfg.embedding.features + 1
        extra = size if cfg.solver_traits.solved else 0  # (the Gram's rows)
        t = cfg.tasks  # (embedding runs are class-incremental: per-task replay)
        groups = parse_class_groups(t.class_order, num_classes, t.classes_per_task, t.num_tasks)
        rows = sorted({len(g) + extra for g in groups})
        out += [{**solver, EMBEDDING_KEY: (k, size)} for k in rows]
    return out


def metric_allowed(message_type: str, name: str, cfg: ExperimentConfig | None = None) -> bool:
    """Whether a ``message_type`` reply may carry metric ``name``: declared in
    common.protocol and, under DP, released by the run's configuration."""
    declared = metric_declared(message_type, name)
    if declared is None:
        return False
    if message_type != "train":
        return True  # (an evaluate reply under DP is checked as a whole: evaluation_allowed)
    under_dp = allowed_train_metrics(cfg) if cfg is not None else None
    if declared.under_dp == NEVER_DP:  # class counts: replay.mixture = "class-counts", no DP
        return under_dp is None and (cfg is None or cfg.replay.mixture == "class-counts")
    return under_dp is None or name in under_dp


def _is_number(value: object) -> bool:
    ok = isinstance(value, int | float) and not isinstance(value, bool)
    return ok and math.isfinite(value)  # type: ignore[arg-type]


Expected = Mapping[str, tuple] | Sequence[Mapping[str, tuple]]


def _tensor_problems(tensors: list[Mapping[str, Any]], expected: Expected) -> list[str]:
    """Problems against the registered architecture that fits best (none: one fits)."""
    if isinstance(expected, Mapping):
        return _problems_against(tensors, expected)
    found = [_problems_against(tensors, e) for e in expected]
    return min(found, key=len) if found else ["no registered architecture"]


def _problems_against(tensors: list[Mapping[str, Any]], expected: Mapping[str, tuple]) -> list[str]:
    problems = []
    names = [str(t.get("name")) for t in tensors]
    extra = sorted(set(names) - set(expected))
    missing = sorted(set(expected) - set(names))
    if extra:
        problems.append(f"scholar carries tensors not in the architecture: {extra[:10]}")
    if missing:
        problems.append(f"scholar lacks tensors of the architecture: {missing[:10]}")
    if len(names) != len(set(names)):
        problems.append("scholar names a tensor twice")
    for t in tensors:
        name, want = str(t.get("name")), expected.get(str(t.get("name")))
        shape = tuple(t.get("shape") or ())
        if want is not None and shape != want:
            problems.append(f"tensor {name} has shape {list(shape)}, expected {list(want)}")
        if t.get("dtype") != FLOAT32:
            problems.append(f"tensor {name} has dtype {t.get('dtype')}, expected float32")
        elif t.get("bytes") != 4 * math.prod(shape):
            problems.append(f"tensor {name}: {t.get('bytes')} bytes do not match its shape")
    return problems


def _metric_problems(
    message_type: str, values: Mapping[str, Any], cfg: ExperimentConfig | None
) -> list[str]:
    problems = []
    for name, value in values.items():
        if not metric_allowed(message_type, name, cfg):
            where = " under DP (dp.release-metrics)" if cfg is not None else ""
            problems.append(f"metric {name!r} is not on the {message_type} allow-list{where}")
        if not _is_number(value):
            problems.append(f"metric {name!r} is {value!r}, not a finite scalar number")
    return problems


def _site_problems(values: Mapping[str, Any]) -> list[str]:
    site_id = values.get("site-id")
    try:
        if set(values) != {"site-id"} or not isinstance(site_id, str):
            raise ValueError("not one string")
        check_site_id(site_id)  # the one rule a site id follows (common.privacy.ledger)
    except ValueError:
        return [f"site record must hold one site-id string, got {dict(values)!r}"]
    return []


def _secagg_problems(values: Mapping[str, Any]) -> list[str]:
    """A SecAgg+ record holds keys, encrypted shares and masked integers (logged as their
    sizes and digests) and site numbers: nothing a reader could take a value from."""

    def plain(v: Any) -> bool:
        if isinstance(v, list):
            return all(plain(x) for x in v)
        digest = isinstance(v, Mapping) and set(v) == {"bytes", "sha256"}
        return digest or (isinstance(v, int) and not isinstance(v, bool))

    bad = sorted(k for k, v in values.items() if not plain(v))
    return [f"SecAgg+ record holds values other than bytes and integers: {bad}"] if bad else []


def message_problems(
    entry: Mapping[str, Any],
    expected: Expected,
    cfg: ExperimentConfig | None = None,
) -> list[str]:
    """Everything wrong with one logged message (empty: it is allowed); with ``cfg``, the
    run's DP rules for metrics apply."""
    mtype = str(entry.get("message_type"))
    records = entry.get("records") or []
    names = [str(r.get("name")) for r in records]
    spec = reply_spec(mtype, set(names))
    if spec is None:
        return [f"message type {mtype!r} may not leave a site"]
    if mtype == "evaluate" and cfg is not None and not evaluation_allowed(cfg):
        return ["federated evaluation under DP without dp.release-metrics='evaluation'"]
    allowed = spec.allowed
    required = {r.name for r in spec.required}
    problems = []
    if len(set(names)) != len(names) or not required <= set(names) <= set(allowed):
        problems.append(
            f"records {sorted(names)}: required {sorted(required)}, allowed {sorted(allowed)}"
        )
    tensors: list[Mapping[str, Any]] = []  # of every part record: one scholar
    for rec in records:
        name, kind = rec.get("name"), rec.get("kind")
        if name not in allowed:
            continue
        if kind != allowed[name]:
            problems.append(f"record {name!r} is a {kind} record, expected {allowed[name]}")
        elif kind == "array":
            part = list(rec.get("tensors") or [])
            others = [str(t.get("name")) for t in part if part_of(str(t.get("name"))) != name]
            if others:
                problems.append(f"record {name!r} carries tensors of another part: {others[:5]}")
            tensors += part
        elif kind == "config" and name == SECAGG.name:
            problems += _secagg_problems(rec.get("values") or {})
        elif kind == "config":
            problems += _site_problems(rec.get("values") or {})
        else:
            problems += _metric_problems(mtype, rec.get("values") or {}, cfg)
    if any(r.get("kind") == "array" for r in records):
        problems += _tensor_problems(tensors, expected)
    return problems


def check_egress(
    log_paths: Iterable[str | Path],
    *,
    cfg: ExperimentConfig,
    shape: Shape,
    num_classes: int,
    runs: Iterable[int] | None = None,
    architectures: Sequence[Mapping[str, tuple]] | None = None,
) -> EgressReport:
    """Compare every message of every log with the protocol (see the module docstring).
    The logs must be of one Flower run, or of the ``runs`` that worked on one resumed run.
    ``architectures``: every one the run registered (:func:`registered_architectures`;
    default: the config's initial one)."""
    expected: Expected = architectures or expected_tensors(cfg, shape, num_classes)
    paths = sorted(Path(p) for p in log_paths)
    report = EgressReport(logs=[str(p) for p in paths])
    run_ids: set[int] = set()
    for path in paths:
        match = SITE_FILE.fullmatch(path.name)
        site = path.stem  # EgressLog names every log by its site id
        for index, entry in enumerate(EgressLog(path).entries()):
            mtype = str(entry.get("message_type"))
            stats = report.sites.setdefault(site, SiteStats())
            stats.messages += 1
            stats.by_type[mtype] = stats.by_type.get(mtype, 0) + 1
            stats.total_bytes += int(entry.get("total_bytes", 0))
            stats.array_bytes += int(entry.get("array_bytes", 0))
            stats.tensors += sum(len(r.get("tensors") or []) for r in entry.get("records") or [])
            stats.nodes.add(int(entry.get("node_id", -1)))
            stats.partitions.add(int(entry.get("partition_id", -1)))
            problems = message_problems(entry, expected, cfg)
            if match and entry.get("partition_id") != int(match.group(1)):
                problems.append(f"entry says partition {entry.get('partition_id')}, log is {site}")
            if entry.get("site_id", path.stem) != path.stem:
                problems.append(f"entry says site {entry.get('site_id')!r}, log is {path.stem!r}")
            run_ids.add(int(entry.get("run_id", -1)))
            report.deviations += [Deviation(site, index, mtype, p, str(path)) for p in problems]
    allowed = set(runs) if runs is not None else None
    if (allowed is None and len(run_ids) > 1) or (allowed is not None and run_ids - allowed):
        report.deviations.append(
            Deviation("-", -1, "-", f"logs mix runs {sorted(run_ids)}", report.logs[0])
        )
    return report


def compare_with_server(report: EgressReport, rounds: Iterable[Mapping[str, Any]]) -> None:
    """Add a deviation for every node whose train replies the server accepted (per
    ``rounds.jsonl``) outnumber the train replies in its egress log: a reply left that
    was not logged. Nodes without a log here (other machines) are not judged."""
    logged: dict[int, int] = {}
    for s in report.sites.values():
        for node in s.nodes:
            logged[node] = logged.get(node, 0) + s.by_type.get("train", 0)
    received: dict[int, int] = {}
    for r in rounds:
        for reply in r.get("sites") or []:
            node = int(reply.get("node_id", -1))
            received[node] = received.get(node, 0) + 1
    for node, n in sorted(received.items()):
        if node in logged and n > logged[node]:
            problem = f"server accepted {n} train replies of node {node}, log has {logged[node]}"
            report.deviations.append(Deviation("-", -1, "train", problem, ""))
