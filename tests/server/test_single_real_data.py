"""Single-site runs on the real MNIST and RetinaMNIST files: DGR must remember task 1
where fine-tuning forgets it, and the run folder must honour the summary contract."""

from pathlib import Path

import pytest

from common.config import load_config
from common.results import load_summary
from server.single import main, run_single_site

SMALL = {
    "tasks.num-tasks": 2,
    "solver.hidden": 200,
    "generator.hidden": 200,
    "generator.latent-dim": 32,
}


def final_accuracy(tmp_path: Path, data: Path, **overrides) -> float:
    cfg = load_config({**SMALL, "data.root": str(data), "output-dir": str(tmp_path), **overrides})
    summary = load_summary(run_single_site(cfg).path)
    return float(summary["final_average_accuracy"])


@pytest.mark.parametrize(
    ("dataset", "iterations", "margin"), [("mnist", 250, 0.35), ("retinamnist", 150, 0.1)]
)
def test_dgr_beats_fine_tuning_on_real_data(
    tmp_path: Path, real_data_root: Path, dataset: str, iterations: int, margin: float
) -> None:
    common = {"data.name": dataset, "train.iterations": iterations}
    none = final_accuracy(tmp_path, real_data_root, method="none", **common)
    dgr = final_accuracy(tmp_path, real_data_root, method="dgr", **common)
    assert dgr > none + margin, f"{dataset}: dgr {dgr:.3f} vs none {none:.3f}"


def test_cli_writes_the_summary_contract_and_prints_the_folder_last(
    tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    override = tmp_path / "tiny.toml"
    override.write_text('experiment = "cli"\ntasks.num-tasks = 2\ntrain.iterations = 20\n')
    assert (
        main(["--run-config", str(override), "--set", f"output-dir='{tmp_path}'", "--no-progress"])
        == 0
    )
    captured = capfd.readouterr()
    last = captured.out.strip().splitlines()[-1]
    summary = load_summary(last)
    for key in (
        "final_average_accuracy",
        "average_forgetting",
        "accuracy_matrix",
        "wall_time_s",
        "method",
        "dataset",
    ):
        assert key in summary
    assert Path(last).name.startswith("cli-")
    files = ("accuracy_matrix.png", "accuracy_curve.png", "samples.png", "rounds.jsonl")
    # the console has the project's lines; Flower's own INFO stream is in the run folder
    assert "[ROUND" in (Path(last) / "flower.log").read_text()
    assert "[ROUND" not in captured.err
    for name in (*files, "checkpoint.pt"):
        assert (Path(last) / name).is_file()


def test_cli_rejects_a_bad_override_before_doing_anything(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["--set", "train.iteration=3", "--set", f"output-dir='{tmp_path}'"]) == 2
    assert "did you mean 'train.iterations'" in capsys.readouterr().err
    assert not any(tmp_path.iterdir())


@pytest.mark.parametrize("variant", ["activations", "weights"])
def test_dgm_beats_fine_tuning_on_two_mnist_tasks(
    tmp_path: Path, real_data_root: Path, variant: str
) -> None:
    """DGM's generator learns each task alone (masks protect task 1) and still replays it."""
    common = {"data.name": "mnist", "train.iterations": 200, "generator.hidden": 16}
    none = final_accuracy(tmp_path, real_data_root, method="none", **common)
    dgm = final_accuracy(
        tmp_path,
        real_data_root,
        method="dgm",
        **{
            "dgm.variant": variant,
            "generator.kind": "gan",
            "generator.arch": "conv",
            "replay.mode": "global",
            "replay.labels": "condition",
        },
        **common,
    )
    assert dgm > none + 0.2, f"dgm ({variant}) {dgm:.3f} vs none {none:.3f}"
