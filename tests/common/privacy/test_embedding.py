"""generator.kind = "embedding": a site's per-class random-feature sums released once per
task by the Gaussian mechanism: sensitivity 1, fresh secret noise, planned and recorded in
its lifetime ledger before they exist, never released twice, refused by a second run once
the budget is spent."""

import json
from pathlib import Path

import pytest
import torch
from site_helpers import train_rounds

from client.site import Site, SiteIdentity
from common.config import ConfigError, load_config
from common.models.embedding import RandomFeatures, features_for
from common.privacy.accountant import compute_epsilon
from common.privacy.embedding import GRAM_SENSITIVITY, class_sums, coordinates, noised, release
from common.privacy.ledger import BudgetExceeded, PrivacyStateError
from common.privacy.session import COUNT_NOISE

EMB = {
    "tasks.num-tasks": 2,
    "fed.num-sites": 2,
    "fed.rounds-per-task": 2,
    "train.iterations": 3,
    "solver.hidden": 16,
    "generator.kind": "embedding",
    "generator.hidden": 16,
    "generator.latent-dim": 4,
    "embedding.features": 50,
    "embedding.fit-steps": 3,
    "embedding.fit-batch": 8,
    "replay.mode": "per-task",
    "replay.solver-data": "synthetic",
    "dp.enabled": True,
    "dp.min-records": 0,
    "dp.delta": 1e-5,
    "dp.target-epsilon": 2.0,
}


def test_one_record_moves_the_sums_by_at_most_one() -> None:
    """The sensitivity the noise is calibrated to: every record's features have norm 1."""
    features = RandomFeatures(64, 300, 2.0, seed=0)
    x = torch.rand(200, 1, 8, 8) * torch.tensor(1e3).pow(torch.rand(200, 1, 1, 1))  # any scale
    y = torch.randint(0, 3, (200,))
    assert torch.allclose(features(x).norm(dim=1), torch.ones(200), atol=1e-5)
    full = class_sums(features, x, y, [0, 1, 2])
    for i in (0, 57, 199):
        keep = torch.arange(200) != i
        without = class_sums(features, x[keep], y[keep], [0, 1, 2])
        assert float((full - without).norm()) <= 1.0 + 1e-6
    assert torch.allclose(features.counts(full), torch.bincount(y, minlength=3).double())


def test_the_noise_is_fresh_secret_and_of_the_planned_scale() -> None:
    """Two releases of the same sums differ, even with torch's global generator reseeded
    to the run's public seed before each; their difference has std sigma * sqrt(2)."""
    sums = torch.zeros(2, 5001, dtype=torch.float64)
    torch.manual_seed(0)
    a = noised(sums, sigma=3.0)
    torch.manual_seed(0)
    b = noised(sums, sigma=3.0)
    assert not torch.equal(a, b)
    assert float((a - b).std()) == pytest.approx(3.0 * 2**0.5, rel=0.05)
    with pytest.raises(ValueError, match="sigma"):
        noised(sums, sigma=0.0)


def test_with_the_gram_one_record_moves_the_release_by_at_most_sqrt2() -> None:
    """solver.arch = "ridge": the sums move by <= 1 and the Gram by <= 1 in Frobenius norm,
    which is the L2 norm of its noise coordinates, so the release as a whole by <= sqrt(2),
    the sensitivity its noise is scaled by, for any records (huge, zero, or alike)."""
    features = RandomFeatures(64, 100, 2.0, seed=0)
    x = torch.cat(
        [torch.rand(117, 1, 8, 8) * 50, torch.zeros(1, 1, 8, 8), torch.full((2, 1, 8, 8), 1e30)]
    )
    y = torch.randint(0, 2, (120,))
    full = release(features, x, y, [0, 1], sigma=None, gram=True).double()
    assert full.shape == (2 + features.size, features.size)
    for i in (0, 61, 117, 118, 119):
        keep = torch.arange(120) != i
        less = release(features, x[keep], y[keep], [0, 1], sigma=None, gram=True).double()
        moved_sums = float((full[:2] - less[:2]).norm())
        moved_gram = float((full[2:] - less[2:]).norm())  # Frobenius
        moved = float((coordinates(full) - coordinates(less)).norm())
        assert moved_sums <= 1.0 + 1e-5 and moved_gram <= 1.0 + 1e-5
        assert moved == pytest.approx((moved_sums**2 + moved_gram**2) ** 0.5, rel=1e-5)
        assert moved <= GRAM_SENSITIVITY + 1e-5


def test_the_gram_release_s_noise_is_fresh_symmetric_and_scaled() -> None:
    """Every noise coordinate (sums, the Gram's diagonal, sqrt(2) x a value above it) has
    std sigma sqrt(2): in the matrix, the values off the diagonal have half the variance of
    those on it (it fails with the noise drawn value by value on the upper triangle)."""
    features = RandomFeatures(16, 400, 1.0, seed=0)  # 2 x 801 sums, 321201 Gram values
    x, y = torch.rand(50, 1, 4, 4), torch.randint(0, 2, (50,))
    torch.manual_seed(0)
    a = release(features, x, y, [0, 1], sigma=2.0, gram=True)
    torch.manual_seed(0)
    b = release(features, x, y, [0, 1], sigma=2.0, gram=True)
    assert not torch.equal(a, b)
    assert torch.equal(a[2:], a[2:].T), "the Gram stays symmetric"
    diff = (a - b).double()  # a difference of two draws: std sqrt(2) x each one's
    expected = 2.0 * GRAM_SENSITIVITY * 2**0.5
    above = diff[2:][torch.triu(torch.ones_like(diff[2:]), diagonal=1).bool()]
    for part in (diff[:2].flatten(), torch.diagonal(diff[2:])):
        assert float(part.std()) == pytest.approx(expected, rel=0.06)
    assert float(above.std()) == pytest.approx(expected / 2**0.5, rel=0.02)
    assert float(coordinates(diff).std()) == pytest.approx(expected, rel=0.02)


def test_it_is_refused_outside_the_run_it_is_built_for() -> None:
    for key, value in [
        ("replay.mode", "ensemble"),
        ("replay.solver-data", "real"),
    ]:
        with pytest.raises(ConfigError, match="embedding"):
            load_config({**EMB, key: value})
    with pytest.raises(ConfigError, match="bandwidth"):
        load_config({**EMB, "embedding.bandwidth": "nan"})
    # the ridge solver is solved from embedding releases, and only the server sees it
    with pytest.raises(ConfigError, match="ridge"):
        load_config({**EMB, "solver.arch": "ridge", "generator.kind": "vae"})
    with pytest.raises(ConfigError, match="ridge"):
        load_config({**EMB, "solver.arch": "ridge", "fed.evaluate": "federated"})
    with pytest.raises(ConfigError, match="rounds-per-task"):
        load_config({**EMB, "fed.rounds-per-task": 1})
    load_config({**EMB, "solver.arch": "ridge", "fed.rounds-per-task": 1})


def _train_rounds(site: Site, rounds: range, *, run_id: int) -> list[torch.Tensor]:
    """Rounds of the plan (2 per task); the release each round sent."""
    sent = []
    for _, sent_now in train_rounds(site, rounds, run_id=run_id):
        assert sent_now is not None
        sent.append(sent_now)
    return sent


@pytest.mark.parametrize("solver", ["mlp", "ridge"])
def test_released_once_per_task_recorded_before_and_the_budget_holds_across_runs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, solver: str
) -> None:
    """The same for a release with the Gram (solver.arch = "ridge"): one event per task."""
    monkeypatch.setenv("FEDREPLAY_SITE_DIR", str(tmp_path))
    cfg = load_config({**EMB, "solver.arch": solver})
    site = Site(cfg, SiteIdentity(0, 2))
    sent = _train_rounds(site, range(4), run_id=1)
    # the second round of a task sends the first round's release again, not a new one
    assert torch.equal(sent[0], sent[1]) and torch.equal(sent[2], sent[3])
    assert not torch.equal(sent[0][:, :-1], sent[2][:, :-1])
    state = json.loads((tmp_path / "privacy" / "site-0" / "ledger.json").read_text())
    (run,) = state["runs"].values()
    sigmas = []
    for t in (0, 1):
        part = run["partitions"][f"task-{t}"]
        # the task's whole cost: its noised record count (released first, in the run's
        # first round), then one Gaussian release, sampling rate 1, no DP-SGD step
        assert part["events"] == [[COUNT_NOISE, 1.0, 1], [part["noise_multiplier"], 1.0, 1]]
        sigmas.append(part["noise_multiplier"])
        eps = compute_epsilon([tuple(e) for e in part["events"]], delta=1e-5, kind="rdp")
        assert 1.9 < eps <= 2.0 + 1e-9  # calibrated to end each task at the target
        n = len(site.stream.tasks[t].train)
        features = features_for(cfg, site.stream.shape)
        rows = 2 + (features.size if solver == "ridge" else 0)
        assert tuple(sent[2 * t].shape) == (rows, features.size)
        counts = RandomFeatures.counts(features, sent[2 * t][:2])
        # noised counts: near the truth, never equal to it
        assert abs(float(counts.sum()) - n) < 10 * part["noise_multiplier"] * 2**0.5 * 3
        assert float(counts.sum()) != n
    kinds = [r["kind"] for r in state["ledger"]]  # 2 count releases, then 1 release a task
    assert kinds == ["count release"] * 2 + ["training"] * 2, "later rounds spend nothing"
    # the release in a file of its own, 4 bytes a value, named by its digest; the ledger
    # holds only the name (it is rewritten every round, twice with its backup)
    entry = run["histograms"]["0"]
    stored = tmp_path / "privacy" / "site-0" / entry["file"]
    assert stored.stat().st_size == 4 * sent[0].numel() and entry["sha256"] in stored.name
    assert (tmp_path / "privacy" / "site-0" / "ledger.json").stat().st_size < 20_000
    # a second run on the same records: the lifetime budget is spent, nothing is released
    with pytest.raises(BudgetExceeded):
        Site(cfg, SiteIdentity(0, 2)).train(
            0, payload=None, iterations=3, seed=0, run_id=2, server_round=1
        )


def test_a_lost_or_altered_release_file_is_refused_not_released_again(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The attacker's (or a careless operator's) test: delete or edit the file the ledger
    names between two rounds of a task. The site must neither send something else nor
    release anew (a second release of the task would spend its budget twice)."""
    monkeypatch.setenv("FEDREPLAY_SITE_DIR", str(tmp_path))
    cfg = load_config(EMB)
    site = Site(cfg, SiteIdentity(0, 2))
    (first,) = _train_rounds(site, range(1), run_id=1)
    folder = tmp_path / "privacy" / "site-0"
    (stored,) = (folder / "releases").iterdir()
    kept = stored.read_bytes()
    ledger_before = (folder / "ledger.json").read_text()
    for damage in ("delete", "alter"):
        if damage == "delete":
            stored.unlink()
        else:
            stored.write_bytes(kept[:-4] + b"\0\0\0\0")
        with pytest.raises(PrivacyStateError, match="missing" if damage == "delete" else "altered"):
            _train_rounds(Site(cfg, SiteIdentity(0, 2)), range(1, 2), run_id=1)
        assert (folder / "ledger.json").read_text() == ledger_before, "nothing spent"
    stored.write_bytes(kept)  # restored from backups: the same release goes out again
    (again,) = _train_rounds(Site(cfg, SiteIdentity(0, 2)), range(1, 2), run_id=1)
    assert torch.equal(again, first)
