"""Randomness that protects is secret and fresh: the attacker runs it twice and compares."""

import numpy as np
import torch

from common.config import load_config
from common.data.streams import build_stream
from common.data.types import real_data_for
from common.device import seed_everything
from common.privacy.dp_step import DPPlan
from common.training.batches import poisson_batches
from common.training.learner import Learner

CFG = load_config(
    {
        "tasks.num-tasks": 2,
        "solver.hidden": 16,
        "generator.hidden": 16,
        "generator.latent-dim": 4,
        "dp.enabled": True,
        "dp.delta": 1e-5,
    }
)


def test_two_plans_draw_different_masks_and_noise_even_after_public_seeding() -> None:
    split = real_data_for("dgr", build_stream(CFG).tasks, 0)
    draws = []
    for _ in range(2):
        seed_everything(CFG.seed)  # what the server and config.json know
        plan = DPPlan(
            noise_multiplier=1.0, max_grad_norm=1.0, sample_rate=0.1, on_step=lambda: None
        )
        _, mask_y = next(poisson_batches(split, sample_rate=0.1, rng=plan.sampling))
        noise = torch.normal(0.0, 1.0, (64,), generator=plan.noise)
        draws.append((len(mask_y), noise))
    assert not torch.equal(draws[0][1], draws[1][1])


def _round(seed: int, *, dp: bool) -> torch.Tensor:
    """One round of a site's learner from an identical start: the solver's weights after."""
    stream = build_stream(CFG)
    seed_everything(seed)
    learner = Learner(CFG, shape=stream.shape, num_classes=10, device=torch.device("cpu"))
    plan = (
        DPPlan(noise_multiplier=1.0, max_grad_norm=1.0, sample_rate=0.2, on_step=lambda: None)
        if dp
        else None
    )
    learner.train(
        real_data_for("dgr", stream.tasks, 0),
        replay=None,
        num_tasks_seen=1,
        classes_seen=stream.classes_seen(0),
        iterations=3,
        seed=seed,
        dp=plan,
    )
    return torch.cat([p.detach().flatten() for p in learner.solver.parameters()])


def test_the_same_dp_round_twice_from_the_same_public_seed_differs() -> None:
    """Before the fix, rounds with the same seed drew identical masks and noise: whoever
    knows ``seed`` (the server, config.json) could subtract the noise. Now they differ,
    while non-private training stays reproducible from ``seed``."""
    assert not torch.equal(_round(0, dp=True), _round(0, dp=True))
    assert torch.equal(_round(0, dp=False), _round(0, dp=False))


def test_server_side_noise_is_not_numpys_global_generator() -> None:
    from server.privacy.client_dp import ClientLevelDP

    mech = ClientLevelDP(noise_multiplier=1.0, clip_norm=1.0)
    current = {"w": np.zeros(256, dtype=np.float32)}
    released = []
    for _ in range(2):
        np.random.seed(0)  # the server seeds NumPy with the public seed
        out, _ = mech.release(current, [current], num_sampled=1)
        released.append(out["w"])
    assert not np.array_equal(released[0], released[1])
