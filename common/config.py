"""One configuration source, parsed once into typed, validated dataclasses.

The defaults of every option live in ``[tool.flwr.app.config]`` of ``pyproject.toml``;
Flower hands them (merged with ``--run-config`` overrides) to both apps as a flat
``run_config`` with dotted keys (``data.name``). The single-site runner reads the same
table and the same override files, so both paths share one schema.

    cfg = load_config({"data.name": "mnist", "method": "none"})
    cfg.data.name, cfg.train.iterations, cfg.replay.ratio_for(num_tasks_seen=3)
"""

from __future__ import annotations

import difflib
import math
import tomllib
from collections.abc import Mapping
from dataclasses import asdict, dataclass, fields
from functools import lru_cache
from pathlib import Path
from typing import Any

Scalar = bool | int | float | str
PYPROJECT = Path(__file__).resolve().parents[1] / "pyproject.toml"

METHODS = ("dgr", "dgm", "none", "exact", "joint")
DGM_VARIANTS = ("activations", "weights")
SCENARIOS = ("class", "domain", "permuted")
PARTITIONS = ("iid", "dirichlet", "classes")
GENERATORS = ("vae", "gan")
SOLVERS = ("mlp", "cnn")
REPLAY_MODES = ("global", "ensemble")
REPLAY_LABELS = ("hard", "soft", "condition")
ACCOUNTANTS = ("rdp", "prv")
COMPOSITIONS = ("auto", "per-task", "sequential")
EVAL_MODES = ("central", "federated", "both")
AGGREGATIONS = ("fedavg", "median", "trimmed-mean", "krum", "multikrum", "bulyan")
SOLVER_DATA = ("real", "synthetic")
PRECISIONS = ("fp32", "bf16")
# Under DP a site sends only what the protocol needs (common.privacy.release); these
# metrics, computed on private data and not covered by DP, are sent only when named in
# dp.release-metrics ("evaluation": federated evaluation on the site's own test data).
RELEASABLE_METRICS = frozenset(
    {"loss-solver", "loss-generator", "loss-discriminator", "train-time-s", "evaluation"}
)


class ConfigError(ValueError):
    """A configuration value is missing, unknown or out of range."""


def _choice(name: str, value: str, allowed: tuple[str, ...]) -> None:
    if value not in allowed:
        raise ConfigError(f"{name}={value!r} is not one of {', '.join(allowed)}")


def _positive(name: str, value: float, *, allow_zero: bool = False) -> None:
    if not math.isfinite(value):
        raise ConfigError(f"{name}={value!r} must be a finite number")
    if value < 0 or (value == 0 and not allow_zero):
        bound = ">= 0" if allow_zero else "> 0"
        raise ConfigError(f"{name}={value!r} must be {bound}")


@dataclass(frozen=True)
class DataConfig:
    name: str
    root: str
    download: bool
    classes: str

    def __post_init__(self) -> None:
        names = self.class_names
        if self.classes.strip() and (len(set(names)) != len(names) or "" in names):
            raise ConfigError(
                f"data.classes={self.classes!r} must be distinct, non-empty names separated "
                "by commas"
            )

    @property
    def class_names(self) -> tuple[str, ...]:
        """The declared label space: label i is the i-th name (empty: the dataset's own)."""
        return tuple(n.strip() for n in self.classes.split(",")) if self.classes.strip() else ()


@dataclass(frozen=True)
class TasksConfig:
    scenario: str
    classes_per_task: int
    class_order: str
    num_tasks: int
    datasets: str

    def __post_init__(self) -> None:
        _choice("tasks.scenario", self.scenario, SCENARIOS)
        _positive("tasks.classes-per-task", self.classes_per_task)
        _positive("tasks.num-tasks", self.num_tasks, allow_zero=True)
        if self.scenario == "domain" and not self.datasets:
            raise ConfigError("tasks.scenario='domain' needs tasks.datasets, e.g. 'mnist,svhn'")


@dataclass(frozen=True)
class SolverConfig:
    arch: str
    hidden: int

    def __post_init__(self) -> None:
        _choice("solver.arch", self.arch, SOLVERS)
        _positive("solver.hidden", self.hidden)


@dataclass(frozen=True)
class GeneratorConfig:
    kind: str
    hidden: int
    latent_dim: int
    arch: str = "mlp"  # mlp | conv
    kl_weight: str = "auto"  # VAE's KL weight: "auto" or a number in (0, 1] (1 = the ELBO)

    def __post_init__(self) -> None:
        _choice("generator.kind", self.kind, GENERATORS)
        _choice("generator.arch", self.arch, ("mlp", "conv"))
        if str(self.kl_weight) != "auto":
            try:
                value = float(self.kl_weight)
            except ValueError:
                value = float("nan")
            if not 0.0 < value <= 1.0:  # NaN fails too
                raise ConfigError(
                    f"generator.kl-weight={self.kl_weight!r} must be 'auto' or in (0, 1]"
                )
        _positive("generator.hidden", self.hidden)
        _positive("generator.latent-dim", self.latent_dim)

    def kl_weight_for(self, dataset: str) -> float:
        """``auto``: 0.25 for the embedded 8x8 digits, whose VAE ignores its code under the
        ELBO (every draw of a class the same image); 1 (the ELBO) for every other dataset."""
        if str(self.kl_weight) == "auto":
            return 0.25 if dataset == "digits" else 1.0
        return float(self.kl_weight)


@dataclass(frozen=True)
class DGMConfig:
    """Dynamic Generative Memory (method = "dgm"; common.models.dgm)."""

    variant: str  # activations (DGMa) | weights (DGMw)
    s_max: float  # the masks' final scale (HAT's s_max)
    sparsity: float  # weight of the regulariser on newly claimed capacity
    growth: bool  # grow each layer by what a finished task reserved
    embedding_lr: float  # learning rate of the mask embeddings (Adam)

    def __post_init__(self) -> None:
        _choice("dgm.variant", self.variant, DGM_VARIANTS)
        _positive("dgm.s-max", self.s_max)
        if self.s_max < 1:
            raise ConfigError(f"dgm.s-max={self.s_max!r} must be >= 1")
        _positive("dgm.sparsity", self.sparsity, allow_zero=True)
        _positive("dgm.embedding-lr", self.embedding_lr)


@dataclass(frozen=True)
class TrainConfig:
    iterations: int
    batch_size: int
    lr: float
    generator_lr: float
    generator_iterations: int
    gan_diversity: float  # weight of the GAN generator's mode-seeking term (0 = off)
    gan_loss: str  # bce (non-saturating; trains under DP-SGD) | wgan-gp (not under DP)
    solver_data: str  # real | synthetic: what the solver learns the current task from
    precision: str  # fp32 | bf16: bf16 = matrix products in bfloat16 (autocast), weights fp32

    def __post_init__(self) -> None:
        _choice("train.solver-data", self.solver_data, SOLVER_DATA)
        _choice("train.precision", self.precision, PRECISIONS)
        _positive("train.iterations", self.iterations)
        _positive("train.batch-size", self.batch_size)
        _positive("train.lr", self.lr)
        _positive("train.generator-lr", self.generator_lr)
        _positive("train.generator-iterations", self.generator_iterations, allow_zero=True)
        _positive("train.gan-diversity", self.gan_diversity, allow_zero=True)
        _choice("train.gan-loss", self.gan_loss, ("bce", "wgan-gp"))

    def generator_steps(self, iterations: int | None = None) -> int:
        """Generator updates per round: its own setting, else as many as the solver's."""
        return self.generator_iterations or (self.iterations if iterations is None else iterations)


@dataclass(frozen=True)
class ReplayConfig:
    ratio: str
    batch_size: int
    labels: str
    retries: int
    mode: str

    def __post_init__(self) -> None:
        _choice("replay.mode", self.mode, REPLAY_MODES)
        _positive("replay.retries", self.retries, allow_zero=True)
        _choice("replay.labels", self.labels, REPLAY_LABELS)
        _positive("replay.batch-size", self.batch_size, allow_zero=True)
        if self.ratio != "auto":
            try:
                value = float(self.ratio)
            except ValueError:
                raise ConfigError(
                    f"replay.ratio={self.ratio!r} must be 'auto' or a number in (0, 1]"
                ) from None
            if not 0.0 < value <= 1.0:
                raise ConfigError(f"replay.ratio={self.ratio!r} must be in (0, 1]")

    def ratio_for(self, num_tasks_seen: int) -> float:
        """Importance of the current task (DGR's r); replay gets ``1 - r``.

        ``auto`` is the paper's rule: every task seen so far weighs the same.
        """
        if num_tasks_seen < 1:
            raise ValueError("num_tasks_seen must be >= 1")
        return 1.0 / num_tasks_seen if self.ratio == "auto" else float(self.ratio)


@dataclass(frozen=True)
class FedConfig:
    rounds_per_task: int
    num_sites: int
    fraction_train: float
    min_sites: int
    round_timeout: float
    evaluate: str
    aggregation: str
    update_clip: float
    weight_cap: float
    trim_fraction: float
    num_malicious: int
    start_timeout: float
    resume: str  # a run folder to resume from its checkpoint ("" = a new run)

    def __post_init__(self) -> None:
        _positive("fed.rounds-per-task", self.rounds_per_task)
        _positive("fed.num-sites", self.num_sites)
        _positive("fed.min-sites", self.min_sites)
        _positive("fed.round-timeout", self.round_timeout, allow_zero=True)
        _choice("fed.evaluate", self.evaluate, EVAL_MODES)
        if not 0.0 < self.fraction_train <= 1.0:
            raise ConfigError(f"fed.fraction-train={self.fraction_train!r} must be in (0, 1]")
        _choice("fed.aggregation", self.aggregation, ("auto", *AGGREGATIONS))
        _positive("fed.update-clip", self.update_clip, allow_zero=True)
        _positive("fed.weight-cap", self.weight_cap, allow_zero=True)
        if 0 < self.update_clip < 1 or 0 < self.weight_cap < 1:
            raise ConfigError(
                f"fed.update-clip={self.update_clip!r} and fed.weight-cap={self.weight_cap!r} "
                "are multiples of the round's median: use 0 (off) or a value >= 1"
            )
        if not 0.0 <= self.trim_fraction < 0.5:
            raise ConfigError(f"fed.trim-fraction={self.trim_fraction!r} must be in [0, 0.5)")
        _positive("fed.num-malicious", self.num_malicious, allow_zero=True)
        _positive("fed.start-timeout", self.start_timeout, allow_zero=True)
        if self.min_sites > self.num_sites:
            raise ConfigError(
                f"fed.min-sites={self.min_sites} is more than fed.num-sites={self.num_sites}: "
                "the run would wait forever for sites that do not exist"
            )


@dataclass(frozen=True)
class PartitionConfig:
    kind: str
    alpha: float
    site_classes: str

    def __post_init__(self) -> None:
        _choice("partition.kind", self.kind, PARTITIONS)
        _positive("partition.alpha", self.alpha)
        if self.kind == "classes" and not self.site_classes:
            raise ConfigError("partition.kind='classes' needs partition.site-classes")


@dataclass(frozen=True)
class DPConfig:
    enabled: bool
    target_epsilon: float
    delta: float
    max_grad_norm: float
    accountant: str
    composition: str  # auto | per-task | sequential (common.privacy.composition)
    client_level: bool
    client_noise_multiplier: float
    client_clip_norm: float
    min_records: int  # sample-level DP: a site with fewer records of a task sits it out
    release_metrics: str  # under DP: comma-separated extra metrics a site may send un-noised

    def __post_init__(self) -> None:
        _choice("dp.accountant", self.accountant, ACCOUNTANTS)
        _choice("dp.composition", self.composition, COMPOSITIONS)
        _positive("dp.min-records", self.min_records, allow_zero=True)
        _positive("dp.target-epsilon", self.target_epsilon)
        _positive("dp.max-grad-norm", self.max_grad_norm)
        _positive("dp.client-noise-multiplier", self.client_noise_multiplier, allow_zero=True)
        _positive("dp.client-clip-norm", self.client_clip_norm)
        if not (math.isfinite(self.delta) and 0.0 <= self.delta < 1.0):
            raise ConfigError(f"dp.delta={self.delta!r} must be in [0, 1)")
        if (self.enabled or self.client_level) and self.delta == 0.0:
            raise ConfigError(
                "dp.delta must be set explicitly under DP (e.g. dp.delta=1e-5, well below 1/n "
                "where n is the number of a site's records, or of sites for client-level DP); "
                "it is never derived from the data, whose size is private"
            )
        unknown = set(self.released_metrics) - RELEASABLE_METRICS
        if unknown:
            raise ConfigError(
                f"dp.release-metrics names {sorted(unknown)}; releasable under DP (un-noised, "
                f"opt-in): {', '.join(sorted(RELEASABLE_METRICS))}"
            )

    @property
    def released_metrics(self) -> frozenset[str]:
        """Metrics a site may send un-noised under DP beyond what the protocol needs."""
        return frozenset(m.strip() for m in self.release_metrics.split(",") if m.strip())


@dataclass(frozen=True)
class EvalConfig:
    generator_quality: bool
    samples_per_class: int

    def __post_init__(self) -> None:
        _positive("eval.samples-per-class", self.samples_per_class)


@dataclass(frozen=True)
class AuditConfig:
    canaries: int  # one-run audit (Steinke et al. 2023): canaries, half inserted at one site
    canary_site: int
    canary_task: int  # the task whose training data gets them (-1 = the last)
    holdout: float  # share of every task's training records no site gets: audit non-members

    def __post_init__(self) -> None:
        if not 0.0 <= self.holdout < 1.0:
            raise ConfigError(
                f"audit.holdout={self.holdout!r} must be in [0, 1): the share of every task's "
                "training records withheld from all sites (0 = none)"
            )
        _positive("audit.canaries", self.canaries, allow_zero=True)
        _positive("audit.canary-site", self.canary_site, allow_zero=True)
        if self.canary_task < -1:
            raise ConfigError(f"audit.canary-task={self.canary_task!r} must be >= 0 or -1 (last)")

    def task_index(self, num_tasks: int) -> int:
        """The 0-based task the canaries join in a stream of ``num_tasks`` tasks."""
        t = num_tasks - 1 if self.canary_task == -1 else self.canary_task
        if not 0 <= t < num_tasks:
            raise ConfigError(
                f"audit.canary-task={self.canary_task} but the stream has {num_tasks} tasks"
            )
        return t


@dataclass(frozen=True)
class ExperimentConfig:
    experiment: str
    seed: int
    device: str
    output_dir: str
    method: str
    data: DataConfig
    tasks: TasksConfig
    solver: SolverConfig
    generator: GeneratorConfig
    dgm: DGMConfig
    train: TrainConfig
    replay: ReplayConfig
    fed: FedConfig
    partition: PartitionConfig
    dp: DPConfig
    eval: EvalConfig
    audit: AuditConfig

    def __post_init__(self) -> None:
        _choice("method", self.method, METHODS)
        if self.dp.enabled and self.method == "exact":
            raise ConfigError(
                "method='exact' with dp.enabled: exact replay feeds stored real records "
                "around DP-SGD's clipping and noise; use 'joint' or 'dgr' under DP"
            )
        if self.dp.enabled and self.train.gan_loss == "wgan-gp" and self.uses_generator:
            raise ConfigError(
                "train.gan-loss='wgan-gp' with dp.enabled: the gradient penalty differentiates "
                "the discriminator's gradient, which Opacus's per-sample gradients do not "
                "support; use train.gan-loss='bce' under DP"
            )
        if self.dp.enabled and self.train.precision != "fp32":
            raise ConfigError(
                f"train.precision={self.train.precision!r} with dp.enabled: DP-SGD's clipping "
                "bound holds only for per-sample gradient norms computed exactly; bfloat16 "
                "rounds them, so a clipped gradient could exceed dp.max-grad-norm. Use "
                "train.precision='fp32' under DP"
            )
        if self.dp.enabled and self.dp.client_level:
            raise ConfigError("dp.enabled (sample-level) and dp.client-level: choose one")
        if self.method == "dgm":
            self._check_dgm()
        if self.dp.client_level and self.replay.mode == "ensemble" and self.uses_generator:
            raise ConfigError(
                "dp.client-level with replay.mode='ensemble' would send every site's own, "
                "un-noised generator to all sites as replay: client-level DP covers only the "
                "noised average. Use replay.mode='global' under client-level DP"
            )
        if self.dp.client_level and self.fed.aggregation not in ("auto", "fedavg"):
            raise ConfigError(
                f"dp.client-level with fed.aggregation={self.fed.aggregation!r}: client-level "
                "DP's noise is calibrated to a clipped sum of updates; use fed.aggregation="
                "'auto' (the clipped, noised mean; the clipping already bounds every site)"
            )
        if self.train.solver_data == "synthetic" and not self.uses_generator:
            raise ConfigError(
                "train.solver-data='synthetic' trains the solver on the site's own generator's "
                "samples: it needs method='dgr' (a generator)"
            )
        private = self.dp.enabled or self.dp.client_level
        if (
            private
            and self.fed.evaluate != "central"
            and "evaluation" not in self.dp.released_metrics
        ):
            raise ConfigError(
                f"fed.evaluate={self.fed.evaluate!r} under DP sends each site's accuracy on its "
                "own private test data, un-noised; use fed.evaluate='central' or opt in with "
                "dp.release-metrics='evaluation'"
            )
        if not self.device == "auto" and not self.device.startswith(("cpu", "cuda", "mps")):
            raise ConfigError(f"device={self.device!r} must be auto, cpu, cuda, cuda:N or mps")

    def _check_dgm(self) -> None:
        if self.generator.kind != "gan" or self.generator.arch != "conv":
            raise ConfigError(
                "method='dgm' masks a convolutional AC-GAN generator: set generator.kind='gan' "
                f"and generator.arch='conv' (got {self.generator.kind!r}, {self.generator.arch!r})"
            )
        if self.tasks.scenario != "class":
            raise ConfigError(
                f"method='dgm' is class-incremental (a task's classes pick its mask); "
                f"tasks.scenario={self.tasks.scenario!r} is not supported"
            )
        if self.dp.client_level:
            raise ConfigError(
                "method='dgm' with dp.client-level: the noised average would blur the masks "
                "that protect finished tasks; use sample-level DP (dp.enabled)"
            )
        if self.replay.mode != "global":
            raise ConfigError(
                "method='dgm' replays from its one generator, whose masks protect every task "
                f"(not an ensemble of sites' generators): set replay.mode='global' (got "
                f"{self.replay.mode!r})"
            )

    @property
    def aggregation_rule(self) -> str:
        """``fed.aggregation`` resolved: ``auto`` is ``trimmed-mean``, or under client-level
        DP the clipped, noised mean (``dp-mean``, server.client_dp)."""
        if self.dp.client_level:
            return "dp-mean"
        return "trimmed-mean" if self.fed.aggregation == "auto" else self.fed.aggregation

    @property
    def uses_generator(self) -> bool:
        return self.method in ("dgr", "dgm")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def to_run_config(self) -> dict[str, Scalar]:
        """Back to Flower's flat, dash-separated form (round-trips through load_config)."""
        return run_config_of(self.to_dict())


def run_config_of(d: Mapping[str, Any]) -> dict[str, Scalar]:
    """A :meth:`ExperimentConfig.to_dict` (e.g. a run's ``config.json``) in Flower's flat,
    dash-separated form."""
    flat: dict[str, Scalar] = {}
    for key, value in d.items():
        if isinstance(value, Mapping):
            for sub, v in value.items():
                flat[f"{key}.{sub.replace('_', '-')}"] = v
        else:
            flat[key.replace("_", "-")] = value
    return flat


_SECTIONS: dict[str, type] = {
    "data": DataConfig,
    "tasks": TasksConfig,
    "solver": SolverConfig,
    "generator": GeneratorConfig,
    "dgm": DGMConfig,
    "train": TrainConfig,
    "replay": ReplayConfig,
    "fed": FedConfig,
    "partition": PartitionConfig,
    "dp": DPConfig,
    "eval": EvalConfig,
    "audit": AuditConfig,
}


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
    return ExperimentConfig(**{k: top[k] for k in wanted_top}, **built)
