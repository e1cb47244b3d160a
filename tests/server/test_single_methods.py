"""Whole task streams through the one continual-learning loop (a federation of one,
server.single): DGR remembers where fine-tuning forgets, the GAN replays, the baselines
keep old tasks."""

from pathlib import Path

from common.config import load_config
from common.results import load_summary
from server.single import run_single_site


def run_stream(
    tmp_path: Path, method: str, kind: str = "vae", iterations: int = 150, tasks: int = 3
) -> list[float]:
    cfg = load_config(
        {
            "method": method,
            "generator.kind": kind,
            "train.iterations": iterations,
            "tasks.num-tasks": tasks,
            "solver.hidden": 100,
            "generator.hidden": 100,
            "generator.latent-dim": 16,
            "eval.generator-quality": False,
            "output-dir": str(tmp_path / method),
        }
    )
    return load_summary(run_single_site(cfg).path)["accuracy_matrix"][-1]


def test_dgr_remembers_where_fine_tuning_forgets(tmp_path: Path) -> None:
    none = run_stream(tmp_path, "none")
    dgr = run_stream(tmp_path, "dgr")
    assert none[0] < 0.1, f"fine-tuning should forget task 0 in class-IL, got {none}"
    assert sum(dgr) / 3 > sum(none) / 3 + 0.3, f"dgr {dgr} vs none {none}"


def test_gan_generator_kind_trains_and_replays(tmp_path: Path) -> None:
    accs = run_stream(tmp_path, "dgr", kind="gan", iterations=100, tasks=2)
    assert accs[1] > 0.8 and len(accs) == 2


def test_exact_and_joint_baselines_keep_old_tasks(tmp_path: Path) -> None:
    for method in ("exact", "joint"):
        accs = run_stream(tmp_path, method, tasks=2)
        assert min(accs) > 0.8, f"{method}: {accs}"
