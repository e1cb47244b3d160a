"""What a person sees while a run goes on: the project's own lines on the console, Flower's
full log in the run folder.

Flower's own INFO stream (strategy banners every task, every round's aggregated metrics,
each line twice) drowns the project's progress; while a run lasts it goes to
``<run folder>/flower.log`` and only Flower's warnings and errors stay on the console (so a
crash is still seen, and ``fedreplay run`` still finds the error in the stream).
``--verbose`` (``FEDREPLAY_VERBOSE=1`` in the ServerApp's environment) keeps Flower's full
log on the console as well.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

FLOWER_LOG = "flower.log"
VERBOSE_ENV = "FEDREPLAY_VERBOSE"  # "1": Flower's full log on the console too
QUIET = ("Federated evaluation will be skipped",)  # said at every task's start, by design


class _Quiet(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return not any(q in record.getMessage() for q in QUIET)


def configure_logging() -> None:
    """INFO for our own ``fedreplay.*`` loggers, once, without propagating to the root
    logger (``basicConfig`` on the root would print every Flower line a second time)."""
    logger = logging.getLogger("fedreplay")
    if not any(getattr(h, "_fedreplay", False) for h in logger.handlers):
        handler = logging.StreamHandler()
        handler.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
        handler._fedreplay = True  # type: ignore[attr-defined]
        logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    logger.propagate = False
    flower = logging.getLogger("flwr")
    if not any(isinstance(f, _Quiet) for f in flower.filters):
        flower.addFilter(_Quiet())


@contextmanager
def flower_log_in(folder: Path) -> Iterator[Path]:
    """Flower's log into ``folder/flower.log``; its console handlers keep warnings only
    (all of it with ``FEDREPLAY_VERBOSE=1``)."""
    logger = logging.getLogger("flwr")
    path = folder / FLOWER_LOG
    to_file = logging.FileHandler(path, encoding="utf-8")
    to_file.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
    quiet = _Quiet()
    verbose = os.environ.get(VERBOSE_ENV) == "1"
    saved = [] if verbose else [(h, h.level) for h in logger.handlers]
    propagate = logger.propagate
    logger.propagate = False  # a root handler (another library's basicConfig) echoes it all
    for handler, _ in saved:
        handler.setLevel(max(handler.level, logging.WARNING))
        handler.addFilter(quiet)
    logger.addHandler(to_file)
    try:
        yield path
    finally:
        logger.removeHandler(to_file)
        logger.propagate = propagate
        to_file.close()
        for handler, level in saved:
            handler.setLevel(level)
            handler.removeFilter(quiet)
