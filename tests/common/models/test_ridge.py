"""solver.arch = "ridge": the closed-form solver on public random features. Its fit is the
ridge regression of one-hot targets on the features; statistics added task by task give
exactly the fit over all tasks' data (nothing forgotten); classes it has no statistics of
are never predicted; a release of the wrong shape is refused."""

import pytest
import torch

from common.models.embedding import RandomFeatures
from common.models.ridge import RidgeSolver
from common.privacy.embedding import release

FEATURES = RandomFeatures(16, 60, 1.0, seed=3)


def _blobs(classes: list[int], n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    centres = torch.randn(10, 1, 4, 4, generator=torch.Generator().manual_seed(0)) * 1.5
    y = torch.tensor(classes).repeat_interleave(n)
    return centres[y] + 0.3 * torch.randn(len(y), 1, 4, 4, generator=g), y


def test_the_fit_is_ridge_regression_on_the_features() -> None:
    x, y = _blobs([0, 1, 2], 40, seed=1)
    solver = RidgeSolver(FEATURES, 10, ridge=0.5)
    solver.fit(release(FEATURES, x, y, [0, 1, 2], sigma=None, gram=True), [0, 1, 2])
    psi = FEATURES(x).double()
    targets = torch.nn.functional.one_hot(y, 3).double()
    want = torch.linalg.solve(psi.T @ psi + 0.5 * torch.eye(psi.shape[1]), psi.T @ targets)
    assert torch.allclose(solver.head.weight[:3].double(), want.T, atol=1e-3)
    assert (solver(x).argmax(1) == y).float().mean() > 0.95


def test_tasks_absorbed_one_by_one_give_the_fit_over_all_of_them() -> None:
    """Class-incremental without forgetting: task 1's statistics, then task 2's, equal
    one fit over both tasks' records."""
    (x1, y1), (x2, y2) = _blobs([0, 1], 30, seed=1), _blobs([2, 3], 30, seed=2)
    stepwise = RidgeSolver(FEATURES, 10, ridge=1.0)
    stepwise.absorb(release(FEATURES, x1, y1, [0, 1], sigma=None, gram=True), [0, 1])
    assert set(stepwise(x2).argmax(1).tolist()) <= {0, 1}, "unseen classes are never predicted"
    stepwise.absorb(release(FEATURES, x2, y2, [2, 3], sigma=None, gram=True), [2, 3])
    x, y = torch.cat([x1, x2]), torch.cat([y1, y2])
    at_once = RidgeSolver(FEATURES, 10, ridge=1.0)
    at_once.fit(release(FEATURES, x, y, [0, 1, 2, 3], sigma=None, gram=True), [0, 1, 2, 3])
    assert torch.allclose(stepwise.head.weight, at_once.head.weight, atol=1e-4)
    assert (stepwise(x).argmax(1) == y).float().mean() > 0.95
    # fit() without a release leaves the statistics alone; a loaded state predicts the same
    again = RidgeSolver(FEATURES, 10, ridge=1.0)
    again.load_state_dict(stepwise.state_dict())
    assert torch.equal(again(x), stepwise(x))


def test_a_release_of_the_wrong_shape_is_refused() -> None:
    solver = RidgeSolver(FEATURES, 10, ridge=1.0)
    with pytest.raises(ValueError, match="shape"):
        solver.fit(torch.zeros(2, FEATURES.size), [0, 1])  # sums only, no Gram
    with pytest.raises(ValueError, match="ridge"):
        RidgeSolver(FEATURES, 10, ridge=0.0)
