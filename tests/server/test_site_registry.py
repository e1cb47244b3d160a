"""The server's registry of sites' lifetime epsilons: a report that goes backwards, or
repeats itself where it should have grown, quarantines the site; a later round of the same
run that spent nothing (generator.kind = "embedding") may repeat its numbers."""

from pathlib import Path

from server.sites.registry import SiteRegistry


def test_a_round_that_spent_nothing_may_repeat_its_numbers_in_the_same_run_only(
    tmp_path: Path,
) -> None:
    reg = SiteRegistry(tmp_path / "registry.json")
    assert reg.check("site-0", epsilon=0.9, steps=1, run="run-a", server_round=1) is None
    assert (
        reg.check("site-0", epsilon=0.9, steps=1, run="run-a", server_round=2) is None
    )  # idle round
    assert reg.check("site-0", epsilon=0.95, steps=2, run="run-a", server_round=3) is None
    # the same numbers from another run: its ledger was reset and spent the same again
    refused = reg.check("site-0", epsilon=0.95, steps=2, run="run-b", server_round=1)
    assert refused is not None and "reset" in refused
    assert (
        reg.check("site-0", epsilon=5.0, steps=9, run="run-b", server_round=2) is not None
    )  # quarantined


def test_the_same_numbers_in_an_earlier_round_are_refused(tmp_path: Path) -> None:
    reg = SiteRegistry(tmp_path / "registry.json")
    assert reg.check("site-0", epsilon=0.9, steps=3, run="run-a", server_round=4) is None
    refused = reg.check("site-0", epsilon=0.9, steps=3, run="run-a", server_round=2)
    assert refused is not None and "reset" in refused
    reg2 = SiteRegistry(tmp_path / "registry2.json")
    assert reg2.check("site-1", epsilon=0.9, steps=3, run="run-a", server_round=4) is None
    assert (
        reg2.check("site-1", epsilon=0.8, steps=3, run="run-a", server_round=5) is not None
    )  # went back
