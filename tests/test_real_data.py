"""Where the tests find their real data on a fresh machine (tests/real_data.py)."""

from pathlib import Path

import pytest
import real_data as rd  # tests/ is on sys.path (tests/conftest.py)


def fill(root: Path) -> Path:
    (root / "MNIST" / "raw").mkdir(parents=True)
    (root / "medmnist").mkdir(parents=True)
    (root / "medmnist" / "retinamnist.npz").write_bytes(b"x")
    return root


@pytest.fixture
def fresh_machine(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """No test-data variable, no shared folder beside the repository, an empty user cache."""
    monkeypatch.delenv(rd.TEST_DATA_ENV, raising=False)
    monkeypatch.setattr(rd, "REPO", tmp_path / "repo")
    monkeypatch.setattr(rd, "_CACHE_AT_START", str(tmp_path / "cache"))
    return tmp_path / "cache" / "data"


def test_a_fresh_machine_downloads_once_into_the_user_cache(fresh_machine: Path) -> None:
    calls: list[Path] = []

    def download(cache: Path) -> None:
        calls.append(cache)
        fill(cache)

    assert rd.find_real_data(download) == fresh_machine
    assert rd.find_real_data(download) == fresh_machine  # found in the cache now
    assert calls == [fresh_machine]


def test_no_network_gives_one_clear_message(fresh_machine: Path) -> None:
    def offline(cache: Path) -> None:
        raise OSError("Temporary failure in name resolution")

    with pytest.raises(rd.TestDataMissing) as err:
        rd.find_real_data(offline)
    message = str(err.value)
    assert "could not be downloaded" in message and "name resolution" in message
    assert rd.TEST_DATA_ENV in message and str(fresh_machine) in message


def test_the_variable_wins_and_must_be_complete(
    tmp_path: Path, fresh_machine: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(rd.TEST_DATA_ENV, str(fill(tmp_path / "offline")))
    assert rd.find_real_data(lambda _: pytest.fail("no download")) == tmp_path / "offline"
    monkeypatch.setenv(rd.TEST_DATA_ENV, str(tmp_path / "empty"))
    with pytest.raises(rd.TestDataMissing, match="does not hold MNIST/raw"):
        rd.find_real_data(lambda _: pytest.fail("no download"))
