"""The direction bound on embedding releases: a site that swaps its classes inside the
norm bound is held to the other sites' directions; honest sites, and a site that holds
most of a class, keep (nearly) what they sent; the Gram block of a ridge release is held too."""

import numpy as np

from server.robust.release_consensus import blocks, direction_bound

F = 64  # features


def _means(rng: np.random.Generator) -> np.ndarray:
    """Two class means with a shared part (random features' means are correlated)."""
    common = rng.normal(size=F)
    return np.stack([common + rng.normal(size=F) for _ in range(2)]) / np.sqrt(2 * F)


def _site(rng: np.random.Generator, means: np.ndarray, n: tuple[int, int], noise: float):
    """(2, F): n records of each class (their sums), a sampling spread, DP-like noise."""
    rows = [
        k * m + np.sqrt(k) * rng.normal(size=F) / np.sqrt(F) for k, m in zip(n, means, strict=True)
    ]
    return np.stack(rows) + noise * rng.normal(size=(2, F))


def _cos(a: np.ndarray, b: np.ndarray) -> float:
    return float(a @ b / np.linalg.norm(a) / np.linalg.norm(b))


def test_a_site_that_swaps_its_classes_is_held_to_the_others_directions() -> None:
    rng = np.random.default_rng(0)
    means = _means(rng)
    honest = {f"site-{i}": _site(rng, means, (100, 100), 1.0) for i in range(4)}
    swapped = _site(rng, means, (100, 100), 1.0)[::-1] * 2.0  # swapped, within a 2x bound
    releases = {**honest, "site-9": swapped}
    held, factors = direction_bound(releases, cap=2.0)
    assert factors["site-9"] < 0.5 and all(factors[s] > 0.5 for s in honest)
    for c in range(2):  # the summed class rows point back to their class
        raw = sum(r[c] for r in releases.values())
        bounded = sum(r[c] for r in held.values())
        assert _cos(bounded, means[c]) > 0.99 > _cos(raw, means[c]) + 0.03
        # what is left of the hostile row off the honest direction: at most 2 x an
        # honest site's part off it
        honest_rest = np.median(
            [
                np.linalg.norm(r[c] - (r[c] @ means[c]) * means[c] / means[c] @ means[c])
                for r in honest.values()
            ]
        )
        m = means[c] / np.linalg.norm(means[c])
        assert np.linalg.norm(held["site-9"][c] - (held["site-9"][c] @ m) * m) < 3 * honest_rest
        assert np.linalg.norm(held["site-9"][c]) <= np.linalg.norm(swapped[c]) + 1e-9


def test_honest_sites_and_a_majority_holder_are_left_alone() -> None:
    rng = np.random.default_rng(1)
    means = _means(rng)
    sizes = [(500, 20), (30, 40), (25, 35), (40, 30), (35, 25)]  # site-0 holds most of class 0
    releases = {f"site-{i}": _site(rng, means, n, 1.0) for i, n in enumerate(sizes)}
    held, factors = direction_bound(releases, cap=2.0)
    assert factors["site-0"] > 0.9  # k times the typical weight: sqrt(k) times the spread
    changed = [s for s in releases if not np.allclose(held[s], releases[s])]
    assert len(changed) <= 1, changed  # a median cut reaches at most a tail site
    for c in range(2):
        raw = sum(r[c] for r in releases.values())
        assert _cos(sum(r[c] for r in held.values()), raw) > 0.999


def test_off_below_three_sites_or_without_a_cap() -> None:
    rng = np.random.default_rng(2)
    two = {"a": rng.normal(size=(2, F)), "b": -rng.normal(size=(2, F))}
    assert all(np.array_equal(direction_bound(two, cap=2.0)[0][s], two[s]) for s in two)
    three = {**two, "c": rng.normal(size=(2, F))}
    assert all(f == 1.0 for f in direction_bound(three, cap=0.0)[1].values())


def test_the_gram_of_a_ridge_release_is_a_block_of_its_own() -> None:
    rng = np.random.default_rng(3)
    release = np.zeros((2 + F, F))
    assert blocks(release)[-1] == (slice(2, 2 + F), slice(None)) and len(blocks(release)) == 3
    means = _means(rng)

    def ridge_site(scale: float = 1.0) -> np.ndarray:
        psi = rng.normal(size=(200, F)) / np.sqrt(F) + means[0]
        return np.concatenate([_site(rng, means, (100, 100), 0.5), psi.T @ psi]) * scale

    honest = {f"site-{i}": ridge_site() for i in range(4)}
    constant = np.full((2 + F, F), np.linalg.norm(honest["site-0"]) / np.sqrt((2 + F) * F))
    held, factors = direction_bound({**honest, "site-9": constant}, cap=2.0)
    gram_honest = sum(r[2:] for r in honest.values())
    assert factors["site-9"] < 0.5 and all(factors[s] == 1.0 for s in honest)
    # the constant Gram is almost orthogonal to the honest one: held, the sum keeps its shape
    g_held, g_raw = gram_honest + held["site-9"][2:], gram_honest + constant[2:]
    assert (
        _cos(g_held.ravel(), gram_honest.ravel())
        > 0.99
        > _cos(g_raw.ravel(), gram_honest.ravel()) + 0.02
    )
