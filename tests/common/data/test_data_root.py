"""Data root and cache resolution, and the not-found error message."""

from __future__ import annotations

from pathlib import Path

import pytest

from common.data import DatasetCorruptError, DatasetNotFoundError, cache_dir, resolve_data_root


def test_resolve_data_root_precedence(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("HOME", str(tmp_path))
    assert resolve_data_root(None) == tmp_path / ".cache" / "fedreplay" / "data"
    monkeypatch.setenv("FEDREPLAY_DATA_ROOT", "/from/env")
    assert resolve_data_root("") == Path("/from/env")
    assert resolve_data_root("/configured") == Path("/configured")
    assert resolve_data_root("~/d") == tmp_path / "d"


def test_cache_dir_created_on_demand(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("FEDREPLAY_CACHE", str(tmp_path / "c" / "d"))
    assert cache_dir() == tmp_path / "c" / "d" and (tmp_path / "c" / "d").is_dir()
    monkeypatch.delenv("FEDREPLAY_CACHE")
    monkeypatch.setenv("HOME", str(tmp_path))
    assert cache_dir() == tmp_path / ".cache" / "fedreplay"


def test_error_messages() -> None:
    err = DatasetNotFoundError("svhn", [Path("/a/x.mat"), "/b/x.mat"], "put x.mat in /a")
    msg = str(err)
    assert "'svhn'" in msg and "/a/x.mat" in msg and "/b/x.mat" in msg and "put x.mat in /a" in msg
    assert "data.download=true" in msg and "FEDREPLAY_DATA_ROOT" in msg
    assert isinstance(err, RuntimeError) and err.looked_at == ["/a/x.mat", "/b/x.mat"]
    assert "data.download" not in str(DatasetNotFoundError("folder", [], can_download=False))
    bad = DatasetCorruptError("mnist", "/r/f.gz", "bad magic")
    assert (
        isinstance(bad, DatasetNotFoundError) and "/r/f.gz" in str(bad) and "bad magic" in str(bad)
    )
