"""``fedreplay run``'s options: checked before anything starts, passed on to Flower."""

from pathlib import Path

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


def test_the_dp_digits_demo_that_cannot_work_is_refused_before_it_starts(
    tmp_path, monkeypatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """The review's demo: DP on the default digits, about 145 records per site and task
    under dp.min-records = 256: every site sat out, and 100 s later the run failed with a
    traceback and Flower's exit code 700. It is now refused at once, naming the counts;
    the same run with a min-records its sites meet is not."""
    from server.launch.cli import main

    monkeypatch.chdir(tmp_path)
    dp = "dp.enabled=true dp.target-epsilon=8 dp.delta=1e-5"
    code = main(["--set", dp, "--sites", "2", "--output-dir", "o"])
    err = capsys.readouterr().err
    assert code == 2, err
    assert "dp.min-records=256" in err and "task 1" in err and "sit the task out" in err
    held = err.split("fewer records of task 1 (")[1].split(";")[0]
    low, high = (int(v) for v in held.split("-"))
    assert 100 < low <= high < 256, held
    assert not (tmp_path / "o").exists() or not any((tmp_path / "o").iterdir())
    from server.launch.cli import parse_args
    from server.launch.launcher import Launch

    sets = ["--set", f"{dp} dp.min-records=100", "--sites", "2", "--output-dir", "o"]
    Launch(parse_args(sets)).prepare()  # its sites meet it: not refused


def test_one_config_writes_to_one_place_whichever_way_in(tmp_path, monkeypatch) -> None:
    """Before, `fedreplay run` and `fedreplay single` put a relative output-dir under the
    current directory and `flwr run .` under ~/fedreplay: one config, two places. Now every
    way in resolves it by server.run.output_dir; only a --output-dir typed on a command line is
    a path against the current directory."""
    from common.config import load_config
    from server.launch.launcher import Launch
    from server.run.output_dir import resolve_output_dir
    from server.single import single_site_config

    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.delenv("FEDREPLAY_OUTPUT_DIR", raising=False)
    expected = tmp_path / "home" / "fedreplay" / "runs"
    assert resolve_output_dir("runs") == expected  # the ServerApp (flwr run ., in-process)
    launch = Launch(parse_args(["--sites", "2"]))
    launch.prepare()
    assert launch.base == expected  # fedreplay run
    assert Path(single_site_config(load_config({})).output_dir) == expected  # fedreplay single
    typed = Launch(parse_args(["--sites", "2", "--output-dir", "o"]))
    typed.prepare()
    assert typed.base == tmp_path / "o"
