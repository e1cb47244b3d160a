"""The configuration's sections (``data.*``, ``train.*``, ...): one frozen dataclass
each, validated on construction, and the names every option may take."""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

from common import protocol  # the declaration of what travels (plain Python)
from common.config.methods import GENERATORS, SOLVERS

Scalar = bool | int | float | str
PYPROJECT = Path(__file__).resolve().parents[2] / "pyproject.toml"

DGM_VARIANTS = ("activations", "weights")
SCENARIOS = ("class", "domain", "permuted")
PARTITIONS = ("iid", "dirichlet", "classes")
REPLAY_MODES = ("global", "ensemble", "per-task")
GAN_LABELS = ("auto", "uniform", "real")
REPLAY_LABELS = ("hard", "soft", "condition")
REPLAY_MIXTURES = ("weights", "class-counts")
ACCOUNTANTS = ("rdp", "prv")
COMPOSITIONS = ("auto", "per-task", "sequential")
EVAL_MODES = ("central", "federated", "both")
AGGREGATIONS = ("fedavg", "median", "trimmed-mean", "krum", "multikrum", "bulyan")
SECURE = "secure"  # fed.aggregation: the sum under SecAgg+ (server.run.secure_aggregation)
SOLVER_DATA = ("real", "synthetic")
FEATURE_BASES = ("pixels", "scatter")  # what the embedding's random features are drawn on
SCATTER_BANDWIDTH = 0.5  # "auto" on ScatterNet coefficients: chosen on the public proxy
PRECISIONS = ("fp32", "bf16")
# Under DP a site sends only what the protocol needs (common.privacy.release); these
# metrics, computed on private data and not covered by DP, are sent only when named in
# dp.release-metrics ("evaluation": federated evaluation on the site's own test data).
RELEASABLE_METRICS = protocol.metrics_of("train", under_dp=(protocol.OPT_IN,)) | {
    protocol.EVALUATION
}


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
class RidgeConfig:
    """The ridge solver's own knob (solver.arch = "ridge"; common.models.ridge)."""

    penalty: float = 30.0  # the L2 penalty (lambda) of the closed-form fit

    def __post_init__(self) -> None:
        _positive("ridge.penalty", self.penalty)


@dataclass(frozen=True)
class GeneratorConfig:
    """The generator of a method with one (dgr, dgm): its kind and model, its training at
    a site, and the server's score of its replay."""

    kind: str
    hidden: int
    latent_dim: int
    arch: str = "mlp"  # mlp | conv
    lr: float = 1e-3
    iterations: int = 0  # updates per round; 0 = as many as the solver's (train.iterations)
    quality: bool = True  # score the replay per task by the evaluator (server.run)

    def __post_init__(self) -> None:
        _choice("generator.kind", self.kind, GENERATORS)
        _choice("generator.arch", self.arch, ("mlp", "conv"))
        _positive("generator.hidden", self.hidden)
        _positive("generator.latent-dim", self.latent_dim)
        _positive("generator.lr", self.lr)
        _positive("generator.iterations", self.iterations, allow_zero=True)

    def steps(self, solver_iterations: int) -> int:
        """Generator updates per round: its own setting, else as many as the solver's."""
        return self.iterations or solver_iterations


@dataclass(frozen=True)
class VAEConfig:
    """The VAE generator's own knob (generator.kind = "vae")."""

    kl_weight: str = "auto"  # the KL term's weight: "auto" or a number in (0, 1] (1 = the ELBO)

    def __post_init__(self) -> None:
        if str(self.kl_weight) != "auto":
            try:
                value = float(self.kl_weight)
            except ValueError:
                value = float("nan")
            if not 0.0 < value <= 1.0:  # NaN fails too
                raise ConfigError(f"vae.kl-weight={self.kl_weight!r} must be 'auto' or in (0, 1]")

    def kl_weight_for(self, dataset: str) -> float:
        """``auto``: 0.25 for the embedded 8x8 digits, whose VAE ignores its code under the
        ELBO (every draw of a class the same image); 1 (the ELBO) for every other dataset."""
        if str(self.kl_weight) == "auto":
            return 0.25 if dataset == "digits" else 1.0
        return float(self.kl_weight)


@dataclass(frozen=True)
class GANConfig:
    """The AC-GAN generator's own knobs (generator.kind = "gan")."""

    diversity: float = 0.0  # weight of the generator's mode-seeking term (0 = off)
    labels: str = "auto"  # auto | uniform | real: the labels its fakes are drawn for

    def __post_init__(self) -> None:
        _positive("gan.diversity", self.diversity, allow_zero=True)
        _choice("gan.labels", self.labels, GAN_LABELS)


@dataclass(frozen=True)
class EmbeddingConfig:
    """The mean-embedding generator's own knobs (generator.kind = "embedding", DP-MERF,
    common.models.embedding): random Fourier feature pairs, the kernel's bandwidth ("auto":
    sqrt(input size) / 4, data-free), what they are drawn on (the pixels, or the images'
    ScatterNet coefficients: common.models.scatter), and the server's fit of a generator to
    a released embedding (steps; samples per class per step)."""

    features: int = 2000
    bandwidth: str = "auto"
    fit_steps: int = 3000
    fit_batch: int = 100
    base: str = "pixels"  # pixels | scatter

    def __post_init__(self) -> None:
        _choice("embedding.base", self.base, FEATURE_BASES)
        if str(self.bandwidth) != "auto":
            try:
                width = float(self.bandwidth)
            except ValueError:
                width = float("nan")
            if not (math.isfinite(width) and width > 0):
                raise ConfigError(
                    f"embedding.bandwidth={self.bandwidth!r} must be 'auto' or a positive number"
                )
        _positive("embedding.features", self.features)
        _positive("embedding.fit-steps", self.fit_steps)
        _positive("embedding.fit-batch", self.fit_batch)

    def bandwidth_for(self, input_size: int) -> float:
        """The random-feature kernel's bandwidth: ``auto`` is sqrt(input size) / 4 on pixels,
        a rule that reads no data (7 for 28x28 grey images); on ScatterNet coefficients
        (norm 1 per record) 0.5, chosen on the public proxy (docs/notebook/results.md,
        "ScatterNet features for the ridge solver")."""
        if str(self.bandwidth) == "auto":
            return SCATTER_BANDWIDTH if self.base == "scatter" else math.sqrt(input_size) / 4
        return float(self.bandwidth)


@dataclass(frozen=True)
class DGMConfig:
    """Dynamic Generative Memory (method = "dgm"; common.models.dgm)."""

    variant: str  # activations (DGMa) | weights (DGMw)
    s_max: float  # the masks' final scale (HAT's s_max)
    sparsity: float  # weight of the regulariser on newly claimed capacity

    def __post_init__(self) -> None:
        _choice("dgm.variant", self.variant, DGM_VARIANTS)
        _positive("dgm.s-max", self.s_max)
        if self.s_max < 1:
            raise ConfigError(f"dgm.s-max={self.s_max!r} must be >= 1")
        _positive("dgm.sparsity", self.sparsity, allow_zero=True)


@dataclass(frozen=True)
class TrainConfig:
    iterations: int
    batch_size: int
    lr: float
    precision: str  # fp32 | bf16: bf16 = matrix products in bfloat16 (autocast), weights fp32

    def __post_init__(self) -> None:
        _choice("train.precision", self.precision, PRECISIONS)
        _positive("train.iterations", self.iterations)
        _positive("train.batch-size", self.batch_size)
        _positive("train.lr", self.lr)


@dataclass(frozen=True)
class ReplayConfig:
    """Generative replay (methods with a generator): what is replayed, how it is labelled,
    and what the solver learns the current task from."""

    labels: str
    retries: int
    mode: str
    mixture: str
    solver_data: str  # real | synthetic: what the solver learns the current task from

    def __post_init__(self) -> None:
        _choice("replay.mode", self.mode, REPLAY_MODES)
        _choice("replay.mixture", self.mixture, REPLAY_MIXTURES)
        _positive("replay.retries", self.retries, allow_zero=True)
        _choice("replay.labels", self.labels, REPLAY_LABELS)
        _choice("replay.solver-data", self.solver_data, SOLVER_DATA)

    @staticmethod
    def ratio_for(num_tasks_seen: int) -> float:
        """Importance of the current task (DGR's r; replay gets ``1 - r``): the paper's
        rule, every task seen so far weighs the same."""
        if num_tasks_seen < 1:
            raise ValueError("num_tasks_seen must be >= 1")
        return 1.0 / num_tasks_seen


@dataclass(frozen=True)
class FedConfig:
    rounds_per_task: int
    num_sites: int
    fraction_train: float
    min_sites: int
    round_timeout: float
    evaluate: str
    aggregation: str
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
        _choice("fed.aggregation", self.aggregation, ("auto", *AGGREGATIONS, SECURE))
        _positive("fed.start-timeout", self.start_timeout, allow_zero=True)
        if self.min_sites > self.num_sites:
            raise ConfigError(
                f"fed.min-sites={self.min_sites} is more than fed.num-sites={self.num_sites}: "
                "the run would wait forever for sites that do not exist"
            )


@dataclass(frozen=True)
class RobustConfig:
    """The bounds every reply passes before it touches the aggregate, and the robust rules'
    own knobs (``fed.aggregation`` picks the rule; server/robust applies them)."""

    update_clip: float  # x the round's (num-malicious + 1)-th largest update norm; 0 = off
    weight_cap: float  # x the round's median example count (and the joining declaration)
    trim_fraction: float  # trimmed-mean: the share cut at each end
    num_malicious: int  # hostile sites assumed: the norm reference; krum, bulyan

    def __post_init__(self) -> None:
        _positive("robust.update-clip", self.update_clip, allow_zero=True)
        _positive("robust.weight-cap", self.weight_cap, allow_zero=True)
        if 0 < self.update_clip < 1 or 0 < self.weight_cap < 1:
            raise ConfigError(
                f"robust.update-clip={self.update_clip!r} and robust.weight-cap="
                f"{self.weight_cap!r} are multiples of the round's median: use 0 (off) or a "
                "value >= 1"
            )
        if not 0.0 <= self.trim_fraction < 0.5:
            raise ConfigError(f"robust.trim-fraction={self.trim_fraction!r} must be in [0, 0.5)")
        _positive("robust.num-malicious", self.num_malicious, allow_zero=True)


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
