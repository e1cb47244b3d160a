"""DP-SGD with replay: per-sample clipping of real records is exact, replay is added
outside the private gradient, and only real-data steps are counted."""

import copy

import pytest
import torch
from torch import nn

from common.config import load_config
from common.data.streams import build_stream
from common.data.types import real_data_for
from common.privacy.dp_step import DPPlan, DPStepper, PrivacyValidationError
from common.training.learner import Learner, ReplaySource, replay_for


@pytest.mark.parametrize("replay_scale", [0.01, 10.0])
def test_private_gradient_is_clipped_per_sample_and_replay_as_a_whole(
    replay_scale: float,
) -> None:
    torch.manual_seed(0)
    model = nn.Linear(3, 2)
    x, y = torch.randn(5, 3) * 10, torch.tensor([0, 1, 0, 1, 1])
    xr, yr = torch.randn(4, 3) * 10, torch.tensor([1, 1, 0, 0])
    clip, weight = 0.5, 0.25
    loss_fn = nn.CrossEntropyLoss(reduction="none")

    # Reference: per-sample gradients, clipped to norm 0.5, averaged over the expected
    # batch (5), weighted; plus the replay gradient, clipped as a whole to norm 0.5 (a
    # small one passes unchanged).
    ref = [torch.zeros_like(p) for p in model.parameters()]
    for i in range(5):
        grads = torch.autograd.grad(
            loss_fn(model(x[i : i + 1]), y[i : i + 1]).sum(), list(model.parameters())
        )
        norm = torch.sqrt(sum(g.pow(2).sum() for g in grads))
        factor = min(1.0, clip / (float(norm) + 1e-6))
        ref = [r + g * factor for r, g in zip(ref, grads, strict=True)]
    replay_grads = torch.autograd.grad(
        replay_scale * loss_fn(model(xr), yr).mean(), list(model.parameters())
    )
    replay_norm = float(torch.sqrt(sum(g.pow(2).sum() for g in replay_grads)))
    assert (replay_norm > clip) == (replay_scale > 1), "the two cases must test both branches"
    replay_grads = [g * min(1.0, clip / replay_norm) for g in replay_grads]
    expected = [weight * r / 5 + g for r, g in zip(ref, replay_grads, strict=True)]

    counted = []
    stepper = DPStepper(
        torch.optim.SGD(model.parameters(), lr=0.0),
        model,
        noise_multiplier=0.0,
        max_grad_norm=clip,
        expected_batch_size=5,
        on_step=lambda: counted.append(1),
    )
    stepper.step(
        private=lambda: loss_fn(model(x), y),
        public=lambda: replay_scale * loss_fn(model(xr), yr).mean(),
        private_weight=weight,
    )
    for p, e in zip(model.parameters(), expected, strict=True):
        assert torch.allclose(p.grad, e, atol=1e-5)
    assert counted == [1]
    stepper.close()


def test_empty_poisson_batch_is_a_counted_noise_only_step() -> None:
    model = nn.Linear(3, 2)
    counted = []
    stepper = DPStepper(
        torch.optim.SGD(model.parameters(), lr=0.1),
        model,
        noise_multiplier=1.0,
        max_grad_norm=1.0,
        expected_batch_size=4,
        on_step=lambda: counted.append(1),
    )
    before = [p.detach().clone() for p in model.parameters()]
    stepper.step(private=lambda: torch.zeros(0), public=None, private_weight=1.0)
    assert counted == [1]
    assert any(not torch.equal(b, p) for b, p in zip(before, model.parameters(), strict=True))


def test_batchnorm_is_rejected_with_a_reason() -> None:
    model = nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4))
    with pytest.raises(PrivacyValidationError, match="BatchNorm"):
        DPStepper(
            torch.optim.SGD(model.parameters(), lr=0.1),
            model,
            noise_multiplier=1.0,
            max_grad_norm=1.0,
            expected_batch_size=4,
            on_step=lambda: None,
        )


@pytest.mark.parametrize(("kind", "arch"), [("vae", "mlp"), ("gan", "mlp"), ("gan", "conv")])
def test_replay_does_not_consume_budget(kind: str, arch: str) -> None:
    """Same real-data steps with and without replay: the same mechanisms are counted (the
    conv discriminator trains under Opacus like the MLP one)."""
    cfg = load_config(
        {
            "generator.kind": kind,
            "generator.arch": arch,
            "tasks.num-tasks": 2,
            "solver.hidden": 32,
            "generator.hidden": 32,
            "generator.latent-dim": 8,
        }
    )
    stream = build_stream(cfg)
    learner = Learner(cfg, shape=stream.shape, num_classes=10, device=torch.device("cpu"))
    real0 = real_data_for("dgr", stream.tasks, 0)
    learner.train(
        real0,
        replay=None,
        num_tasks_seen=1,
        classes_seen=stream.classes_seen(0),
        iterations=5,
        seed=0,
    )
    assert learner.generator is not None
    frozen = [
        copy.deepcopy(m).eval().requires_grad_(False) for m in (learner.solver, learner.generator)
    ]
    previous = ReplaySource(frozen[0], (frozen[1],), (1.0,), tuple(stream.classes_seen(0)))
    counts = {}
    for name, replay in (
        ("without", None),
        ("with", replay_for(cfg, stream.tasks, 1, previous, rng=torch.Generator())),
    ):
        steps: list[int] = []
        plan = DPPlan(
            noise_multiplier=1.0,
            max_grad_norm=1.0,
            sample_rate=0.1,
            on_step=lambda steps=steps: steps.append(1),
        )
        learner.train(
            real_data_for("dgr", stream.tasks, 1),
            replay=replay,
            num_tasks_seen=2,
            classes_seen=stream.classes_seen(1),
            iterations=7,
            seed=1,
            dp=plan,
        )
        counts[name] = len(steps)
    # 7 solver steps + 7 generator (VAE) or discriminator (GAN) steps, replay or not.
    assert counts == {"without": 14, "with": 14}
