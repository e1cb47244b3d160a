"""Whole task streams through the one continual-learning loop (a federation of one,
server.single): DGR remembers where fine-tuning forgets, the GAN replays, the baselines
keep old tasks."""

from pathlib import Path

import pytest

from common.config import load_config
from common.results import load_summary
from server.single import run_single_site


def run_stream(
    tmp_path: Path,
    method: str,
    kind: str = "vae",
    iterations: int = 150,
    tasks: int = 3,
    precision: str = "fp32",
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
            "generator.quality": False,
            "train.precision": precision,
            "output-dir": str(tmp_path / f"{method}-{precision}"),
        }
    )
    return load_summary(run_single_site(cfg).path)["accuracy_matrix"][-1]


def test_dgr_remembers_where_fine_tuning_forgets(tmp_path: Path) -> None:
    none = run_stream(tmp_path, "none")
    dgr = run_stream(tmp_path, "dgr")
    assert none[0] < 0.1, f"fine-tuning should forget task 0 in class-IL, got {none}"
    assert sum(dgr) / 3 > sum(none) / 3 + 0.3, f"dgr {dgr} vs none {none}"


def test_dgr_in_bfloat16_remembers_like_fp32(tmp_path: Path) -> None:
    """train.precision = "bf16" (autocast: bfloat16 products, fp32 weights): replay still
    works, within a few points of fp32 (the same stream and seed)."""
    fp32 = run_stream(tmp_path, "dgr")
    bf16 = run_stream(tmp_path, "dgr", precision="bf16")
    assert bf16[0] > 0.5, f"bf16 forgot the first task: {bf16}"
    assert sum(bf16) / 3 > sum(fp32) / 3 - 0.1, f"bf16 {bf16} vs fp32 {fp32}"


def test_gan_generator_kind_trains_and_replays(tmp_path: Path) -> None:
    accs = run_stream(tmp_path, "dgr", kind="gan", iterations=100, tasks=2)
    assert accs[1] > 0.8 and len(accs) == 2


def test_exact_and_joint_baselines_keep_old_tasks(tmp_path: Path) -> None:
    for method in ("exact", "joint"):
        accs = run_stream(tmp_path, method, tasks=2)
        assert min(accs) > 0.8, f"{method}: {accs}"


def test_two_single_site_runs_keep_separate_egress_logs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Single-site runs used to append to one shared egress log (run id 1): each run now
    logs under its own run id, and its egress audit sees only its own messages."""
    from common.audit.cli import main as audit

    sites = tmp_path / "sites"
    monkeypatch.setenv("FEDREPLAY_SITE_DIR", str(sites))
    cfg = load_config(
        {"tasks.num-tasks": 1, "train.iterations": 5, "generator.quality": False,
         "solver.hidden": 16, "generator.hidden": 16, "output-dir": str(tmp_path / "runs")}
    )  # fmt: skip
    runs = [run_single_site(cfg).path for _ in range(2)]
    assert len(list((sites / "egress").glob("run-*"))) == 2
    for run in runs:
        assert audit(["egress", str(run), "--sites-dir", str(sites)]) == 0


@pytest.mark.parametrize("method", ["lwf", "ewc"])
def test_regularisation_methods_run_through_the_loop_and_ewc_keeps_its_fisher_at_home(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, method: str
) -> None:
    """LwF and EWC (common.methods) through the whole loop: the server sends the previous
    solver once per task (a payload without generators); EWC's Fisher information stays
    in the site's memory.pt and is in no message the site sent (its egress log)."""
    import torch

    sites = tmp_path / "sites"
    monkeypatch.setenv("FEDREPLAY_SITE_DIR", str(sites))
    accs = run_stream(tmp_path, method, iterations=60, tasks=2)
    assert len(accs) == 2 and accs[1] > 0.8, accs
    memories = list(sites.rglob("memory.pt"))
    if method == "lwf":
        assert not memories  # nothing kept between rounds
        return
    assert len(memories) == 1
    memory = torch.load(memories[0], weights_only=True)
    assert {k.split(".")[1] for k in memory} == {"0", "1"}  # one Fisher per task learnt
    sent = b"".join(p.read_bytes() for p in (sites / "egress").rglob("*") if p.is_file())
    assert sent and b"fisher" not in sent
