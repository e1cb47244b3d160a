"""One self-contained HTML page per run folder: ``fedreplay report RUN_DIR``.

Everything a person looks for after a run, on one page that opens without a network
(images embedded as data URIs, no scripts, no external styles): the outcome, the accuracy
matrix and curves, forgetting, generated samples per task, the privacy ledger and its
epsilon plot, the egress audit's verdict, the model audit when one was run, and the
configuration. Every run writes ``report.html`` at its end; run the command again after an
audit to include it.
"""

from __future__ import annotations

import base64
import html
import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from common.fileio import atomic_write_text

REPORT = "report.html"
FIGURES = (  # (file in the run folder, caption)
    ("accuracy_curve.png", "Average accuracy after each task"),
    ("accuracy_matrix.png", "Accuracy on every task after each task"),
    ("rounds.png", "Accuracy per round"),
    ("samples.png", "Generated samples per task (what the sites replay)"),
    ("epsilon.png", "Privacy spent per round"),
    ("audit/roc.png", "Membership inference against the released models"),
)
STYLE = """
body{font-family:system-ui,sans-serif;margin:2em auto;max-width:1100px;color:#222}
h1{font-size:1.5em}h2{font-size:1.2em;margin-top:1.6em;border-bottom:1px solid #ccc}
table{border-collapse:collapse;margin:.5em 0}td,th{border:1px solid #ccc;padding:.25em .6em;
text-align:right}th{background:#f3f3f3}td.k{text-align:left}.ok{color:#176d2c}.bad{color:#a4161a}
figure{margin:1em 0}img{max-width:100%}figcaption{color:#555;font-size:.9em}
"""


def _read(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def _pct(v: Any) -> str:
    return "–" if v is None else f"{100 * float(v):.1f}%"


def _table(rows: list[list[Any]], header: list[str] | None = None) -> str:
    out = ["<table>"]
    if header:
        out.append("<tr>" + "".join(f"<th>{html.escape(str(h))}</th>" for h in header) + "</tr>")
    for row in rows:
        cells = [f'<td class="k">{html.escape(str(row[0]))}</td>']
        cells += [f"<td>{html.escape(str(c))}</td>" for c in row[1:]]
        out.append("<tr>" + "".join(cells) + "</tr>")
    return "\n".join([*out, "</table>"])


def _figure(path: Path, caption: str) -> str:
    data = base64.b64encode(path.read_bytes()).decode("ascii")
    alt = html.escape(caption)
    return (
        f'<figure><img alt="{alt}" src="data:image/png;base64,{data}">'
        f"<figcaption>{alt}</figcaption></figure>"
    )


def _outcome(s: Mapping[str, Any]) -> str:
    status = str(s.get("status"))
    css = "ok" if status == "completed" else "bad"
    rows = [
        ["status", f"{status}" + (f": {s['failure_reason']}" if s.get("failure_reason") else "")],
        ["method / dataset", f"{s.get('method')} on {s.get('dataset')} ({s.get('scenario')})"],
        ["tasks (classes)", _tasks(s.get("tasks"))],
        ["final average accuracy", _pct(s.get("final_average_accuracy"))],
        ["newest task's accuracy", _pct(_newest(s))],
        ["privacy", _guarantee(s)],
        ["average forgetting", _pct(s.get("average_forgetting"))],
        ["sites / rounds", f"{s.get('num_sites')} / {s.get('rounds')}"],
        ["aggregation", s.get("aggregation", "–")],
        ["wall time", f"{float(s.get('wall_time_s', 0)):.0f} s"],
        ["seed", s.get("seed", "–")],
        ["run id / key", f"{s.get('run_id', '–')} / {s.get('run_key', '–')}"],
        ["provenance", _provenance(s.get("provenance") or {})],
    ]
    return f'<p class="{css}"><b>{html.escape(status)}</b></p>' + _table(rows)


def _tasks(tasks: Any) -> str:
    if not tasks:
        return "not recorded (a run of an older fedreplay)"
    return " · ".join(f"{i + 1}: {t}" for i, t in enumerate(tasks))


def _provenance(p: Mapping[str, str]) -> str:
    if not p:
        return "not recorded (a run of an older fedreplay)"
    stack = ", ".join(f"{k} {p[k]}" for k in ("flwr", "torch", "opacus") if k in p)
    return (
        f"fedreplay {p.get('fedreplay')} (commit {p.get('commit')}), {stack}; "
        f"{p.get('date')} on {p.get('machine')}"
    )


def _newest(s: Mapping[str, Any]) -> float | None:
    """The last task's accuracy at the end (an average can hide a newest task pulled down)."""
    matrix = s.get("accuracy_matrix") or []
    return matrix[-1][-1] if matrix and matrix[-1] else None


def _guarantee(s: Mapping[str, Any]) -> str:
    """epsilon and delta with their scope, or that there is none."""
    if s.get("dp_scope") is None:
        return "no differential privacy"
    eps, delta = s.get("dp_epsilon"), s.get("dp_delta")
    shown = f"epsilon = {float(eps):.2f}" if eps is not None else "epsilon not reported"
    if delta is not None:
        shown += f", delta = {float(delta):.0e}"
    own = s.get("dp_epsilon_own_noise")
    if eps is not None and own is not None and float(own) > float(eps) + 1e-9:
        shown += (  # distributed noise under secure aggregation
            f" against whoever sees only the secure sum; epsilon = {float(own):.2f} against a "
            "server colluding with every other site"
        )
    return f"{shown} ({s['dp_scope']})"


def _sites(s: Mapping[str, Any], egress: Mapping[str, Any] | None = None) -> str:
    """Per site: what it did over the run and why (server.sites.status), and what its own
    egress log says it sent (``fedreplay audit egress``: messages, bytes), where audited."""
    table = s.get("sites") or {}
    if not table:
        return "<p>No per-site record in this run.</p>"
    logged = (egress or {}).get("sites") or {}
    rows = [
        [
            site,
            row.get("outcome", "–"),
            *(
                row.get(k, 0)
                for k in ("trained", "sat out", "failed", "refused", "cut_hard", "replay_left_out")
            ),
            f"{float(row.get('suspicion', 0.0)):.2f}",
            row.get("replies", "–"),
            byte_size(row.get("bytes_up")),
            byte_size(row.get("bytes_down")),
            _epsilon(row.get("epsilon")),
            _epsilon(row.get("budget_left")),
            *_own_log(logged.get(site), audited=egress is not None),
            next(iter(row.get("reasons") or {}), ""),
        ]
        for site, row in table.items()
    ]
    header = ["site", "outcome", "trained", "sat out", "failed", "refused", "cut hard",
              "generator left out", "suspicion", "replies read", "sent", "received",
              "ε spent (lifetime)", "ε left", "messages (its log)", "sent (its log)",
              "main reason"]  # fmt: skip
    note = (
        "<p>The last columns but one come from each site's own egress log, as "
        "<code>fedreplay audit egress</code> read it; run it to fill them (a deployed site's "
        "log stays on its disk: its operator runs the audit there).</p>"
    )
    return _table(rows, header) + note


def _own_log(stats: Mapping[str, Any] | None, *, audited: bool) -> list[str]:
    """(messages, bytes) a site's own egress log records: '-' before an audit, 'no log'
    for a site the audit found no log of."""
    if stats is None:
        return ["no log", "no log"] if audited else ["-", "-"]
    return [str(stats.get("messages", 0)), byte_size(stats.get("total_bytes"))]


def byte_size(v: Any) -> str:
    """``512 B``, ``5.8 MiB`` (this report's sites table, ``fedreplay compare``)."""
    if not isinstance(v, int | float):
        return "-"
    for unit in ("B", "KiB", "MiB", "GiB"):
        if abs(v) < 1024 or unit == "GiB":
            return f"{v:.0f} {unit}" if unit == "B" else f"{v:.1f} {unit}"
        v /= 1024
    return "-"  # pragma: no cover


def _epsilon(v: Any) -> str:
    return "–" if v is None else f"{float(v):.3f}"


def _matrix(s: Mapping[str, Any]) -> str:
    matrix = s.get("accuracy_matrix") or []
    n = len(matrix)
    rows = [[f"after task {i + 1}", *(_pct(v) for v in row)] for i, row in enumerate(matrix)]
    forgetting = s.get("forgetting_per_task") or []
    if forgetting:
        rows.append(["forgetting", *(_pct(v) for v in forgetting), *([""] * (n - len(forgetting)))])
    return _table(rows, ["", *(f"task {j + 1}" for j in range(n))])


def _privacy(run: Path, s: Mapping[str, Any]) -> str:
    if s.get("dp_scope") is None:
        return "<p>No differential privacy in this run.</p>"
    rows = [[k, v] for k, v in s.items() if k.startswith("dp_") and not isinstance(v, dict)]
    out = _table(rows)
    ledger = _read(run / "privacy_ledger.json") or {}
    sites = ledger.get("sites") or {}
    if sites:
        last = [
            [
                site,
                f"{rows_[-1]['epsilon']:.3f}",
                f"{rows_[-1].get('run_epsilon', rows_[-1]['epsilon']):.3f}",
                f"{rows_[-1]['budget_left']:.3f}" if "budget_left" in rows_[-1] else "–",
                len(rows_),
            ]
            for site, rows_ in sites.items()
        ]
        out += "<p>Each site's budget after the run (its lifetime ledger, all runs on its "
        out += "records):</p>"
        out += _table(
            last,
            ["site", "epsilon (lifetime)", "of it this run", "budget left", "rounds trained"],
        )
    return out


def _audits(run: Path) -> str:
    parts = []
    egress = _read(run / "egress_audit.json")
    if egress is None:
        parts.append("<p>Egress audit: not run (<code>fedreplay audit egress RUN_DIR</code>).</p>")
    else:
        deviations = egress.get("deviations") or []
        verdict = "nothing left a site that the protocol does not allow"
        css = "ok" if not deviations and egress.get("logs") else "bad"
        if deviations:
            verdict = f"{len(deviations)} deviation(s) from the protocol"
        parts.append(f'<p class="{css}">Egress audit: {html.escape(verdict)}.</p>')
    model = _read(run / "audit" / "audit.json")
    if model is None:
        parts.append("<p>Model audit: not run (<code>fedreplay audit models RUN_DIR</code>).</p>")
    else:
        rows = [
            [name, f"{d.get('auc', float('nan')):.3f}"]
            for name, d in (model.get("attacks") or {}).items()
        ]
        parts.append("<p>Model audit (membership inference):</p>" + _table(rows, ["attack", "AUC"]))
        if model.get("max_epsilon_lower_bound") is not None:
            bound = float(model["max_epsilon_lower_bound"])
            parts.append(f"<p>Empirical epsilon lower bound: {bound:.2f}</p>")
    return "\n".join(parts)


def _config(run: Path) -> str:
    """The settings that differ from the defaults first, spelled as a user types them
    (``fed.num-sites``); the rest folded."""
    from common.config import load_config, run_config_of

    cfg = _read(run / "config.json") or {}
    now = run_config_of(cfg)
    defaults = load_config({}).to_run_config()
    changed = [[k, v, defaults.get(k, "–")] for k, v in sorted(now.items()) if defaults.get(k) != v]
    rest = [[k, v] for k, v in sorted(now.items()) if defaults.get(k) == v]
    out = (
        f"<p>{len(changed)} settings differ from the defaults:</p>"
        + _table(changed, ["setting", "this run", "default"])
        if changed
        else "<p>Every setting is the default.</p>"
    )
    if rest:
        out += f"<details><summary>the other {len(rest)} settings (defaults)</summary>"
        out += _table(rest) + "</details>"
    return out


def write_run_report(run_dir: str | Path) -> Path:
    """Write ``report.html`` into the run folder; returns its path."""
    run = Path(run_dir)
    summary = _read(run / "summary.json")
    if summary is None:
        raise ValueError(f"{run} has no readable summary.json: not a finished run folder")
    title = f"{summary.get('experiment', run.name)}: {summary.get('method')}"
    body = [
        f"<h1>{html.escape(title)}</h1><p>{html.escape(str(run))}</p>",
        "<h2>Outcome</h2>",
        _outcome(summary),
        "<h2>Sites</h2>",
        _sites(summary, _read(run / "egress_audit.json")),
        "<h2>Accuracy matrix</h2>",
        _matrix(summary),
        "<h2>Figures</h2>",
        *(_figure(run / name, cap) for name, cap in FIGURES if (run / name).is_file()),
        "<h2>Privacy</h2>",
        _privacy(run, summary),
        "<h2>Audits</h2>",
        _audits(run),
        "<h2>Configuration</h2>",
        _config(run),
    ]
    path = run / REPORT
    atomic_write_text(path, html_page(title, body))
    return path


def html_page(title: str, body: list[str]) -> str:
    """A self-contained page: inline style, no scripts, nothing to fetch."""
    return (
        '<!DOCTYPE html><html lang="en"><head><meta charset="utf-8">'
        f"<title>{html.escape(title)}</title><style>{STYLE}</style></head><body>"
        + "\n".join(body)
        + "</body></html>\n"
    )


def comparison_page(
    header: list[str], rows: list[list[Any]], figures: list[tuple[Path, str]]
) -> str:
    """Several runs side by side (``fedreplay compare``): the table, then the figures."""
    body = ["<h1>Run comparison</h1>", _table(rows, header), "<h2>Figures</h2>"]
    body += [_figure(path, caption) for path, caption in figures if path.is_file()]
    return html_page("Run comparison", body)
