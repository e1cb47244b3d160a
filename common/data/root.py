"""Where datasets are read from, where downloads go, and the errors for missing files.

The data root the user points to is treated as read-only: nothing is ever written there.
Anything downloaded or extracted goes under :func:`cache_dir`.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path

DATA_ROOT_ENV = "FEDREPLAY_DATA_ROOT"
CACHE_ENV = "FEDREPLAY_CACHE"


def resolve_data_root(configured: str | None) -> Path:
    """The data root: ``configured`` if non-empty, else ``$FEDREPLAY_DATA_ROOT``, else
    ``~/.cache/fedreplay/data``."""
    if configured:
        return Path(configured).expanduser()
    env = os.environ.get(DATA_ROOT_ENV, "")
    if env:
        return Path(env).expanduser()
    return Path("~/.cache/fedreplay/data").expanduser()


def cache_dir() -> Path:
    """``$FEDREPLAY_CACHE`` or ``~/.cache/fedreplay``, created on demand."""
    env = os.environ.get(CACHE_ENV, "")
    path = Path(env).expanduser() if env else Path("~/.cache/fedreplay").expanduser()
    path.mkdir(parents=True, exist_ok=True)
    return path


def download_dir() -> Path:
    """Folder that downloads are written to (``<cache>/data``), created on demand."""
    path = cache_dir() / "data"
    path.mkdir(parents=True, exist_ok=True)
    return path


def cached_data_dir() -> Path:
    """``<cache>/data`` without creating anything (a second place to look for files)."""
    env = os.environ.get(CACHE_ENV, "")
    base = Path(env).expanduser() if env else Path("~/.cache/fedreplay").expanduser()
    return base / "data"


class DatasetNotFoundError(RuntimeError):
    """A dataset's files are not where the loader looked for them.

    The message names the dataset, every path that was tried and how to supply the files.
    """

    def __init__(
        self,
        dataset: str,
        looked_at: Iterable[Path | str],
        hint: str = "",
        *,
        can_download: bool = True,
        reason: str = "",
    ) -> None:
        self.dataset = dataset
        self.looked_at = [str(p) for p in looked_at]
        lines = [f"dataset {dataset!r} not found" + (f": {reason}" if reason else "")]
        lines.append("looked at:")
        lines.extend(f"  {p}" for p in self.looked_at)
        how = hint or "put the files at one of the paths above"
        ways = [how, f"or point data.root / ${DATA_ROOT_ENV} at a folder that has them"]
        if can_download:
            ways.append("or set data.download=true to fetch them into the cache")
        lines.append("to supply it: " + ", ".join(ways))
        super().__init__("\n".join(lines))


class DatasetCorruptError(DatasetNotFoundError):
    """A dataset file exists but cannot be read (truncated, wrong format, missing keys)."""

    def __init__(self, dataset: str, path: Path | str, problem: str) -> None:
        self.path = str(path)
        self.dataset = dataset
        self.looked_at = [self.path]
        fix = (  # a site's own images cannot be downloaded
            "replace it with an intact copy or take it out of the site's folder"
            if dataset == "folder"
            else "replace it with an intact copy (or delete it and set data.download=true)"
        )
        RuntimeError.__init__(
            self,
            f"dataset {dataset!r}: file {self.path} is corrupt or not in the expected format "
            f"({problem}); {fix}",
        )
