"""The wire format between sites and server: with :mod:`common.wire_packed` (the DGM
generator's masked transfer) the only core modules that import flwr. It encodes what
:mod:`common.protocol` declares (records, parts; docs/protocol.md).

The scholar travels as one array record per part, ``solver`` and ``generator``, each with
its own ``<part>.<parameter>`` keys (:func:`part_records`); a receiver joins them into
one record (:func:`scholar_of`) and checks it against the registered architectures
(:func:`check_scholar_arrays`). Every array that travels is float32. Nothing else may
leave a site: the critic, optimizer state, privacy state and data stay at the site.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from itertools import accumulate

import numpy as np
import torch
from flwr.app import Array, ArrayRecord, ConfigRecord, MetricRecord, RecordDict
from flwr.common import Code, FitRes, Status, ndarrays_to_parameters
from flwr.compat.common import recorddict_compat as compat
from torch import nn

from common import masked_transfer as masked
from common import protocol
from common.models.dgm import DGMGenerator
from common.models.growth import fit_state
from common.replay import ReplayPayload
from common.sitestate import check_site_id

# record and part names: declared in common.protocol
CONFIG = protocol.TRAIN_CONFIG.name
REPLAY_SOLVER = protocol.REPLAY_SOLVER.name  # replay.solver
REPLAY_GENERATOR = protocol.REPLAY_GENERATORS.name.removesuffix("<i>")  # replay.generator.<i>
REPLAY_META = protocol.REPLAY_META.name
METRICS = protocol.METRICS.name
SITE = protocol.SITE.name
SITE_ID = "site-id"
SCHOLAR_PARTS = protocol.PART_NAMES


class WireError(ValueError):
    """A record does not match what the protocol allows."""


def part_records(record: ArrayRecord) -> dict[str, ArrayRecord]:
    """The scholar's arrays as one record per part present (keys kept whole)."""
    parts: dict[str, dict[str, Array]] = {}
    for key, array in record.items():
        parts.setdefault(protocol.part_of(key), {})[key] = array
    unknown = sorted(set(parts) - set(SCHOLAR_PARTS))
    if unknown:
        raise WireError(f"arrays of no declared part: {unknown}")
    return {name: ArrayRecord(arrays) for name, arrays in parts.items()}  # type: ignore[arg-type]


def scholar_of(content: RecordDict) -> ArrayRecord:
    """The part records of a message joined into one record; a WireError when there is
    none, or a record carries another part's arrays."""
    arrays: dict[str, Array] = {}
    for name in SCHOLAR_PARTS:
        if name in content.array_records:
            for key, array in content.array_records[name].items():
                if protocol.part_of(key) != name:
                    raise WireError(f"record {name!r} carries {key!r}, of another part")
                arrays[key] = array
    if not arrays:
        raise WireError(f"the message carries no scholar part ({', '.join(SCHOLAR_PARTS)})")
    return ArrayRecord(arrays)  # type: ignore[arg-type]


def _array(t: torch.Tensor) -> Array:
    """A tensor as it travels: float32, a copy on the CPU."""
    return Array(t.detach().cpu().float().numpy().copy())


def _tensor(a: Array) -> torch.Tensor:
    """A received array as a tensor of its own (not a view of the message's buffer)."""
    return torch.from_numpy(np.array(a.numpy()))


def module_arrays(prefix: str, module: nn.Module) -> dict[str, Array]:
    return {f"{prefix}.{name}": _array(t) for name, t in module.state_dict().items()}


def scholar_record(
    solver: nn.Module, generator: nn.Module | None, *, packed: bool = False
) -> ArrayRecord:
    """Solver and generator as one ArrayRecord with ``solver.``/``generator.`` keys.

    ``packed`` (what a site sends): of a DGM generator only the elements that can change
    in the current task travel (:func:`packed_generator`); other generators travel whole."""
    arrays = module_arrays("solver", solver)
    if generator is not None:
        arrays.update(packed_generator(generator) if packed else module_arrays(GEN, generator))
    return ArrayRecord(arrays)  # type: ignore[arg-type]


GEN = protocol.GENERATOR.name


def packed_generator(generator: nn.Module) -> dict[str, Array]:
    """Masked transfer (:mod:`common.masked_transfer`): of a DGM generator the elements free
    in the current task, per key flattened; keys frozen everywhere (reserved by finished
    tasks, mask state) do not travel. Other generators: the whole state."""
    packed = masked.pack(masked.module_state(generator), masked.frozen_of(generator))
    return {f"{GEN}.{n}": Array(v) for n, v in packed.items()}


def packed_shapes(generator: nn.Module) -> dict[str, tuple[int, ...]]:
    """Wire key -> shape of every generator array a site sends (:func:`packed_generator`)."""
    return {k: tuple(a.shape) for k, a in packed_generator(generator).items()}


EMBEDDING_KEY = f"{protocol.EMBEDDING.name}.sums"


def embedding_arrays(release: torch.Tensor) -> dict[str, Array]:
    """A site's embedding release (classes of the task x features) as the part's arrays."""
    return {EMBEDDING_KEY: _array(release)}


def without_embedding(record: ArrayRecord) -> tuple[ArrayRecord, np.ndarray | None]:
    """The scholar's models, and the embedding release apart (None: the reply has none)."""
    keys = [k for k in record if protocol.part_of(k) == protocol.EMBEDDING.name]
    if keys and keys != [EMBEDDING_KEY]:
        raise WireError(f"the embedding part holds {sorted(keys)}, expected [{EMBEDDING_KEY!r}]")
    rest = ArrayRecord({k: record[k] for k in record if k not in keys})  # type: ignore[arg-type]
    return rest, (record[EMBEDDING_KEY].numpy() if keys else None)


def split_record(record: ArrayRecord) -> dict[str, dict[str, torch.Tensor]]:
    """ArrayRecord -> {part: state_dict}; the part is the key's first name (``solver``,
    ``generator``)."""
    parts: dict[str, dict[str, torch.Tensor]] = {}
    for key, array in record.items():
        head, _, rest = key.partition(".")
        if not rest:
            raise WireError(f"array key {key!r} does not name a model and a parameter")
        parts.setdefault(head, {})[rest] = _tensor(array)
    return parts


def load_module(
    module: nn.Module, state: Mapping[str, torch.Tensor], *, what: str, adopt_shapes: bool = False
) -> None:
    """Strict load with an error that says which model and which keys do not fit.

    ``adopt_shapes``: a model whose shapes are part of its state (a DGM generator, grown by
    the server at task boundaries) first takes the shapes of ``state``. Only for what the
    server sends a site; what a site sends is checked against the server's own shapes."""
    if adopt_shapes and isinstance(module, DGMGenerator):
        fit_state(module, state)
    own = module.state_dict()
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    wrong = sorted(k for k in set(own) & set(state) if own[k].shape != state[k].shape)
    if missing or unexpected or wrong:
        raise WireError(
            f"{what}: arrays do not fit the registered architecture "
            f"(missing {missing[:5]}, unexpected {unexpected[:5]}, wrong shape {wrong[:5]})"
        )
    module.load_state_dict({k: v.to(own[k].dtype) for k, v in state.items()})


def load_scholar(
    record: ArrayRecord,
    solver: nn.Module,
    generator: nn.Module | None,
    *,
    adopt_shapes: bool = False,
) -> None:
    parts = split_record(record)
    extra = set(parts) - {"solver", "generator"}
    if extra or "solver" not in parts or (generator is not None) != ("generator" in parts):
        raise WireError(f"scholar record has parts {sorted(parts)}, expected solver[+generator]")
    load_module(solver, parts["solver"], what="solver")
    if generator is not None:
        load_module(generator, parts["generator"], what="generator", adopt_shapes=adopt_shapes)


def check_scholar_arrays(
    record: ArrayRecord, solver: nn.Module, generator: nn.Module | None
) -> None:
    """Validate a received scholar against the registered architectures (no side effects)."""
    import copy

    load_scholar(record, copy.deepcopy(solver), copy.deepcopy(generator))
    for key, array in record.items():
        values = array.numpy()
        if values.dtype != np.float32:
            raise WireError(f"array {key!r} has dtype {values.dtype}, expected float32")
        if not np.isfinite(values).all():
            raise WireError(f"array {key!r} holds NaN or infinite values")


def _state_record(state: Mapping[str, torch.Tensor]) -> ArrayRecord:
    return ArrayRecord({k: _array(v) for k, v in state.items()})  # type: ignore[arg-type]


def _state_of(record: ArrayRecord) -> dict[str, torch.Tensor]:
    return {k: _tensor(a) for k, a in record.items()}


def replay_records(payload: ReplayPayload) -> dict[str, ArrayRecord | ConfigRecord]:
    """The replay as records of a message: one ArrayRecord per model (``replay.solver``,
    ``replay.generator.<i>``) and the ConfigRecord ``replay-meta``."""
    records: dict[str, ArrayRecord | ConfigRecord] = {REPLAY_SOLVER: _state_record(payload.solver)}
    for i, gen in enumerate(payload.generators):
        records[f"{REPLAY_GENERATOR}{i}"] = _state_record(gen)
    meta = ConfigRecord(
        {
            "task": payload.task,
            "weights": [float(w) for w in payload.weights],
            "classes": [int(c) for c in payload.classes],
        }
    )
    if payload.generator_classes:  # per-task replay: each generator's classes, flattened
        meta["generator-classes"] = [int(c) for cs in payload.generator_classes for c in cs]
        meta["generator-class-counts"] = [len(cs) for cs in payload.generator_classes]
    if payload.class_weights:  # replay.mixture = "class-counts": generator-major, flattened
        meta["class-weights"] = [float(w) for ws in payload.class_weights for w in ws]
    records[REPLAY_META] = meta
    return records


def has_replay(content: RecordDict) -> bool:
    """The message carries a replay (sent once per task)."""
    return REPLAY_META in content.config_records


def payload_of(content: RecordDict) -> ReplayPayload:
    """The replay a message carries (:func:`replay_records`), checked: the solver, the
    generators numbered 0..n-1 with one weight each."""
    if not has_replay(content):
        raise WireError(f"the message has no {REPLAY_META!r} record")
    meta = content.config_records[REPLAY_META]
    arrays = content.array_records
    numbers = sorted(
        int(name.removeprefix(REPLAY_GENERATOR))
        for name in arrays
        if name.startswith(REPLAY_GENERATOR) and name.removeprefix(REPLAY_GENERATOR).isdigit()
    )
    weights = tuple(float(w) for w in _as_list(meta["weights"]))
    if (
        numbers != list(range(len(numbers)))
        or len(weights) != len(numbers)
        or (REPLAY_SOLVER not in arrays)
    ):
        raise WireError(
            f"replay has generators {numbers} (expected 0..n-1), {len(weights)} weights, "
            f"solver {'present' if REPLAY_SOLVER in arrays else 'missing'}"
        )
    classes = tuple(int(c) for c in _as_list(meta["classes"]))
    return ReplayPayload(
        task=int(meta["task"]),  # type: ignore[arg-type]
        solver=_state_of(arrays[REPLAY_SOLVER]),
        generators=tuple(_state_of(arrays[f"{REPLAY_GENERATOR}{i}"]) for i in numbers),
        weights=weights,
        classes=classes,
        generator_classes=_generator_classes(meta, len(numbers), classes),
        class_weights=_class_weights(meta, len(numbers), len(classes)),
    )


def _class_weights(
    meta: ConfigRecord, num_generators: int, num_classes: int
) -> tuple[tuple[float, ...], ...]:
    """Per generator, its weight for each replayed class (class-counts; () when none)."""
    if "class-weights" not in meta:
        return ()
    flat = [float(w) for w in _as_list(meta["class-weights"])]
    if len(flat) != num_generators * num_classes:
        raise WireError(
            f"replay record's class-weights has {len(flat)} values, not {num_generators} "
            f"generators x {num_classes} classes"
        )
    if not all(math.isfinite(w) and w >= 0 for w in flat):
        raise WireError("replay record's class-weights must be finite and non-negative")
    return tuple(
        tuple(flat[i * num_classes : (i + 1) * num_classes]) for i in range(num_generators)
    )


def _generator_classes(
    meta: ConfigRecord, num_generators: int, classes: tuple[int, ...]
) -> tuple[tuple[int, ...], ...]:
    """The per-generator class lists of a per-task payload (() when it has none)."""
    if "generator-classes" not in meta:
        return ()
    flat = [int(c) for c in _as_list(meta["generator-classes"])]
    counts = [int(n) for n in _as_list(meta.get("generator-class-counts", []))]
    if len(counts) != num_generators or sum(counts) != len(flat) or min(counts, default=1) < 1:
        raise WireError(
            f"replay record's generator-class-counts {counts} do not fit {num_generators} "
            f"generators and {len(flat)} classes"
        )
    if not set(flat) <= set(classes):
        raise WireError(
            f"replay record's generators draw classes {sorted(set(flat) - set(classes))} "
            f"outside the replayed classes {list(classes)}"
        )
    ends = accumulate(counts)
    return tuple(tuple(flat[e - n : e]) for e, n in zip(ends, counts, strict=True))


def _as_list(value: object) -> Sequence[float | int]:
    if not isinstance(value, list):
        raise WireError(f"expected a list in replay-meta, got {type(value).__name__}")
    return value


def config_int(record: ConfigRecord, key: str) -> int:
    """An integer from a received ConfigRecord, or a WireError naming the key."""
    value = record.get(key)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or int(value) != value:
        raise WireError(f"config {key!r} must be an integer, got {value!r}")
    return int(value)


RUN_KEY = "run-key"  # in the train config: the run's stable key (survives a resume)


def config_str(record: ConfigRecord, key: str) -> str:
    """A non-empty string from a received ConfigRecord, or a WireError naming the key."""
    value = record.get(key)
    if not isinstance(value, str) or not value:
        raise WireError(f"config {key!r} must be a non-empty string, got {value!r}")
    return value


INPUT_SHAPE = "input-shape"  # in the train and evaluate config: the run's inputs, "CxHxW"


def shape_text(shape: tuple[int, ...]) -> str:
    """An input shape as it travels: channels x height x width, e.g. ``1x28x28``."""
    return "x".join(str(int(d)) for d in shape)


def check_input_shape(record: ConfigRecord, have: tuple[int, ...], *, data: str) -> None:
    """Refuse an instruction for inputs of another shape than this site's, naming both
    (else the site would fail every round on arrays that do not fit its model)."""
    want = config_str(record, INPUT_SHAPE)
    if want != shape_text(have):
        raise WireError(
            f"this site's {data!r} images are {shape_text(have)} (channels x height x width); "
            f"the run's are {want}. Convert or resize the site's images to {want} (1 channel: "
            "grayscale, 3: colour) before it joins; nothing is converted silently"
        )


def numpy_arrays(record: ArrayRecord) -> dict[str, np.ndarray]:
    return {k: v.numpy() for k, v in record.items()}


def array_record(arrays: Mapping[str, np.ndarray]) -> ArrayRecord:
    return ArrayRecord({k: Array(np.asarray(v)) for k, v in arrays.items()})  # type: ignore[arg-type]


def metric_float(record: MetricRecord, key: str) -> float:
    """A scalar from a received MetricRecord, or a WireError naming the key."""
    value = record.get(key)
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise WireError(f"metric {key!r} must be a scalar number, got {type(value).__name__}")
    return float(value)


def scalar_metrics(record: MetricRecord) -> dict[str, float]:
    """A received MetricRecord as plain floats; non-scalar values are a WireError."""
    return {key: metric_float(record, key) for key in record}


def metrics_record(metrics: Mapping[str, float]) -> MetricRecord:
    """Scalar metrics only; keys use dashes (Flower style)."""
    out: dict[str, float] = {}
    for key, value in metrics.items():
        if not isinstance(value, (int, float)) or isinstance(value, bool):
            raise WireError(f"metric {key!r} is {type(value).__name__}; only numbers may leave")
        out[key.replace("_", "-")] = float(value)
    return MetricRecord(out)  # type: ignore[arg-type]


def site_record(site_id: str) -> ConfigRecord:
    return ConfigRecord({SITE_ID: site_id})


def site_id_of(content: RecordDict) -> str | None:
    """The site id a reply declares (None if it declares none); a WireError if malformed."""
    if SITE not in content.config_records:
        return None
    record = content.config_records[SITE]
    value = record.get(SITE_ID)
    try:
        if set(record) != {SITE_ID} or not isinstance(value, str):
            raise ValueError("not one string")
        return check_site_id(value)  # the one rule a site id follows (common.privacy.ledger)
    except ValueError:
        raise WireError(f"site record must hold one site-id string, got {dict(record)!r}") from None


def records_of(content: RecordDict) -> dict[str, str]:
    """Record name -> kind (array | metric | config) of a message, for
    :meth:`common.protocol.MessageSpec.problems`."""
    out = {name: protocol.ARRAY for name in content.array_records}
    out.update({name: protocol.METRIC for name in content.metric_records})
    out.update({name: protocol.CONFIG for name in content.config_records})
    return out


def check_message(content: RecordDict, spec: protocol.MessageSpec) -> None:
    """A WireError naming every record that the declared message does not allow."""
    problems = spec.problems(records_of(content))
    if problems:
        raise WireError("; ".join(problems))


def record_bytes(record: RecordDict | ArrayRecord) -> int:
    """Bytes of array payload (the part that dominates what travels)."""
    if isinstance(record, ArrayRecord):
        return int(sum(a.numpy().nbytes for a in record.values()))
    return sum(record_bytes(r) for r in record.array_records.values())


def fitres_records(arrays: Sequence[np.ndarray]) -> RecordDict:
    """Flower's legacy FitRes records, which its SecAgg+ mod (at the site) and workflow (at
    the server) read: ``arrays`` as the parameters, weight 1 (no count leaves a site), no
    metrics (fed.aggregation = "secure"; none of them is sent as it is)."""
    res = FitRes(Status(Code.OK, ""), ndarrays_to_parameters(list(arrays)), 1, {})
    return compat.fitres_to_recorddict(res, keep_input=True)


FITRES_RECORDS = tuple(fitres_records([]))  # their names
