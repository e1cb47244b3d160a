"""The whole experiment's configuration: the sections, and the checks that span them."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any

from common.config.methods import (
    GENERATOR_TABLE,
    METHODS,
    NOTHING,
    SOLVER_TABLE,
    GeneratorKind,
    Method,
    SolverArch,
    method_of,
)
from common.config.sections import (
    SECURE,
    AuditConfig,
    ConfigError,
    DataConfig,
    DGMConfig,
    DPConfig,
    EmbeddingConfig,
    FedConfig,
    GANConfig,
    GeneratorConfig,
    PartitionConfig,
    ReplayConfig,
    RidgeConfig,
    RobustConfig,
    Scalar,
    SolverConfig,
    TasksConfig,
    TrainConfig,
    VAEConfig,
    _choice,
)

# The sections that hold one method's, model's or tool's own knobs, and what they belong to:
# a run that does not use their owner never reads them. Every other key is user-facing: read
# by every run (at most 40 of them; tests/common/test_config.py).
OWNED_SECTIONS = {
    "generator": "a method with a generator (method = dgr, dgm)",
    "replay": "generative replay (method = dgr, dgm)",
    "vae": 'generator.kind = "vae"',
    "gan": 'generator.kind = "gan"',
    "embedding": 'generator.kind = "embedding"',
    "dgm": 'method = "dgm"',
    "ridge": 'solver.arch = "ridge"',
    "robust": "the bounds on replies and the robust fed.aggregation rules",
    "partition": "a simulation's split of the data across sites",
    "audit": "the privacy audits (canaries, held-out records)",
}


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
    train: TrainConfig
    fed: FedConfig
    dp: DPConfig
    # the owned sections (OWNED_SECTIONS)
    generator: GeneratorConfig
    replay: ReplayConfig
    vae: VAEConfig
    gan: GANConfig
    embedding: EmbeddingConfig
    dgm: DGMConfig
    ridge: RidgeConfig
    robust: RobustConfig
    partition: PartitionConfig
    audit: AuditConfig

    def __post_init__(self) -> None:
        _choice("method", self.method, METHODS)
        if self.dp.enabled and self.method_traits.not_under_dp:
            raise ConfigError(
                f"method={self.method!r} with dp.enabled: {self.method_traits.not_under_dp}"
            )
        if self.dp.enabled and self.gan.labels == "real" and self.uses_generator:
            raise ConfigError(
                "gan.labels='real' with dp.enabled: the generator would learn from the "
                "real batch's labels directly, not only through the DP-trained discriminator "
                "(its privacy is post-processing); use 'uniform' or 'auto' under DP"
            )
        if self.dp.enabled and self.train.precision != "fp32":
            raise ConfigError(
                f"train.precision={self.train.precision!r} with dp.enabled: DP-SGD's clipping "
                "bound holds only for per-sample gradient norms computed exactly; bfloat16 "
                "rounds them, so a clipped gradient could exceed dp.max-grad-norm. Use "
                "train.precision='fp32' under DP"
            )
        if self.data.name == "folder" and self.fed.num_sites > 1 and not self.data.class_names:
            raise ConfigError(
                "data.name='folder' with fed.num-sites > 1 needs data.classes: each site "
                "would otherwise number its own folder names, and a site whose 'Normal' sorts "
                "differently from another's 'normal' would train other labels. Declare the "
                "label space once, e.g. data.classes='normal,drusen,cnv' (label i is the "
                "i-th name; every site's folders must match it exactly, case included)"
            )
        if self.dp.enabled and self.dp.client_level:
            raise ConfigError("dp.enabled (sample-level) and dp.client-level: choose one")
        if self.method == "dgm":
            self._check_dgm()
        if self.generator.kind == "embedding" and self.uses_generator:
            self._check_embedding()
        if self.solver.arch == "discriminator":
            self._check_discriminator_solver()
        if self.solver.arch == "ridge":
            self._check_ridge_solver()
        if self.dp.client_level and self.replay.mode != "global" and self.uses_generator:
            raise ConfigError(
                f"dp.client-level with replay.mode={self.replay.mode!r} would send every "
                "site's own, un-noised generator to all sites as replay: client-level DP "
                "covers only the noised average. Use replay.mode='global' under client-level DP"
            )
        if self.replay.mode == "per-task" and self.tasks.scenario != "class":
            raise ConfigError(
                "replay.mode='per-task' keeps one generator per finished task, each drawing "
                f"its task's classes: it needs tasks.scenario='class' (got "
                f"{self.tasks.scenario!r}); use replay.mode='ensemble' or 'global'"
            )
        if self.replay.mixture == "class-counts":
            self._check_class_counts()
        if self.dp.client_level and self.fed.aggregation not in ("auto", "fedavg"):
            raise ConfigError(
                f"dp.client-level with fed.aggregation={self.fed.aggregation!r}: client-level "
                "DP's noise is calibrated to a clipped sum of updates; use fed.aggregation="
                "'auto' (the clipped, noised mean; the clipping already bounds every site)"
            )
        if self.secure_aggregation:
            self._check_secure_aggregation()
        if self.replay.solver_data == "synthetic" and not self.uses_generator:
            raise ConfigError(
                "replay.solver-data='synthetic' trains the solver on the site's own generator's "
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

    def _check_embedding(self) -> None:
        """generator.kind = 'embedding' (DP-MERF): the one shape of run it is built for."""
        wanted = {
            "method": (self.method, "dgr"),
            "replay.mode": (self.replay.mode, "per-task"),
            "replay.solver-data": (self.replay.solver_data, "synthetic"),
        }
        for key, (got, want) in wanted.items():
            if got != want:
                raise ConfigError(
                    f"generator.kind='embedding' needs {key}={want!r} (got {got!r}): a site "
                    "releases its task's mean embedding once, the server fits one generator "
                    "per task to the sites' sum, and a solver learns from generators only"
                )
        if self.fed.rounds_per_task < 2 and self.solver.arch != "ridge":
            raise ConfigError(
                "generator.kind='embedding' needs fed.rounds-per-task >= 2: in a task's first "
                "round the sites release their embeddings and the server fits the task's "
                "generator; the solver learns from it in the rounds after"
            )
        if self.embedding.base == "scatter" and self.solver.arch != "ridge":
            raise ConfigError(
                "embedding.base='scatter' is for solver.arch='ridge': fitting a generator to "
                "releases on ScatterNet coefficients would differentiate through the transform "
                "for every one of its embedding.fit-steps (hours a task on a CPU), and the "
                "ridge solver needs no generator"
            )
        if self.dp.client_level:
            raise ConfigError(
                "dp.client-level with generator.kind='embedding': the embedding is released "
                "under sample-level DP (dp.enabled) or not at all"
            )

    def _check_class_counts(self) -> None:
        if self.dp.enabled or self.dp.client_level:
            raise ConfigError(
                "replay.mixture='class-counts' with DP: each site would send its record count "
                "per class of the task (a label histogram), which the DP accounting does not "
                "cover; use replay.mixture='weights' under DP"
            )
        if self.replay.mode != "ensemble" or self.generator.kind == "embedding":
            raise ConfigError(
                "replay.mixture='class-counts' weights each site's own generator per class: it "
                f"needs replay.mode='ensemble' and a trained generator (got replay.mode="
                f"{self.replay.mode!r}, generator.kind={self.generator.kind!r})"
            )

    def _check_ridge_solver(self) -> None:
        """solver.arch = 'ridge': solved by the server from the embedding releases."""
        if not (self.uses_generator and self.generator.kind == "embedding"):
            raise ConfigError(
                "solver.arch='ridge' is solved from the sites' embedding releases: it needs "
                f"method='dgr' and generator.kind='embedding' (got method={self.method!r}, "
                f"generator.kind={self.generator.kind!r})"
            )
        if self.fed.evaluate != "central":
            raise ConfigError(
                f"solver.arch='ridge' with fed.evaluate={self.fed.evaluate!r}: the server "
                "solves the solver after the round, so only its own evaluation sees it; "
                "use fed.evaluate='central'"
            )

    def _check_secure_aggregation(self) -> None:
        """fed.aggregation = 'secure': the server learns the sum of the sites' releases only."""
        if self.solver.arch != "ridge":
            raise ConfigError(
                "fed.aggregation='secure' sums the sites' releases under SecAgg+, so the server "
                "sees only their sum: it serves solver.arch='ridge' (the solver solved from "
                "the summed releases). Models a site trains are not summed under SecAgg+ here: "
                "ensemble and per-task replay keep each site's generator, and the robust rules "
                f"(trimmed mean, update bounds) need each site's update (got solver.arch="
                f"{self.solver.arch!r})"
            )
        if self.fed.rounds_per_task != 1:
            raise ConfigError(
                "fed.aggregation='secure' with fed.rounds-per-task="
                f"{self.fed.rounds_per_task}: a site releases its task once, in the task's one "
                "round; a sum of later rounds could not tell a release from a resent one. "
                "Use fed.rounds-per-task=1"
            )
        if self.fed.num_sites < 3:
            raise ConfigError(
                "fed.aggregation='secure' needs fed.num-sites >= 3: Flower's SecAgg+ shares "
                "each site's secrets among at least 3 (with 2, the server and one site "
                f"together would learn the other's release from the sum); got {self.fed.num_sites}"
            )

    def _check_discriminator_solver(self) -> None:
        if not (self.uses_generator and self.generator.kind == "gan"):
            raise ConfigError(
                "solver.arch='discriminator' classifies with the AC-GAN discriminator's "
                "auxiliary head: it needs method='dgr' or 'dgm' with generator.kind='gan' "
                f"(got method={self.method!r}, generator.kind={self.generator.kind!r})"
            )
        if self.generator.arch != "conv":
            raise ConfigError(
                "solver.arch='discriminator' is the convolutional discriminator: set "
                f"generator.arch='conv' (got {self.generator.arch!r})"
            )
        if self.replay.solver_data == "synthetic":
            raise ConfigError(
                "solver.arch='discriminator' learns as the GAN's critic, from real data: "
                "replay.solver-data='synthetic' does not apply; use 'real'"
            )

    @property
    def aggregation_rule(self) -> str:
        """``fed.aggregation`` resolved: ``auto`` is ``trimmed-mean``, or under client-level
        DP the clipped, noised mean (``dp-mean``, server.privacy.client_dp)."""
        if self.dp.client_level:
            return "dp-mean"
        return "trimmed-mean" if self.fed.aggregation == "auto" else self.fed.aggregation

    @property
    def secure_aggregation(self) -> bool:
        """The server learns only the sum of the sites' releases (SecAgg+)."""
        return self.fed.aggregation == SECURE

    def section_in_use(self, section: str) -> bool:
        """Whether this run reads an owned section (OWNED_SECTIONS; robust., partition.
        and audit. are read whenever their tool runs; any other section: always)."""
        gen, kind = self.uses_generator, self.generator.kind
        return {
            "generator": gen,
            "replay": gen,
            "vae": gen and kind == "vae",
            "gan": gen and kind == "gan",
            "embedding": gen and kind == "embedding",
            "dgm": self.method == "dgm",
            "ridge": self.solver.arch == "ridge",
        }.get(section, True)

    @property
    def replay_kind(self) -> str:
        """What a site replays (common.config.methods: generative, exact, previous-solver,
        nothing): the method's, except nothing for :attr:`generator_free`."""
        return NOTHING if self.generator_free else self.method_traits.replay

    @property
    def needs_payload(self) -> bool:
        """A site needs the server's payload of the finished tasks from task 1 on."""
        return self.method_traits.needs_payload and not self.generator_free

    @property
    def fits_generator(self) -> bool:
        """The run has a generator to train or fit: a method with one, except the ridge
        solver on ScatterNet features (:attr:`generator_free`)."""
        return self.uses_generator and not self.generator_free

    @property
    def generator_free(self) -> bool:
        """The ridge solver on ScatterNet features (embedding.base = "scatter"): the server
        solves the solver from the releases and fits no generator; no replay travels."""
        return self.releases_statistics and self.embedding.base == "scatter"

    @property
    def method_traits(self) -> Method:
        """What ``method`` is (common.config.methods): its replay, data and DP traits."""
        return method_of(self.method)

    @property
    def uses_generator(self) -> bool:
        return self.method_traits.uses_generator

    @property
    def generator_traits(self) -> GeneratorKind:
        """What ``generator.kind`` is (common.config.methods): trained or fitted to a release."""
        return GENERATOR_TABLE[self.generator.kind]

    @property
    def solver_traits(self) -> SolverArch:
        """What ``solver.arch`` is (common.config.methods): trained, solved, or the critic."""
        return SOLVER_TABLE[self.solver.arch]

    @property
    def releases_statistics(self) -> bool:
        """Sites release noised statistics (an embedding) instead of training a generator;
        the server fits the task's generator to their sum (``generator.kind = "embedding"``)."""
        return self.uses_generator and self.generator_traits.released

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
