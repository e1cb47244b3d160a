"""The ridge solver on ScatterNet features (embedding.base = "scatter"; issue 36)."""

from pathlib import Path

import pytest
import torch

from client.client_app import app as client_app
from common.config import ConfigError, load_config
from common.models.embedding import RandomFeatures, features_for
from common.models.ridge import RidgeSolver
from common.models.scatter import Scattering
from common.results import load_summary
from server.run.federation import FederatedRun
from server.run.inprocess import InProcessGrid

SCATTER_RIDGE = {
    "generator.kind": "embedding",
    "solver.arch": "ridge",
    "embedding.base": "scatter",
    "embedding.features": 100,
    "replay.mode": "per-task",
    "replay.solver-data": "synthetic",
    "fed.rounds-per-task": 1,
}


def test_the_coefficients_are_a_fixed_public_map_of_each_image_alone() -> None:
    """Data-free: an image's coefficients do not depend on the batch it is in, on any
    record or on any random draw; every row has norm 1 (what the features' sensitivity
    assumes of nothing: the random features are norm 1 whatever their input)."""
    front = Scattering((1, 28, 28))
    x = torch.rand(5, 1, 28, 28)
    z = front(x)
    assert z.shape == (5, 81 * 7 * 7) and front.size == 81 * 7 * 7
    torch.testing.assert_close(z.norm(dim=1), torch.ones(5))
    torch.testing.assert_close(Scattering((1, 28, 28))(x[2:3]), z[2:3], atol=1e-6, rtol=1e-5)
    assert not torch.allclose(z[0], z[1])
    shifted = torch.roll(x[:1], shifts=1, dims=3)  # nearly invariant to a small shift
    assert float(front(shifted) @ z[0]) > 0.95
    with pytest.raises(ValueError, match="divisible by 4"):
        Scattering((1, 30, 30))


def test_the_features_on_coefficients_are_the_features_of_the_coefficients() -> None:
    cfg = load_config({**SCATTER_RIDGE, "data.name": "mnist"})
    features = features_for(cfg, (1, 28, 28))
    x = torch.rand(4, 1, 28, 28)
    plain = RandomFeatures.from_weights(features.w)  # the same W on precomputed coefficients
    torch.testing.assert_close(features(x), plain(Scattering((1, 28, 28))(x)))
    torch.testing.assert_close(features(x).norm(dim=1), torch.ones(4))  # sensitivity 1 holds
    assert features.w.shape == (81 * 7 * 7, 100)
    assert cfg.embedding.bandwidth_for(81 * 7 * 7) == 0.5  # auto on coefficients (proxy)


def test_a_ridge_solver_on_coefficients_sends_nothing_more() -> None:
    """The transform's filters are not the solver's: its state (what travels) has the same
    keys as on pixels, and nothing that was not fitted."""
    pixels = load_config({**SCATTER_RIDGE, "embedding.base": "pixels"})
    scatter = load_config(SCATTER_RIDGE)
    a = RidgeSolver(features_for(pixels, (1, 8, 8)), 10, ridge=30.0)
    b = RidgeSolver(features_for(scatter, (1, 8, 8)), 10, ridge=30.0)
    assert a.state_dict().keys() == b.state_dict().keys()
    assert b.w.shape[0] == 81 * 2 * 2


def test_scatter_features_are_for_the_ridge_solver_alone() -> None:
    with pytest.raises(ConfigError, match=r"embedding\.base='scatter' is for solver\.arch='ridge'"):
        load_config({**SCATTER_RIDGE, "solver.arch": "mlp", "fed.rounds-per-task": 2})
    with pytest.raises(ConfigError, match=r"embedding\.base"):
        load_config({**SCATTER_RIDGE, "embedding.base": "wavelets"})
    cfg = load_config(SCATTER_RIDGE)
    assert cfg.releases_statistics and not cfg.fits_generator
    assert load_config({**SCATTER_RIDGE, "embedding.base": "pixels"}).fits_generator


@pytest.mark.slow
def test_a_private_federation_on_coefficients_solves_the_solver_and_fits_no_generator(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two sites, two tasks of the digits, under DP: each site releases its task's sums and
    Gram on the coefficients once; the server solves the solver from them (well above
    chance on both tasks' classes) and fits no generator, so no replay travels."""
    monkeypatch.setenv("FEDREPLAY_SITE_DIR", str(tmp_path / "sites"))
    monkeypatch.setenv("FEDREPLAY_SERVER_DIR", str(tmp_path / "server"))
    cfg = load_config(
        {
            **SCATTER_RIDGE,
            "output-dir": str(tmp_path / "runs"),
            "tasks.num-tasks": 2,
            "fed.num-sites": 2,
            "dp.enabled": True,
            "dp.min-records": 0,
            "dp.delta": 1e-5,
            "dp.target-epsilon": 8.0,
            "generator.quality": False,
        }
    )
    run = FederatedRun(cfg)
    assert run.generator is None
    sent: list[set[str]] = []

    def hook(message, reply):
        sent.append(set(message.content.array_records))
        return reply

    grid = InProcessGrid(client_app, cfg.to_run_config(), num_nodes=2, run_id=1, reply_hook=hook)
    summary = load_summary(run.run(grid).path)
    assert summary["status"] == "completed"
    assert summary["final_average_accuracy"] > 0.7, summary["accuracy_matrix"]  # chance: 0.25
    assert sent and all(not any(r.startswith("replay") for r in records) for records in sent)
    assert all(0 < eps <= 8.0 for eps in summary["dp_epsilon_per_site"].values())
