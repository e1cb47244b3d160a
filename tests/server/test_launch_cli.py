"""``fedreplay run``'s options: checked before anything starts."""

import pytest

from server.launch.cli import parse_args


def test_a_share_of_a_cpu_per_site_is_accepted() -> None:
    assert parse_args(["--cpus-per-site", "0.4"]).cpus_per_site == pytest.approx(0.4)
    assert parse_args([]).cpus_per_site == 1


@pytest.mark.parametrize("bad", ["0", "-1", "inf", "nan"])
def test_a_cpu_share_that_is_not_positive_is_refused(
    bad: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exit_:
        parse_args(["--cpus-per-site", bad])
    assert exit_.value.code == 2
    assert "--cpus-per-site must be a number > 0" in capsys.readouterr().err
