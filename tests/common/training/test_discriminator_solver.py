"""solver.arch = "discriminator": the AC-GAN discriminator's auxiliary head classifies (the
DGM paper's option). It trains only as the critic, learns replayed classes through its
auxiliary head, and is the solver: nothing of it stays private at the site."""

from __future__ import annotations

import pytest
import torch

from common.config import ConfigError, load_config
from common.data.streams import build_stream
from common.metrics import accuracy
from common.models.solver import DiscriminatorSolver
from common.replay import ReplayBatch
from common.training.learner import Learner

CPU = torch.device("cpu")
BASE = {
    "method": "dgm",
    "replay.mode": "global",
    "generator.kind": "gan",
    "generator.arch": "conv",
    "generator.hidden": 8,
    "generator.latent-dim": 8,
    "solver.arch": "discriminator",
    "solver.hidden": 16,
    "tasks.num-tasks": 2,
    "generator.quality": False,
}


class StoredReplay:
    """Replay of stored records (a stand-in for a generator: the test is about the head)."""

    def __init__(self, x: torch.Tensor, y: torch.Tensor) -> None:
        self.x, self.y = x, y
        self.classes = tuple(sorted(set(y.tolist())))
        self.rng = torch.Generator().manual_seed(0)

    def sample(self, n: int) -> ReplayBatch:
        idx = torch.randint(len(self.y), (n,), generator=self.rng)
        return ReplayBatch(self.x[idx], self.y[idx])


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"method": "none"}, "method='dgr' or 'dgm' with generator.kind='gan'"),
        ({"method": "dgr", "generator.kind": "vae"}, "generator.kind='gan'"),
        ({"method": "dgr", "generator.arch": "mlp"}, "generator.arch='conv'"),
        ({"replay.solver-data": "synthetic"}, "replay.solver-data='synthetic' does not apply"),
    ],
)
def test_the_discriminator_solver_needs_a_conv_gan_that_learns_from_real_data(
    overrides: dict, message: str
) -> None:
    with pytest.raises(ConfigError, match=message):
        load_config({**BASE, **overrides})


def learner(cfg_overrides: dict | None = None) -> tuple[Learner, object]:
    cfg = load_config({**BASE, **(cfg_overrides or {})})
    stream = build_stream(cfg)
    torch.manual_seed(0)
    return (
        Learner(
            cfg, shape=stream.shape, num_classes=stream.num_classes, device=torch.device("cpu")
        ),
        stream,
    )


def test_the_solver_is_the_critic_and_only_the_critic_steps() -> None:
    lrn, stream = learner({"train.iterations": 120})
    assert isinstance(lrn.solver, DiscriminatorSolver) and lrn.critic_is_solver
    assert lrn.critic is lrn.solver.discriminator
    task = stream.tasks[0]
    before = accuracy(lrn.solver, task.test, device=CPU)
    metrics = lrn.train(
        task.train, replay=None, num_tasks_seen=1, classes_seen=task.classes, iterations=120, seed=0
    )
    assert "loss_solver" not in metrics and "loss_discriminator" in metrics
    after = accuracy(lrn.solver, task.test, device=CPU)
    assert after > 0.9 > before, (
        f"the aux head learned task 1 through the critic: {before} -> {after}"
    )


@pytest.mark.parametrize("with_replay", [True, False])
def test_replay_teaches_the_aux_head_the_finished_classes(with_replay: bool) -> None:
    """Task 2 with replay of task 1 (aux-only: the generator still draws task 2 alone)
    keeps task 1; without replay the same learner forgets it (class-incremental)."""
    lrn, stream = learner()
    t1, t2 = stream.tasks[0], stream.tasks[1]
    lrn.train(
        t1.train, replay=None, num_tasks_seen=1, classes_seen=t1.classes, iterations=120, seed=0
    )
    assert accuracy(lrn.solver, t1.test, device=CPU) > 0.9
    replay = StoredReplay(t1.train.x, t1.train.y) if with_replay else None
    lrn.train(
        t2.train,
        replay=replay,
        num_tasks_seen=2,
        classes_seen=stream.classes_seen(1),
        iterations=120,
        seed=1,
    )
    kept, learned = (
        accuracy(lrn.solver, t1.test, device=CPU),
        accuracy(lrn.solver, t2.test, device=CPU),
    )
    assert learned > 0.85, f"task 2: {learned}"
    if with_replay:
        assert kept > 0.8, f"replay through the aux head should keep task 1: {kept}"
    else:
        assert kept < 0.3, f"without replay task 1 should be forgotten: {kept}"


def test_nothing_of_the_discriminator_solver_stays_private_at_a_site() -> None:
    """The site keeps no critic state of its own: the discriminator travels as the solver
    (the privacy scope says so), and a stored critic cannot overwrite the server's solver."""
    from client.site import Site
    from common.sitedata import SiteIdentity

    cfg = load_config(BASE)
    site = Site(cfg, SiteIdentity(0, 1, "s"))
    assert site.critic_state() is None
    solver_state = {k: v.clone() for k, v in site.solver.state_dict().items()}
    junk = {k.removeprefix("discriminator."): torch.zeros_like(v) for k, v in solver_state.items()}
    site.load_critic_state(junk)
    for key, value in site.solver.state_dict().items():
        torch.testing.assert_close(value, solver_state[key])
