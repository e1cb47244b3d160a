"""What a person sees: Flower's INFO lines go to the run folder's flower.log, not the
console; --verbose (FEDREPLAY_VERBOSE=1) shows them on the console too."""

import io
import logging
from pathlib import Path

import pytest

from server.run.console import VERBOSE_ENV, flower_log_in


def run_with_console(tmp_path: Path) -> tuple[str, str]:
    flower = logging.getLogger("flwr")
    console = io.StringIO()
    handler = logging.StreamHandler(console)
    handler.setLevel(logging.DEBUG)
    flower.addHandler(handler)
    level = flower.level
    flower.setLevel(logging.INFO)
    try:
        with flower_log_in(tmp_path) as path:
            flower.info("[ROUND 1] strategy banner")
            flower.warning("a site failed")
    finally:
        flower.removeHandler(handler)
        flower.setLevel(level)
    assert handler.level == logging.DEBUG  # the console handler is restored afterwards
    return console.getvalue(), path.read_text()


def test_flower_info_goes_to_the_file_and_warnings_stay_on_the_console(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv(VERBOSE_ENV, raising=False)
    console, log = run_with_console(tmp_path)
    assert "strategy banner" not in console and "a site failed" in console
    assert "strategy banner" in log and "a site failed" in log


def test_verbose_shows_flowers_full_log_on_the_console(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(VERBOSE_ENV, "1")
    console, log = run_with_console(tmp_path)
    assert "strategy banner" in console and "a site failed" in console
    assert "strategy banner" in log


def test_the_commands_take_verbose() -> None:
    from server.launch.cli import parse_args

    assert parse_args(["--verbose"]).verbose is True
    assert parse_args([]).verbose is False
