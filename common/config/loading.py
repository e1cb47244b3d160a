"""From ``[tool.flwr.app.config]`` defaults, override files and ``--set`` strings to one
:class:`~common.config.experiment.ExperimentConfig`."""

from __future__ import annotations

import difflib
import tomllib
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import fields, is_dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any, get_type_hints

from common.config.experiment import OWNED_SECTIONS, ExperimentConfig
from common.config.sections import PYPROJECT, ConfigError, Scalar


def _section_types() -> dict[str, type]:
    """``{"data": DataConfig, ...}``: the sections are the dataclass-typed fields of
    :class:`ExperimentConfig` (declared there once), in its order."""
    hints = get_type_hints(ExperimentConfig)
    return {f.name: hints[f.name] for f in fields(ExperimentConfig) if is_dataclass(hints[f.name])}


_SECTIONS = _section_types()


def flatten(table: Mapping[str, Any], prefix: str = "") -> dict[str, Scalar]:
    """Nested TOML tables to Flower's dotted keys: {"data": {"name": x}} -> {"data.name": x}."""
    flat: dict[str, Scalar] = {}
    for key, value in table.items():
        full = f"{prefix}{key}"
        if isinstance(value, Mapping):
            flat.update(flatten(value, prefix=f"{full}."))
        else:
            flat[full] = value
    return flat


@lru_cache(maxsize=4)
def _defaults_from(path: Path) -> dict[str, Scalar]:
    if not path.is_file():
        raise ConfigError(
            f"cannot find the configuration defaults: {path} does not exist. "
            "Install fedreplay from its source tree (pip install -e .) or pass defaults explicitly."
        )
    with path.open("rb") as fh:
        doc = tomllib.load(fh)
    try:
        table = doc["tool"]["flwr"]["app"]["config"]
    except KeyError:
        raise ConfigError(f"{path} has no [tool.flwr.app.config] table") from None
    return flatten(table)


def default_run_config(pyproject: Path = PYPROJECT) -> dict[str, Scalar]:
    """The ``[tool.flwr.app.config]`` defaults as a flat dict (a fresh copy)."""
    return dict(_defaults_from(pyproject))


def read_overrides(path: str | Path) -> dict[str, Scalar]:
    """An override file from simulations/: a TOML file with the app-config keys."""
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"override file {p} does not exist")
    with p.open("rb") as fh:
        try:
            return flatten(tomllib.load(fh))
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"override file {p} is not valid TOML: {exc}") from None


def parse_overrides(text: str) -> dict[str, Scalar]:
    """Parse ``"key=value other=2"`` (Flower's --run-config string syntax)."""
    try:
        return flatten(tomllib.loads("\n".join(_split_assignments(text))))
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"cannot parse overrides {text!r}: {exc}") from None


def user_overrides(files: str | Sequence[str] | None, sets: Sequence[str]) -> dict[str, Scalar]:
    """What a user asked for on a command line: the override files (``--run-config``), in
    order, then each ``--set "k=v k2=v2"``, later ones winning. The one way every command
    reads them."""
    out: dict[str, Scalar] = {}
    for path in [files] if isinstance(files, str) else files or []:
        out.update(read_overrides(path))
    for text in sets:
        out.update(parse_overrides(text))
    return out


def _split_assignments(text: str) -> list[str]:
    parts, current, quote = [], "", ""
    for ch in text:
        if ch in "\"'" and (not quote or quote == ch):
            quote = "" if quote else ch
        if ch.isspace() and not quote:
            if current:
                parts.append(current)
            current = ""
        else:
            current += ch
    if current:
        parts.append(current)
    return parts


def _coerce(key: str, value: Any, default: Scalar) -> Scalar:
    if isinstance(default, bool):
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "false"):
            return value.lower() == "true"
    elif isinstance(default, int):
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
    elif isinstance(default, float):
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
    elif isinstance(default, str) and isinstance(value, (str, int, float)):
        if not isinstance(value, bool):
            return str(value)
    raise ConfigError(
        f"{key}={value!r} has type {type(value).__name__}, expected {type(default).__name__}"
    )


# keys that were removed (most measured no gain; their figures stay in the notebook), with
# the value that meant "off" (None: any value): a run folder written before keeps loading
# for an audit or a resume when it did not use them
RETIRED: dict[str, Scalar | None] = {
    "solver.balance-steps": 0,
    "solver.balance-samples": None,
    "dp.class-histogram": False,
    "dgm.growth": True,
    "dgm.embedding-lr": 0.02,
    "replay.batch-size": 0,  # never set by an experiment: the replay batch is the real one's
    "eval.samples-per-class": 100,  # the replay quality's draws: server.run.federation
    "gan.loss": "bce",  # wgan-gp: never benchmarked, and refused under DP
    "replay.ratio": "auto",  # DGR's 1 / tasks seen; no experiment set another
}


# keys that moved into the section of what they belong to (issue 35: method knobs in the
# method's section; common.config.experiment.OWNED_SECTIONS): a saved run's config is read
# with the new names; a user who types an old one is told the new one
RENAMED: dict[str, str] = {
    "generator.kl-weight": "vae.kl-weight",
    "train.gan-diversity": "gan.diversity",
    "train.gan-loss": "gan.loss",
    "train.gan-labels": "gan.labels",
    "generator.features": "embedding.features",
    "generator.bandwidth": "embedding.bandwidth",
    "generator.fit-steps": "embedding.fit-steps",
    "generator.fit-batch": "embedding.fit-batch",
    "fed.update-clip": "robust.update-clip",
    "fed.weight-cap": "robust.weight-cap",
    "fed.trim-fraction": "robust.trim-fraction",
    "fed.num-malicious": "robust.num-malicious",
    "train.generator-lr": "generator.lr",
    "train.generator-iterations": "generator.iterations",
    "eval.generator-quality": "generator.quality",
    "train.solver-data": "replay.solver-data",
    "solver.ridge": "ridge.penalty",
}


def drop_retired(flat: Mapping[str, Any], *, source: str) -> dict[str, Any]:
    """``flat`` (a saved run's config) without the removed keys and with the moved ones
    under their new names; a ValueError naming the key when the run used a removed one (it
    needs the version that ran it)."""
    out = {RENAMED.get(k, k): v for k, v in flat.items()}
    for key, off in RETIRED.items():
        if key in out and off is not None and out[key] != off:
            raise ValueError(
                f"{source} uses {key} = {out[key]!r}, an option this version no longer has: "
                "use the version that ran it"
            )
        out.pop(key, None)
    return out


def load_config(
    overrides: Mapping[str, Any] | None = None,
    *,
    defaults: Mapping[str, Scalar] | None = None,
) -> ExperimentConfig:
    """Merge ``overrides`` into the defaults and build the typed config.

    ``overrides`` may be Flower's ``context.run_config`` (already complete) or a partial
    dict; unknown keys are an error that names the closest known key.
    """
    base = dict(defaults) if defaults is not None else default_run_config()
    merged = dict(base)
    for key, value in flatten(overrides or {}).items():
        if key in RENAMED and RENAMED[key] in base:
            raise ConfigError(f"{key} is now {RENAMED[key]} (the same meaning; rename it)")
        if RENAMED.get(key, key) in RETIRED and key not in base:
            raise ConfigError(
                f"{key} was removed: no experiment set it, or it measured no gain "
                "(docs/notebook/results.md); drop it"
            )
        if key not in base:
            close = difflib.get_close_matches(key, list(base), n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise ConfigError(f"unknown configuration key {key!r}{hint}")
        merged[key] = _coerce(key, value, base[key])

    top: dict[str, Any] = {}
    sections: dict[str, dict[str, Any]] = {name: {} for name in _SECTIONS}
    for key, value in merged.items():
        head, _, rest = key.partition(".")
        if rest and head in sections:
            sections[head][rest.replace("-", "_")] = value
        else:
            top[key.replace("-", "_")] = value
    built: dict[str, Any] = {}
    for name, cls in _SECTIONS.items():
        wanted = {f.name for f in fields(cls)}
        missing = wanted - set(sections[name])
        extra = set(sections[name]) - wanted
        if missing or extra:
            raise ConfigError(
                f"[{name}] options do not match the schema: missing {sorted(missing)}, "
                f"unexpected {sorted(extra)}"
            )
        built[name] = cls(**sections[name])
    wanted_top = {f.name for f in fields(ExperimentConfig)} - set(_SECTIONS)
    missing_top = wanted_top - set(top)
    if missing_top:
        raise ConfigError(f"missing top-level options {sorted(missing_top)}")
    cfg = ExperimentConfig(**{k: top[k] for k in wanted_top}, **built)
    idle = sorted(
        k for k, v in merged.items() if v != base[k] and not cfg.section_in_use(k.split(".")[0])
    )
    if idle:
        owners = sorted({k.split(".")[0] for k in idle})
        warnings.warn(
            f"{', '.join(idle)} {'has' if len(idle) == 1 else 'have'} no effect in this run "
            f"(method={cfg.method!r}, generator.kind={cfg.generator.kind!r}, solver.arch="
            f"{cfg.solver.arch!r}): "
            + "; ".join(f"{name}. is read only for {OWNED_SECTIONS[name]}" for name in owners),
            UserWarning,
            stacklevel=2,
        )
    return cfg
