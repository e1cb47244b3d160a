"""The privacy-audit report of a run: ``audit.json``, ``audit.md`` and ``roc.png``.

Results are keyed by a label (e.g. ``"site-0 / solver / lira_online"``); each value is an
:class:`AttackResult`, its ``to_dict()``, a :class:`CanaryBound` or its ``to_dict()``.
Attacks go into the AUC / TPR-at-low-FPR table and the ROC figure (log-log axes, as in
Carlini et al. 2022); canary bounds are set against the accountant's epsilon.
"""

from __future__ import annotations

import json
import math
import textwrap
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from common.audit.canaries import CanaryBound
from common.audit.membership import AttackResult
from common.results import dumps_json

SCOPE = "sample-level, per site"  # when the run folder does not say
Result = AttackResult | CanaryBound | Mapping[str, Any]


def _as_dict(result: Result) -> dict[str, Any]:
    if isinstance(result, AttackResult | CanaryBound):
        return result.to_dict()
    return dict(result)


def _split(results: Mapping[str, Result]) -> tuple[dict[str, dict], dict[str, dict]]:
    attacks, bounds = {}, {}
    for label, result in results.items():
        d = _as_dict(result)
        if "epsilon_lower_bound" in d:
            bounds[label] = d
        elif "auc" in d:
            attacks[label] = d
        else:
            raise ValueError(f"result {label!r} is neither an attack nor a canary bound")
    return attacks, bounds


def _fmt(value: float | None, spec: str = ".3f") -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "n/a"
    return format(value, spec)


def _verdict(bound: float, accountant_epsilon: float | None, reach: float | None = None) -> str:
    if accountant_epsilon is None:
        return "no DP guarantee claimed"
    if bound > accountant_epsilon:
        return "**VIOLATION**: exceeds the accountant's ε"
    if reach is not None and not math.isnan(reach) and accountant_epsilon > reach:
        return f"**not testable at this ε** (this audit can certify at most {reach:.2f})"
    return "consistent (below the accountant's ε)"


def _markdown(
    title: str,
    attacks: dict[str, dict],
    bounds: dict[str, dict],
    *,
    accountant_epsilon: float | None,
    delta: float | None,
    accountant: str | None,
    scope: str = SCOPE,
    non_members: str | None = None,
) -> str:
    lines = [f"# {title}", "", f"Scope of the accountant's ε: {scope}."]
    if accountant_epsilon is None:
        lines.append("Training was not differentially private (no accountant ε).")
    else:
        acc = (accountant or "unknown").upper()
        lines.append(
            f"Accountant: ε = {accountant_epsilon:.3f} at δ = {_fmt(delta, '.3g')} ({acc})."
        )
    lines += ["", "## Membership inference", ""]
    if attacks and non_members:
        lines += [f"Non-members: {non_members}.", ""]
    if attacks:
        lines += [
            "| attack | members | non-members | AUC | TPR@0.1%FPR | TPR@1%FPR |",
            "| --- | ---: | ---: | ---: | ---: | ---: |",
        ]
        for label, d in attacks.items():
            lines.append(
                f"| {label} | {d.get('num_members', '?')} | {d.get('num_non_members', '?')} "
                f"| {_fmt(d['auc'])} | {_fmt(d.get('tpr_at_0.1%_fpr'), '.2%')} "
                f"| {_fmt(d.get('tpr_at_1%_fpr'), '.2%')} |"
            )
        lines += ["", "AUC 0.5 and TPR = FPR are chance; see `roc.png`."]
    else:
        lines.append("No attacks were run.")
    lines += ["", "## Empirical ε lower bound (one-run canary audit)", ""]
    if bounds:
        lines += [
            "| audit | canaries | k+ / k- | correct | confidence | δ | ε lower bound "
            "| reachable at most | accountant ε | verdict |",
            "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- |",
        ]
        for label, d in bounds.items():
            eps = float(d["epsilon_lower_bound"])
            reach = d.get("reachable_epsilon")
            lines.append(
                f"| {label} | {d.get('num_canaries', '?')} "
                f"| {d.get('k_plus', '?')} / {d.get('k_minus', '?')} "
                f"| {d.get('correct', '?')} / {d.get('guesses', '?')} "
                f"| {_fmt(d.get('confidence'), '.0%')} | {_fmt(d.get('delta'), '.3g')} "
                f"| {eps:.3f} | {_fmt(reach)} | {_fmt(accountant_epsilon)} "
                f"| {_verdict(eps, accountant_epsilon, reach)} |"
            )
        lines += [
            "",
            "Lower bound of Steinke, Nasr & Jagielski (2023) at the stated confidence; "
            "rows marked rigorous=false in `audit.json` chose (k+, k-) without a union bound. "
            "'Reachable at most' is the bound a perfect attack would give with these canaries "
            "and δ: a claimed ε above it cannot be tested by this audit.",
        ]
    else:
        lines.append("No canary audit was run.")
    return "\n".join(lines) + "\n"


def _plot_roc(attacks: dict[str, dict], path: Path, title: str) -> Path:
    fig = Figure(figsize=(5.5, 5.0), dpi=120, layout="constrained")
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    smallest = 1e-3
    for label, d in attacks.items():
        roc = d.get("roc")
        if not roc:
            continue
        fpr, tpr = np.asarray(roc["fpr"], float), np.asarray(roc["tpr"], float)
        ok = (fpr > 0) & (tpr > 0)
        n_out = d.get("num_non_members")
        if n_out:
            smallest = min(smallest, 0.5 / n_out)
            ok &= fpr >= 1.0 / n_out  # below one false positive the curve is not measured
        ax.plot(fpr[ok], tpr[ok], label=f"{label} (AUC {d['auc']:.3f})", drawstyle="steps-post")
    ax.plot([1e-6, 1], [1e-6, 1], color="gray", linestyle="--", linewidth=1, label="chance")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlim(smallest, 1)
    ax.set_ylim(smallest, 1.05)
    ax.set_xlabel("false positive rate")
    ax.set_ylabel("true positive rate")
    ax.set_title(textwrap.fill(title, 48), fontsize=10)
    ax.grid(alpha=0.3, which="both")
    ax.legend(loc="lower right", fontsize="small")
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, format="png", facecolor="white")
    return path


def write_report(
    results: Mapping[str, Result],
    out_dir: str | Path,
    *,
    title: str,
    accountant_epsilon: float | None,
    delta: float | None,
    accountant: str | None,
    scope: str = SCOPE,
    non_members: str | None = None,
) -> dict[str, Path]:
    """Write ``audit.json``, ``audit.md`` and ``roc.png`` into ``out_dir``; return their paths."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    attacks, bounds = _split(results)
    payload = {
        "title": title,
        "scope": scope,
        "non_members": non_members,
        "accountant": {"name": accountant, "epsilon": accountant_epsilon, "delta": delta},
        "attacks": attacks,
        "canary_bounds": bounds,
        "max_epsilon_lower_bound": max(
            (float(d["epsilon_lower_bound"]) for d in bounds.values()), default=None
        ),
    }
    paths = {"json": out / "audit.json", "markdown": out / "audit.md", "roc": out / "roc.png"}
    paths["json"].write_text(dumps_json(payload) + "\n")
    json.loads(paths["json"].read_text())  # fail here, not in a reader, on bad JSON
    paths["markdown"].write_text(
        _markdown(
            title,
            attacks,
            bounds,
            accountant_epsilon=accountant_epsilon,
            delta=delta,
            accountant=accountant,
            scope=scope,
            non_members=non_members,
        )
    )
    _plot_roc(attacks, paths["roc"], title)
    return paths
