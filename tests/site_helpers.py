"""Drive one site through its rounds as a server would (tests of a site's privacy session).

Imported by tests under ``tests/common/privacy`` (``tests/conftest.py`` puts ``tests/`` on
``sys.path``).
"""

from __future__ import annotations

import torch

from client.site import Site
from server.run.replay_payload import next_payload


def train_rounds(
    site: Site, rounds: range, *, run_id: int, per_task: int = 2
) -> list[tuple[dict[str, float], torch.Tensor | None]]:
    """Rounds ``rounds`` (0-based, ``per_task`` to a task) of ``site``; from task 1 on the
    replay is what a server sends after task 0: the site's own scholar. Returns each
    round's metrics and the embedding release it sent (a copy; None: none)."""
    out, payload = [], None
    for r in rounds:
        task = r // per_task
        if task == 1 and payload is None:
            payload = next_payload(
                site.cfg,
                site.stream,
                1,
                solver=site.solver,
                generator=site.generator,
                site_generators={},
                previous=None,
            )
        metrics = site.train(
            task, payload=payload, iterations=3, seed=0, run_id=run_id, server_round=r + 1
        )
        out.append((metrics, None if site.release is None else site.release.clone()))
    return out
