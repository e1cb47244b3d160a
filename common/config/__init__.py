"""One configuration source, parsed once into typed, validated dataclasses.

The defaults of every option live in ``[tool.flwr.app.config]`` of ``pyproject.toml``;
Flower hands them (merged with ``--run-config`` overrides) to both apps as a flat
``run_config`` with dotted keys (``data.name``). The single-site runner reads the same
table and the same override files, so both paths share one schema.

    cfg = load_config({"data.name": "mnist", "method": "none"})
    cfg.data.name, cfg.train.iterations, cfg.replay.ratio_for(3)

- :mod:`common.config.sections`: one dataclass per section, the allowed values
- :mod:`common.config.experiment`: :class:`ExperimentConfig`, checks across sections
- :mod:`common.config.loading`: defaults, override files, ``--set`` strings, ``load_config``
"""

from common.config.experiment import OWNED_SECTIONS, ExperimentConfig, run_config_of
from common.config.loading import (
    default_run_config,
    drop_retired,
    flatten,
    load_config,
    parse_overrides,
    read_overrides,
    user_overrides,
)
from common.config.methods import (
    GENERATORS,
    METHODS,
    REGULARISERS,
    SOLVERS,
    GeneratorKind,
    Method,
    SolverArch,
    method_of,
)
from common.config.sections import (
    ACCOUNTANTS,
    AGGREGATIONS,
    COMPOSITIONS,
    DGM_VARIANTS,
    EVAL_MODES,
    PARTITIONS,
    PRECISIONS,
    PYPROJECT,
    RELEASABLE_METRICS,
    REPLAY_LABELS,
    REPLAY_MIXTURES,
    REPLAY_MODES,
    SCENARIOS,
    SOLVER_DATA,
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
)

__all__ = [
    "ACCOUNTANTS",
    "AGGREGATIONS",
    "COMPOSITIONS",
    "DGM_VARIANTS",
    "EVAL_MODES",
    "GENERATORS",
    "METHODS",
    "OWNED_SECTIONS",
    "PARTITIONS",
    "PRECISIONS",
    "PYPROJECT",
    "REGULARISERS",
    "RELEASABLE_METRICS",
    "REPLAY_LABELS",
    "REPLAY_MIXTURES",
    "REPLAY_MODES",
    "SCENARIOS",
    "SOLVERS",
    "SOLVER_DATA",
    "AuditConfig",
    "ConfigError",
    "DGMConfig",
    "DPConfig",
    "DataConfig",
    "EmbeddingConfig",
    "ExperimentConfig",
    "FedConfig",
    "GANConfig",
    "GeneratorConfig",
    "GeneratorKind",
    "Method",
    "PartitionConfig",
    "ReplayConfig",
    "RidgeConfig",
    "RobustConfig",
    "Scalar",
    "SolverArch",
    "SolverConfig",
    "TasksConfig",
    "TrainConfig",
    "VAEConfig",
    "default_run_config",
    "drop_retired",
    "flatten",
    "load_config",
    "method_of",
    "parse_overrides",
    "read_overrides",
    "run_config_of",
    "user_overrides",
]
