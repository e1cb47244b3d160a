"""What each site did: trained, sat out, failed or refused, and why, every round and over
the run.

A run used to say "2 of 2 sites answered" while every site sat out, and "completed ... 2
sites" while one of them failed every round. Here every sampled site of a round gets one
status:

- ``trained``: its update was accepted (``why``: how hard the bounds cut it, if they did);
- ``sat out``: it answered with no update (too few records for the task under
  ``dp.min-records``, or none of the task's classes);
- ``failed``: an error reply (its reason, without local paths) or no reply in time;
- ``refused``: the server refused its reply (malformed, a site id owned by another node, a
  privacy claim that does not add up).

A round's statuses go to ``rounds.jsonl`` (``site_status``), the console's round line
counts them, and :func:`site_table` sums them per site for ``summary.json`` (``sites``) and
the report, with the reasons, how often the bounds cut the site hard, and a suspicion
score: the share of its rounds refused or cut hard. A failure is keyed by the site id the
node proved in an accepted reply, else ``node-<id>``: a reply claiming another site's id is
never counted against that site.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping
from typing import Any

from server.round_record import RoundRecord, site_key

TRAINED, SAT_OUT, FAILED, REFUSED = "trained", "sat out", "failed", "refused"
STATUSES = (TRAINED, SAT_OUT, FAILED, REFUSED)
HARD_CLIP = 0.5  # an update scaled below half its norm was "cut hard"
SAT_OUT_WHY = "sent no update: too few records of the task (dp.min-records) or none"
MAX_REASONS = 5


def _cut_hard(influence: Mapping[str, Any]) -> str:
    """Why the bounds cut an accepted update hard ('' when they did not)."""
    why = []
    if influence.get("weight_capped"):
        why.append("weight capped at the count it declared on joining the task")
    clipped = influence.get("clipped") or {}
    hard = {part: factor for part, factor in clipped.items() if factor < HARD_CLIP}
    if hard:
        parts = ", ".join(f"{p} x{f:.2f}" for p, f in sorted(hard.items()))
        why.append(f"update clipped to the round's reference norm ({parts})")
    against = influence.get("against") or {}
    if against:
        why.append(pulled_against(against))
    return "; ".join(why)


def pulled_against(against: Mapping[str, float]) -> str:
    """Why parts of an update were left out (server.robust.aggregation.pulling_against)."""
    parts = ", ".join(f"{p} {c:.2f}" for p, c in sorted(against.items()))
    return f"left out: its update pulls against every other site's (best cosine {parts})"


def node_names(proven: Mapping[str, int], claimed: Mapping[int, str]) -> dict[int, str]:
    """node -> the name its status is kept under: the site id it proved (an accepted reply,
    or a registered key), else ``node-<id> (says <claim>)`` for an id it only claimed."""
    names = {n: f"node-{n} (says {s})" for n, s in claimed.items()}
    return names | {n: s for s, n in proven.items()}


def round_status(rec: RoundRecord, site_of: Mapping[int, str]) -> dict[str, dict[str, str]]:
    """Each sampled site's status in round ``rec`` (``site_of``: :func:`node_names`)."""
    out: dict[str, dict[str, str]] = {}
    for reply in rec.replies:
        if reply.metrics.get("num-examples", 0.0) > 0:
            out[reply.key] = {"status": TRAINED, "why": _cut_hard(reply.influence)}
        else:
            out[reply.key] = {"status": SAT_OUT, "why": SAT_OUT_WHY}
    for node, reason in sorted(rec.failures.items()):
        status = REFUSED if reason.startswith("rejected:") else FAILED
        out[site_of.get(node, f"node-{node}")] = {"status": status, "why": reason}
    return out


def count_line(statuses: Mapping[str, Mapping[str, str]]) -> str:
    """``2 trained, 1 sat out`` (the round's console line)."""
    counts = Counter(s["status"] for s in statuses.values())
    return ", ".join(f"{counts[s]} {s}" for s in STATUSES if counts[s]) or "no site sampled"


def _row() -> dict[str, Any]:
    return {s: 0 for s in STATUSES} | {
        "cut_hard": 0,
        "replay_left_out": 0,
        "replies": 0,
        "bytes_up": 0.0,
        "bytes_down": 0.0,
        "epsilon": None,  # lifetime, as the site's ledger reported it (None: no DP reply)
        "budget_left": None,
    }


def site_table(
    rounds: list[dict[str, Any]],
    replay_checks: list[dict[str, Any]] = (),  # type: ignore[assignment]
) -> dict[str, dict[str, Any]]:
    """Per site over the run: rounds of each status, times cut hard, tasks whose replay
    left its generator out (server.robust.replay_check), the most frequent reasons, a suspicion
    score ((refused + cut hard + left out) / rounds) and a one-word outcome; and what it
    sent that was read: replies, bytes up and down as the site reported them, and the
    lifetime epsilon it reported spent and left (DP runs)."""
    table: dict[str, dict[str, Any]] = {}
    reasons: dict[str, Counter[str]] = {}
    for check in replay_checks:
        for site, why in check.get("left_out", {}).items():
            table.setdefault(site, _row())["replay_left_out"] += 1
            reasons.setdefault(site, Counter())[f"task {check['task']}: generator {why}"] += 1
    for entry in rounds:
        for site, st in entry.get("site_status", {}).items():
            row = table.setdefault(site, _row())
            row[st["status"]] += 1
            if st["status"] == TRAINED and st["why"]:
                row["cut_hard"] += 1
            if st["why"]:
                reasons.setdefault(site, Counter())[st["why"][:300]] += 1
        for reply in entry.get("sites", []):  # the replies read: what each site sent
            row = table.setdefault(site_key(reply.get("site_id"), reply.get("node_id")), _row())
            m = reply.get("metrics", {})
            row["replies"] += 1
            row["bytes_up"] += float(m.get("bytes-up", 0.0))
            row["bytes_down"] += float(m.get("bytes-down", 0.0))
            if "dp-epsilon" in m:
                row["epsilon"] = max(float(row["epsilon"] or 0.0), float(m["dp-epsilon"]))
                row["budget_left"] = float(m.get("dp-budget-left", 0.0))
    for site, row in table.items():
        n = sum(row[s] for s in STATUSES)
        row["rounds"] = n
        bad = row[REFUSED] + row["cut_hard"] + row["replay_left_out"]
        row["suspicion"] = round(min(1.0, bad / n), 3) if n else 0.0
        row["reasons"] = dict(reasons.get(site, Counter()).most_common(MAX_REASONS))
        row["outcome"] = outcome(row)
    return dict(sorted(table.items()))


def outcome(row: Mapping[str, int]) -> str:
    """``trained`` (every round), ``trained with failures``, or what it mostly did."""
    if row[TRAINED] and row[TRAINED] == row["rounds"]:
        return TRAINED
    if row[TRAINED]:
        return f"{TRAINED} with {', '.join(s for s in STATUSES[1:] if row[s])}"
    return max(STATUSES[1:], key=lambda s: row[s])


def site_lines(table: Mapping[str, Mapping[str, Any]]) -> list[str]:
    """One console line per site that did not train every round (with its main reason)."""
    lines = []
    for site, row in table.items():
        if row["outcome"] == TRAINED and not row["cut_hard"] and not row["replay_left_out"]:
            continue
        counts = ", ".join(f"{row[s]} {s}" for s in STATUSES if row[s])
        main = next(iter(row["reasons"]), "")
        lines.append(f"{site}: {row['outcome']} ({counts} of {row['rounds']} rounds)"
                     + (f"; {main}" if main else ""))  # fmt: skip
    return lines
