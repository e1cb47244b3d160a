"""dp.class-histogram: a site's class counts released once per task by the Gaussian
mechanism, planned and recorded in its ledger, drawn from secret fresh noise, and used
only to weight the classes its solver draws from its own generator."""

import json
from pathlib import Path

import pytest
import torch
from site_helpers import train_rounds

from client.site import Site, SiteIdentity
from common.config import ConfigError, load_config
from common.privacy.histogram import class_weights, noised_class_counts
from common.privacy.session import COUNT_NOISE
from common.training import learner
from common.training.learner import synthetic_batches

HIST = {
    "tasks.num-tasks": 2,
    "fed.num-sites": 2,
    "fed.rounds-per-task": 2,
    "train.iterations": 3,
    "solver.hidden": 16,
    "generator.hidden": 16,
    "generator.latent-dim": 4,
    "train.solver-data": "synthetic",
    "dp.enabled": True,
    "dp.min-records": 0,
    "dp.delta": 1e-5,
    "dp.target-epsilon": 2.0,
    "dp.class-histogram": True,
}


def test_the_counts_are_noised_with_fresh_secret_noise() -> None:
    labels = torch.tensor([0] * 300 + [1] * 100)
    torch.manual_seed(0)
    a = noised_class_counts(labels, [0, 1], sigma=5.0)
    torch.manual_seed(0)  # a public seed does not fix the noise
    b = noised_class_counts(labels, [0, 1], sigma=5.0)
    assert a != b
    assert a[0] != 300.0 and a[1] != 100.0  # never the raw counts
    assert abs(a[0] - 300) < 40 and abs(a[1] - 100) < 40
    with pytest.raises(ValueError, match="positive"):
        noised_class_counts(labels, [0, 1], sigma=0.0)


def test_weights_drop_negative_counts_and_fall_back_to_uniform() -> None:
    assert class_weights({4: 120.5, 5: -3.0}, [4, 5]) == [120.5, 0.0]
    assert class_weights({4: -1.0, 5: -3.0}, [4, 5]) == [1.0, 1.0]


def test_a_class_the_site_lacks_is_hardly_drawn_for_its_solver() -> None:
    labels = torch.tensor([4] * 500)  # the task is classes 4 and 5; this site holds no 5
    weights = class_weights(noised_class_counts(labels, [4, 5], sigma=3.0), [4, 5])

    class Echo(torch.nn.Module):
        def sample(self, y: torch.Tensor, *, generator=None) -> torch.Tensor:
            return y.float()

    draws = synthetic_batches(Echo(), [4, 5], 1000, rng=torch.Generator(), weights=weights)
    _, y = next(draws)
    assert (y == 5).float().mean() < 0.05
    _, uniform = next(synthetic_batches(Echo(), [4, 5], 1000, rng=torch.Generator()))
    assert 0.4 < (uniform == 5).float().mean() < 0.6


def test_it_is_refused_where_it_would_not_be_used_or_not_be_private() -> None:
    with pytest.raises(ConfigError, match="class-histogram"):
        load_config({**HIST, "train.solver-data": "real"})
    with pytest.raises(ConfigError, match="class-histogram"):
        load_config({**HIST, "dp.enabled": False})


def test_released_once_per_task_planned_and_within_the_budget(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every planned round runs without BudgetExceeded (the histograms were planned with
    the steps), each task's ledger holds exactly one step at sampling rate 1, and the
    second round of a task uses the counts released in the first."""
    monkeypatch.setenv("FEDREPLAY_SITE_DIR", str(tmp_path))
    drawn: list = []  # the class weights the solver's synthetic batches were drawn with
    real_batches = learner.synthetic_batches

    def spy(*args, **kwargs):
        drawn.append(kwargs.get("weights"))
        return real_batches(*args, **kwargs)

    monkeypatch.setattr(learner, "synthetic_batches", spy)
    cfg = load_config(HIST)
    site = Site(cfg, SiteIdentity(0, 2))
    # 2 tasks x 2 rounds, the whole plan; the site's own scholar replays task 1
    spent = [m["dp-epsilon"] for m, _ in train_rounds(site, range(4), run_id=1)]
    assert max(spent) <= 2.0 + 1e-6 and max(spent) > 1.9  # calibrated to end at the target
    state = json.loads((tmp_path / "privacy" / "site-0" / "ledger.json").read_text())
    (run,) = state["runs"].values()
    assert sorted(run["histograms"]) == ["0", "1"]
    for t in ("0", "1"):
        events = run["partitions"][f"task-{t}"]["events"]
        assert events[0] == [COUNT_NOISE, 1.0, 1]  # the task's record count, released first
        assert [e for e in events[1:] if e[1] == 1.0 and e[2] == 1] == [
            [run["partitions"][f"task-{t}"]["noise_multiplier"], 1.0, 1]
        ]
        assert len(run["histograms"][t]) == 2  # the task's two classes
    expected = [class_weights(dict(enumerate(run["histograms"]["0"])), [0, 1])] * 2
    expected += [class_weights(dict(zip([2, 3], run["histograms"]["1"], strict=True)), [2, 3])] * 2
    assert drawn == expected  # every round's solver drew by its task's released counts
