"""The wire format round-trips and rejects what the protocol does not allow."""

import numpy as np
import pytest
import torch
from flwr.app import Array, ArrayRecord, RecordDict

from common import wire, wire_packed
from common.config import GeneratorConfig, SolverConfig
from common.models import build_generator, build_solver
from common.replay import ReplayPayload

SHAPE = (1, 8, 8)


def models(seed: int) -> tuple[torch.nn.Module, torch.nn.Module]:
    torch.manual_seed(seed)
    return (
        build_solver(SolverConfig("mlp", 16), SHAPE, 10),
        build_generator(GeneratorConfig("vae", 16, 4), SHAPE, 10),
    )


def test_scholar_round_trip_is_exact() -> None:
    solver, gen = models(0)
    record = wire.scholar_record(solver, gen)
    assert all(k.startswith(("solver.", "generator.")) for k in record)
    solver2, gen2 = models(1)
    wire.load_scholar(record, solver2, gen2)
    for a, b in ((solver, solver2), (gen, gen2)):
        for (ka, va), (kb, vb) in zip(a.state_dict().items(), b.state_dict().items(), strict=True):
            assert ka == kb and torch.equal(va, vb)


def test_replay_payload_round_trip_with_ensemble() -> None:
    solver, gen = models(0)
    _, gen_b = models(2)
    payload = ReplayPayload(
        3, solver.state_dict(), (gen.state_dict(), gen_b.state_dict()), (10.0, 30.0), (0, 1, 2, 3)
    )
    back = wire.payload_of(RecordDict(wire.replay_records(payload)))
    assert back.task == 3 and back.weights == (10.0, 30.0) and back.classes == (0, 1, 2, 3)
    assert len(back.generators) == 2
    for k, v in gen_b.state_dict().items():
        assert torch.equal(back.generators[1][k], v)
    # one ArrayRecord per model: the solver and each generator
    names = sorted(wire.replay_records(payload))
    assert names == ["replay-meta", "replay.generator.0", "replay.generator.1", "replay.solver"]


def test_a_replay_with_a_missing_or_extra_generator_is_refused() -> None:
    solver, gen = models(0)
    payload = ReplayPayload(1, solver.state_dict(), (gen.state_dict(),) * 3, (1.0,) * 3, (0, 1))
    records = wire.replay_records(payload)
    del records["replay.generator.1"]  # 0 and 2: a hole
    with pytest.raises(wire.WireError, match=r"generators \[0, 2\] \(expected 0..n-1\)"):
        wire.payload_of(RecordDict(records))
    records = wire.replay_records(payload)
    records["replay.generator.3"] = records["replay.generator.0"]  # one weight short
    with pytest.raises(wire.WireError, match="3 weights"):
        wire.payload_of(RecordDict(records))
    assert not wire.has_replay(RecordDict({"replay.solver": records["replay.solver"]}))


def test_per_task_payload_keeps_each_generators_classes() -> None:
    solver, gen = models(0)
    _, gen_b = models(2)
    payload = ReplayPayload(
        2,
        solver.state_dict(),
        (gen.state_dict(), gen_b.state_dict(), gen_b.state_dict()),
        (1.0, 2.0, 3.0),
        (0, 1, 2, 3),
        ((0, 1), (2, 3), (2, 3)),
    )
    records = wire.replay_records(payload)
    meta = records[wire.REPLAY_META]
    assert wire.payload_of(RecordDict(records)).generator_classes == payload.generator_classes
    assert ReplayPayload.from_dict(payload.to_dict()) == payload
    # a payload whose lists do not add up, or draw a class not replayed, is refused
    meta["generator-class-counts"] = [2, 2, 1]
    with pytest.raises(wire.WireError, match="generator-class-counts"):
        wire.payload_of(RecordDict(records))
    meta["generator-class-counts"] = [2, 2, 2]
    meta["generator-classes"] = [0, 1, 2, 3, 2, 7]
    with pytest.raises(wire.WireError, match=r"classes \[7\] outside"):
        wire.payload_of(RecordDict(records))


def test_class_weights_travel_and_bad_ones_are_refused() -> None:
    solver, gen = models(0)
    _, gen_b = models(2)
    payload = ReplayPayload(
        2,
        solver.state_dict(),
        (gen.state_dict(), gen_b.state_dict()),
        (1.0, 2.0),
        (0, 1, 2),
        class_weights=((1.0, 1.0, 0.5), (2.0, 2.0, 0.0)),
    )
    records = wire.replay_records(payload)
    meta = records[wire.REPLAY_META]
    assert wire.payload_of(RecordDict(records)).class_weights == payload.class_weights
    assert ReplayPayload.from_dict(payload.to_dict()) == payload
    meta["class-weights"] = [1.0, 1.0, 0.5, 2.0, 2.0]
    with pytest.raises(wire.WireError, match="not 2 generators x 3 classes"):
        wire.payload_of(RecordDict(records))
    for bad in (-1.0, float("nan"), float("inf")):
        meta["class-weights"] = [1.0, 1.0, 0.5, 2.0, 2.0, bad]
        with pytest.raises(wire.WireError, match="finite and non-negative"):
            wire.payload_of(RecordDict(records))


def test_wrong_architecture_is_rejected_with_the_model_named() -> None:
    solver, gen = models(0)
    other = build_solver(SolverConfig("mlp", 32), SHAPE, 10)
    with pytest.raises(wire.WireError, match=r"solver.*wrong shape"):
        wire.check_scholar_arrays(wire.scholar_record(other, gen), solver, gen)


def test_extra_arrays_and_bad_values_are_rejected() -> None:
    solver, gen = models(0)
    record = wire.scholar_record(solver, gen)
    smuggled = ArrayRecord(
        {**dict(record.items()), "data.rows": Array(np.zeros((4, 64), np.float32))}
    )
    with pytest.raises(wire.WireError, match="parts"):
        wire.check_scholar_arrays(smuggled, solver, gen)
    key = next(iter(record))
    poisoned = ArrayRecord(
        {**dict(record.items()), key: Array(np.full(record[key].numpy().shape, np.nan, np.float32))}
    )
    with pytest.raises(wire.WireError, match="NaN"):
        wire.check_scholar_arrays(poisoned, solver, gen)


def test_only_numbers_leave_as_metrics() -> None:
    assert dict(wire.metrics_record({"loss_solver": 1})) == {"loss-solver": 1.0}
    with pytest.raises(wire.WireError, match="only numbers"):
        wire.metrics_record({"note": "patient 7"})  # type: ignore[dict-item]


def test_record_bytes_counts_array_payload() -> None:
    solver, gen = models(0)
    record = wire.scholar_record(solver, gen)
    params = sum(p.numel() for p in [*solver.parameters(), *gen.parameters()])
    assert wire.record_bytes(record) == 4 * params
    assert wire.record_bytes(RecordDict({"a": record})) == 4 * params


def test_a_reply_may_only_declare_a_site_id_the_ledger_would_accept() -> None:
    """One rule for site ids (common.privacy.ledger.check_site_id), at the site, on the
    wire and in the egress audit: another site's id is well-formed, a path is not."""
    from flwr.app import ConfigRecord, RecordDict

    def declared(value: object) -> str | None:
        return wire.site_id_of(RecordDict({wire.SITE: ConfigRecord({wire.SITE_ID: value})}))

    assert declared("st-olav") == "st-olav"
    for bad in ("../../etc", "", "a" * 65, 7):
        with pytest.raises(wire.WireError, match="site-id"):
            declared(bad)
    assert wire.site_id_of(RecordDict({})) is None


def _dgm_after_one_task():
    """A DGM generator whose task 1 reserved part of it (trained a little, consolidated,
    grown), then trained a little on task 2, and the whole scholar record holding it."""
    from common.models.growth import grow_
    from tests.common.models.test_dgm import make, train

    gen = make("activations")
    train(gen, [0, 1])
    grow_(gen, gen.end_task([0, 1]))
    train(gen, [2, 3], steps=3, seed=2)
    solver = build_solver(SolverConfig(arch="mlp", hidden=16), (1, 28, 28), 10)
    return gen, wire.scholar_record(solver, gen)


def make_site_generator():
    from tests.common.models.test_dgm import make

    return make("activations")  # a fresh site: the base gives it the shapes and masks


def test_a_packed_instruction_is_made_whole_exactly_from_the_site_s_base() -> None:
    gen, whole = _dgm_after_one_task()
    base = ArrayRecord({k: v for k, v in whole.items() if k.startswith("generator.")})
    packed = wire_packed.pack_scholar(whole, gen)
    assert wire.record_bytes(packed) < 0.9 * wire.record_bytes(whole), "nothing was left out"
    assert not any(k.startswith("generator.usage_") for k in packed), "mask state travelled"
    site_gen = make_site_generator()
    digest = wire_packed.frozen_digest(whole, gen)
    out = wire_packed.unpack_with_base(packed, base, site_gen, digest=digest)
    assert sorted(out) == sorted(whole)
    for key in whole:
        assert np.array_equal(out[key].numpy(), whole[key].numpy()), key


def test_a_packed_instruction_without_the_right_base_is_refused_not_guessed() -> None:
    gen, whole = _dgm_after_one_task()
    packed, digest = wire_packed.pack_scholar(whole, gen), wire_packed.frozen_digest(whole, gen)
    with pytest.raises(wire.WireError, match="holds no whole generator"):
        wire_packed.unpack_with_base(packed, None, make_site_generator(), digest=digest)
    # a base whose one reserved weight differs from the server's
    reserved = {n: f for n, f in gen.frozen_elements().items() if not n.startswith("usage")}
    name, f = next((n, f) for n, f in reserved.items() if "weight" in n and not bool(f.all()))
    stale = {k: v.numpy().copy() for k, v in whole.items() if k.startswith("generator.")}
    stale[f"generator.{name}"][f.numpy()] += 1e-3
    with pytest.raises(wire.WireError, match="needs the whole generator"):
        wire_packed.unpack_with_base(
            packed, wire.array_record(stale), make_site_generator(), digest=digest
        )


def test_models_without_frozen_elements_travel_whole_down() -> None:
    gen = build_generator(GeneratorConfig(kind="vae", hidden=16, latent_dim=4), (1, 28, 28), 10)
    solver = build_solver(SolverConfig(arch="mlp", hidden=16), (1, 28, 28), 10)
    whole = wire.scholar_record(solver, gen)
    assert wire_packed.pack_scholar(whole, gen) is whole
    assert wire_packed.frozen_digest(whole, gen) == ""
