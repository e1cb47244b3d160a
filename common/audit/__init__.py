"""Privacy audits of trained sites: membership inference and one-run canary auditing.

loss_attack(model, members, non_members, device=dev)                   # Yeom et al. 2018
lira_attacks(model, train_fn, candidates=c, is_member=mask, device=dev)  # Carlini et al. 2022
generator_leak_attack(generator, members, non_members, device=dev)      # Chen et al. 2020
canaries = make_canaries(shape, num_classes, m=1000, seed=0)            # Steinke et al. 2023
best_lower_bound(canary_scores(model, canaries, device=dev), canaries.include, delta=1e-5)
write_report({"loss": result, ...}, run_dir / "audit", title=..., accountant_epsilon=...)
"""

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .canaries import (
        Canaries,
        CanaryBound,
        best_lower_bound,
        canary_scores,
        count_correct,
        epsilon_from_guesses,
        epsilon_lower_bound,
        make_canaries,
        p_value,
    )
    from .generator_leaks import generator_leak_attack, nearest_sample_distance
    from .lira import (
        ShadowStats,
        lira_attack,
        lira_attacks,
        lira_attacks_many,
        lira_scores,
        logit_confidence,
    )
    from .membership import AttackResult, loss_attack, per_example_loss
    from .report import write_report

# the attacks load torch; the package's command-line tools (``fedreplay audit --help``) must
# not: each name is imported from its module on first use
_HOME = {
    **dict.fromkeys(
        ["Canaries", "CanaryBound", "best_lower_bound", "canary_scores", "count_correct",
         "epsilon_from_guesses", "epsilon_lower_bound", "make_canaries", "p_value"],
        "canaries",
    ),
    **dict.fromkeys(["generator_leak_attack", "nearest_sample_distance"], "generator_leaks"),
    **dict.fromkeys(
        ["ShadowStats", "lira_attack", "lira_attacks", "lira_attacks_many", "lira_scores",
         "logit_confidence"],
        "lira",
    ),
    **dict.fromkeys(["AttackResult", "loss_attack", "per_example_loss"], "membership"),
    "write_report": "report",
}  # fmt: skip


def __getattr__(name: str) -> object:
    if name not in _HOME:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    import importlib

    return getattr(importlib.import_module(f"{__name__}.{_HOME[name]}"), name)


__all__ = [
    "AttackResult",
    "Canaries",
    "CanaryBound",
    "ShadowStats",
    "best_lower_bound",
    "canary_scores",
    "count_correct",
    "epsilon_from_guesses",
    "epsilon_lower_bound",
    "generator_leak_attack",
    "lira_attack",
    "lira_attacks",
    "lira_attacks_many",
    "lira_scores",
    "logit_confidence",
    "loss_attack",
    "make_canaries",
    "nearest_sample_distance",
    "p_value",
    "per_example_loss",
    "write_report",
]
