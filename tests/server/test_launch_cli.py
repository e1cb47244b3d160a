"""``fedreplay run``'s options: checked before anything starts, passed on to Flower."""

import pytest

from server.launch.cli import parse_args


def test_parallel_sites_is_a_count(capsys: pytest.CaptureFixture[str]) -> None:
    assert parse_args(["--parallel-sites", "5"]).parallel_sites == 5
    assert parse_args([]).parallel_sites == 0
    with pytest.raises(SystemExit) as exit_:
        parse_args(["--parallel-sites", "-1"])
    assert exit_.value.code == 2
    assert "--parallel-sites must be >= 0" in capsys.readouterr().err


def test_parallel_sites_tells_ray_how_many_cpus_to_share_out(tmp_path, monkeypatch) -> None:
    from server.launch.launcher import Launch

    monkeypatch.chdir(tmp_path)
    launch = Launch(parse_args(["--sites", "5", "--parallel-sites", "5", "--output-dir", "o"]))
    _, _, federation = launch.prepare()
    assert federation == [
        "--federation-config",
        "num-supernodes=5 client-resources-num-cpus=1 init-args-num-cpus=5",
    ]
    plain = Launch(parse_args(["--sites", "5", "--output-dir", "o"])).prepare()[2]
    assert "init-args" not in plain[1]
