"""The one configuration source: pyproject defaults, overrides, validation, round trip."""

import re
from pathlib import Path

import pytest

from common.config import (
    ConfigError,
    default_run_config,
    load_config,
    parse_overrides,
    read_overrides,
)

SIMULATIONS = Path(__file__).resolve().parents[2] / "simulations"


def test_defaults_parse_into_typed_config() -> None:
    cfg = load_config()
    assert cfg.data.name == "digits"
    assert isinstance(cfg.train.iterations, int)
    assert isinstance(cfg.train.lr, float)
    assert cfg.method in ("dgr", "none", "exact", "joint")


def test_run_config_round_trip() -> None:
    cfg = load_config({"data.name": "mnist", "fed.num-sites": 5, "generator.lr": 0.003})
    assert load_config(cfg.to_run_config()) == cfg
    assert cfg.to_run_config().keys() == default_run_config().keys()


def test_unknown_key_names_the_closest_match() -> None:
    with pytest.raises(ConfigError, match=r"train\.iteration.*did you mean 'train\.iterations'"):
        load_config({"train.iteration": 3})


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"method": "bogus"}, "method='bogus'"),
        ({"train.iterations": 0}, "train.iterations"),
        ({"train.iterations": "many"}, "expected int"),
        ({"generator.lr": 0.0}, "generator.lr"),
        ({"replay.solver-data": "fake"}, "replay.solver-data"),
        ({"ridge.penalty": -1.0}, "ridge.penalty"),
        ({"fed.fraction-train": 0.0}, "fed.fraction-train"),
        ({"partition.kind": "classes"}, "partition.site-classes"),
        ({"tasks.scenario": "domain"}, "tasks.datasets"),
        ({"dp.accountant": "gdp"}, "dp.accountant"),
        ({"device": "tpu"}, "device"),
        ({"train.precision": "fp16"}, "train.precision"),
        (
            {"train.precision": "bf16", "dp.enabled": True, "dp.delta": 1e-5},
            "clipping bound holds only",
        ),
    ],
)
def test_bad_values_are_rejected_with_the_key(overrides: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        load_config(overrides)


def test_int_accepted_for_float_and_bool_strings() -> None:
    cfg = load_config({"train.lr": 1, "dp.enabled": "true", "dp.delta": 1e-5})
    assert cfg.train.lr == 1.0 and cfg.dp.enabled is True


def test_importance_ratio_follows_dgr_rule() -> None:
    replay = load_config().replay
    assert [replay.ratio_for(t) for t in (1, 2, 4)] == [1.0, 0.5, 0.25]
    with pytest.raises(ValueError, match="num_tasks_seen"):
        replay.ratio_for(0)


def test_the_user_facing_keys_are_few_and_the_rest_belong_to_something() -> None:
    """Issue 35: at most 40 keys every run reads; every other key is in the section of the
    method, model or tool it belongs to (OWNED_SECTIONS), which names its owner."""
    from common.config import OWNED_SECTIONS

    keys = default_run_config()
    sections = {k.split(".", 1)[0] for k in keys if "." in k}
    assert set(OWNED_SECTIONS) <= sections, set(OWNED_SECTIONS) - sections
    user_facing = [k for k in keys if k.split(".", 1)[0] not in OWNED_SECTIONS]
    assert len(user_facing) <= 40, sorted(user_facing)
    owned = [k for k in keys if k not in user_facing]
    assert owned and all(OWNED_SECTIONS[k.split(".", 1)[0]] for k in owned)


def test_a_key_whose_owner_is_not_in_use_is_reported_not_silently_ignored() -> None:
    """A careless override (a GAN knob on a VAE run, the ridge penalty on an MLP) would do
    nothing; the loader says so, naming each key and what reads it."""
    import warnings

    with pytest.warns(UserWarning, match=r"gan.diversity, ridge.penalty have no effect") as got:
        load_config({"gan.diversity": 0.1, "ridge.penalty": 3.0})
    assert 'solver.arch = "ridge"' in str(got[0].message)
    with pytest.warns(UserWarning, match=r"generator.hidden has no effect.*method='none'"):
        load_config({"method": "none", "generator.hidden": 64})
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # in use, or left at the default: nothing to say
        load_config({"generator.kind": "gan", "gan.diversity": 0.1})
        load_config(
            {"method": "none", "generator.hidden": default_run_config()["generator.hidden"]}
        )


def test_inline_overrides_use_flower_syntax() -> None:
    parsed = parse_overrides("method='none' train.iterations=20 data.name=\"mnist\"")
    assert parsed == {"method": "none", "train.iterations": 20, "data.name": "mnist"}


def test_every_simulation_override_file_is_valid() -> None:
    files = sorted(SIMULATIONS.glob("*.toml"))
    assert files, "simulations/ has no override files"
    for path in files:
        load_config(read_overrides(path))


def test_missing_override_file_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        read_overrides(tmp_path / "nope.toml")
    bad = tmp_path / "bad.toml"
    bad.write_text("method = \n")
    with pytest.raises(ConfigError, match="not valid TOML"):
        read_overrides(bad)


def test_dp_needs_an_explicit_delta_never_one_from_the_data() -> None:
    """delta = 1/(10 n) made every task's noise depend on the site's private record count."""
    for flag in ("dp.enabled", "dp.client-level"):
        extra = {"replay.mode": "global"} if flag == "dp.client-level" else {}
        with pytest.raises(ConfigError, match=r"dp\.delta must be set explicitly"):
            load_config({flag: True, **extra})
        assert load_config({flag: True, "dp.delta": 1e-5, **extra}).dp.delta == 1e-5


@pytest.mark.parametrize("key", ["train.lr", "dp.target-epsilon", "dp.max-grad-norm"])
@pytest.mark.parametrize("value", [float("nan"), float("inf")])
def test_non_finite_numbers_are_refused(key: str, value: float) -> None:
    with pytest.raises(ConfigError, match="finite"):
        load_config({key: value})


def test_dp_metric_opt_ins_and_federated_evaluation_under_dp() -> None:
    base = {"dp.enabled": True, "dp.delta": 1e-5}
    with pytest.raises(ConfigError, match=r"dp\.release-metrics"):
        load_config({**base, "dp.release-metrics": "loss-solver,secret"})
    with pytest.raises(ConfigError, match="private test data"):
        load_config({**base, "fed.evaluate": "both"})
    cfg = load_config({**base, "fed.evaluate": "both", "dp.release-metrics": "evaluation"})
    assert cfg.dp.released_metrics == {"evaluation"}


def test_gan_options_are_checked() -> None:
    from common.config import ConfigError

    assert load_config({"generator.kind": "vae", "generator.arch": "conv"}).generator.arch == "conv"
    with pytest.raises(ConfigError, match=r"gan\.labels"):
        load_config({"gan.labels": "hinge"})


@pytest.mark.parametrize("bad", [0.0, -1.0, 1.5, float("nan")])
def test_kl_weight_must_be_in_the_unit_interval(bad: float) -> None:
    from common.config import ConfigError

    with pytest.raises(ConfigError, match=r"vae\.kl-weight"):
        load_config({"vae.kl-weight": bad})


def test_kl_weight_auto_is_for_the_digits_demo_only() -> None:
    cfg = load_config({})
    assert cfg.vae.kl_weight == "auto"
    assert cfg.vae.kl_weight_for("digits") == 0.25
    assert cfg.vae.kl_weight_for("retinamnist") == cfg.vae.kl_weight_for("mnist") == 1
    assert load_config({"vae.kl-weight": 0.5}).vae.kl_weight_for("digits") == 0.5


def test_per_task_replay_needs_class_incremental_tasks() -> None:
    assert load_config({"replay.mode": "per-task"}).replay.mode == "per-task"
    with pytest.raises(ConfigError, match=re.escape("tasks.scenario='class'")):
        load_config({"replay.mode": "per-task", "tasks.scenario": "permuted"})


def test_class_counts_mixture_is_refused_under_dp_and_outside_ensemble_replay() -> None:
    ok = {"replay.mode": "ensemble", "replay.mixture": "class-counts"}
    assert load_config(ok).replay.mixture == "class-counts"
    with pytest.raises(ConfigError, match="label histogram"):
        load_config({**ok, "dp.enabled": True, "dp.delta": 1e-5, "train.precision": "fp32"})
    with pytest.raises(ConfigError, match=re.escape("needs replay.mode='ensemble'")):
        load_config({**ok, "replay.mode": "per-task"})


DGM_OK = {
    "method": "dgm",
    "generator.kind": "gan",
    "generator.arch": "conv",
    "replay.mode": "global",
}


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"generator.kind": "vae", "generator.arch": "mlp"}, "generator.kind='gan'"),
        ({"generator.arch": "mlp"}, "generator.arch='conv'"),
        ({"tasks.scenario": "permuted"}, "class-incremental"),
        ({"replay.mode": "ensemble"}, "replay.mode='global'"),
        ({"dgm.variant": "neurons"}, "dgm.variant"),
        ({"dgm.s-max": 0.5}, "dgm.s-max"),
        ({"dgm.sparsity": -1.0}, "dgm.sparsity"),
        ({"dp.client-level": True, "dp.delta": 1e-5}, "client-level"),
    ],
)
def test_dgm_options_are_checked(overrides: dict, message: str) -> None:
    assert load_config(DGM_OK).uses_generator
    with pytest.raises(ConfigError, match=re.escape(message)):
        load_config({**DGM_OK, **overrides})


def test_a_moved_key_names_its_new_name_and_old_run_folders_still_load() -> None:
    """A generator kind's knobs live in its own section (vae., gan., embedding.), the bounds
    on replies in robust.: the old spelling typed by a user is refused with the new one; a
    run folder saved before the move loads with the new names (an audit or a resume reads
    it)."""
    from common.config import drop_retired

    with pytest.raises(ConfigError, match=r"generator.features is now embedding.features"):
        load_config({"generator.features": 300})
    with pytest.raises(ConfigError, match=r"train.gan-loss was removed"):
        load_config({"train.gan-loss": "bce"})
    with pytest.raises(ConfigError, match=r"gan.loss was removed"):
        load_config({"gan.loss": "wgan-gp"})
    with pytest.raises(ConfigError, match=r"train.generator-lr is now generator.lr"):
        load_config({"train.generator-lr": 0.01})
    with pytest.raises(ConfigError, match=r"solver.ridge is now ridge.penalty"):
        load_config({"solver.ridge": 10.0})
    # a run folder saved before the moves and removals of issue 35 (2026-12-07)
    saved = load_config().to_run_config()
    old = {k: v for k, v in saved.items() if k.split(".")[0] not in ("generator", "ridge")}
    old |= {k: v for k, v in saved.items() if k in ("generator.kind", "generator.hidden")}
    old |= {k: v for k, v in saved.items() if k in ("generator.latent-dim", "generator.arch")}
    old |= {
        "train.generator-lr": 0.002,
        "train.generator-iterations": 5,
        "eval.generator-quality": False,
        "train.solver-data": "real",
        "solver.ridge": 12.0,
        "replay.ratio": "auto",
        "gan.loss": "bce",
    }
    del old["replay.solver-data"]
    cfg = load_config(drop_retired(old, source="config.json"))
    assert (cfg.generator.lr, cfg.generator.iterations, cfg.generator.quality) == (0.002, 5, False)
    assert cfg.ridge.penalty == 12.0
    with pytest.raises(ValueError, match=r"replay.ratio = '0.5'"):
        drop_retired({**old, "replay.ratio": "0.5"}, source="config.json")
    saved = {**load_config().to_run_config(), "generator.fit-steps": 7}
    del saved["embedding.fit-steps"]
    assert load_config(drop_retired(saved, source="config.json")).embedding.fit_steps == 7
    with pytest.raises(ConfigError, match=r"replay.batch-size was removed"):
        load_config({"replay.batch-size": 64})
    with pytest.raises(ConfigError, match=r"fed.weight-cap is now robust.weight-cap"):
        load_config({"fed.weight-cap": 3.0})
    saved = {**load_config().to_run_config(), "fed.update-clip": 4.0}
    del saved["robust.update-clip"]
    assert load_config(drop_retired(saved, source="config.json")).robust.update_clip == 4.0
