"""The learner: baselines use the data they should, DGR needs the previous scholar, steps
split private from public losses. (Whole streams run through the one continual-learning
loop: tests/server/test_single_methods.py.)"""

import pytest
import torch

from common.config import load_config
from common.data.streams import build_stream
from common.data.types import real_data_for
from common.training.learner import replay_for
from common.training.step import PlainStepper


def test_joint_trains_on_all_tasks_so_far_and_exact_on_the_current_one() -> None:
    cfg = load_config({"tasks.num-tasks": 3})
    stream = build_stream(cfg)
    joint = real_data_for("joint", stream.tasks, 2)
    assert set(joint.y.unique().tolist()) == set(stream.classes_seen(2))
    assert set(real_data_for("exact", stream.tasks, 2).y.unique().tolist()) == set(
        stream.tasks[2].classes
    )
    memory = replay_for(
        load_config({"method": "exact"}), stream.tasks, 2, None, rng=torch.Generator()
    )
    assert memory is not None and set(memory.sample(500).y.tolist()) == set(stream.classes_seen(1))


def test_dgr_without_previous_scholar_is_an_error() -> None:
    cfg = load_config({"method": "dgr"})
    stream = build_stream(cfg)
    with pytest.raises(ValueError, match="previous scholar"):
        replay_for(cfg, stream.tasks, 1, None, rng=torch.Generator())


def test_plain_step_weights_private_and_public_parts() -> None:
    w = torch.nn.Parameter(torch.zeros(1))
    opt = torch.optim.SGD([w], lr=1.0)
    PlainStepper(opt).step(
        private=lambda: (w - 1).pow(2).expand(4) * 1.0,
        public=lambda: 0.5 * (w + 1).pow(2).sum(),
        private_weight=0.25,
    )
    # grad = 0.25 * 2(w-1) + 0.5 * 2(w+1) at w=0 -> -0.5 + 1.0 = 0.5
    assert float(w.detach()) == pytest.approx(-0.5)


class SeparateStepper:
    """A plain step that is not a PlainStepper: the learner's separate (DP-shaped) path."""

    def __init__(self, optimizer: torch.optim.Optimizer) -> None:
        self.inner = PlainStepper(optimizer)

    def step(self, *, private, public, private_weight) -> float:
        return self.inner.step(private=private, public=public, private_weight=private_weight)


def test_one_forward_over_real_and_replay_is_the_same_update_as_two() -> None:
    """Without DP the solver sees real and replayed rows in one forward pass; the update
    must equal the separate one that DP needs (real part, then replay part)."""
    from common.replay import ReplayBatch
    from common.training.learner import Learner

    cfg = load_config({"solver.hidden": 32, "method": "none"})
    stream = build_stream(cfg)
    joint, separate = (
        Learner(cfg, shape=stream.shape, num_classes=stream.num_classes, device=torch.device("cpu"))
        for _ in range(2)
    )
    separate.solver.load_state_dict(joint.solver.state_dict())
    before = [p.detach().clone() for p in joint.solver.parameters()]
    x, y = stream.tasks[1].train.x[:16], stream.tasks[1].train.y[:16]
    rb = ReplayBatch(stream.tasks[0].train.x[:24], stream.tasks[0].train.y[:24])
    for learner, stepper in (
        (joint, PlainStepper(torch.optim.SGD(joint.solver.parameters(), lr=0.5))),
        (separate, SeparateStepper(torch.optim.SGD(separate.solver.parameters(), lr=0.5))),
    ):
        learner._solver_update(stepper, x, y, rb, 0.3)
    pairs = zip(joint.solver.parameters(), separate.solver.parameters(), before, strict=True)
    for p, q, p0 in pairs:
        torch.testing.assert_close(p, q)
        assert not torch.equal(p, p0)  # the step did move every parameter


@pytest.mark.parametrize(("mode", "generator_replays"), [("ensemble", True), ("per-task", False)])
def test_per_task_generator_learns_the_current_task_alone(mode: str, generator_replays: bool):
    """replay.mode=per-task keeps finished tasks' own generators, so the new generator gets
    no replay and conditions on the current task's classes only; the solver still replays."""
    from common.replay import ExactReplay
    from common.training.learner import Learner

    cfg = load_config({"solver.hidden": 16, "generator.hidden": 16, "replay.mode": mode})
    stream = build_stream(cfg)
    learner = Learner(
        cfg, shape=stream.shape, num_classes=stream.num_classes, device=torch.device("cpu")
    )
    seen: list[tuple[bool, list[int]]] = []

    class Spy:
        def step(self, x, y, replay, ratio, classes):
            seen.append((replay is not None, sorted(set(classes.tolist()))))
            return {"loss_generator": 0.0}

        def close(self) -> None:
            pass

    learner._generative_trainer = lambda rng, make_stepper: Spy()  # type: ignore[method-assign]
    solver_replayed: list[bool] = []
    update = learner._solver_update
    learner._solver_update = lambda step, x, y, rb, ratio: (  # type: ignore[method-assign]
        solver_replayed.append(rb is not None) or update(step, x, y, rb, ratio)
    )
    learner.train(
        stream.tasks[1].train,
        replay=ExactReplay(stream.tasks[0].train),
        num_tasks_seen=2,
        classes_seen=stream.classes_seen(1),
        iterations=3,
        seed=0,
    )
    assert seen and all(r == generator_replays for r, _ in seen)
    expected = sorted(stream.classes_seen(1) if generator_replays else stream.tasks[1].classes)
    assert all(c == expected for _, c in seen)
    assert solver_replayed and all(solver_replayed)


def one_class_site(cfg):  # type: ignore[no-untyped-def]
    """The first task, this site's records of its first class only, and a fresh learner."""
    from common.data.types import Split
    from common.training.learner import Learner

    stream = build_stream(cfg)
    task = stream.tasks[0]
    only_0 = task.train.y == task.classes[0]
    real = Split.from_tensors(task.train.x[only_0], task.train.y[only_0])
    learner = Learner(
        cfg, shape=stream.shape, num_classes=stream.num_classes, device=torch.device("cpu")
    )
    return task, real, learner


@pytest.mark.parametrize("gan_labels", ["auto", "uniform"])
def test_a_site_without_a_class_does_not_train_its_conditioning(gan_labels: str) -> None:
    """gan.labels: with the real batch's labels ("auto" for a generator that learns
    its own task, without DP) a site that holds no record of class 1 leaves the generator's
    input weights for class 1 exactly as they were (federated averaging then does not pull
    class 1 towards what this site's discriminator knows); drawn uniformly, it trains them."""
    cfg = load_config(
        {
            "method": "dgr",
            "replay.mode": "per-task",
            "generator.kind": "gan",
            "generator.arch": "conv",
            "generator.hidden": 8,
            "generator.latent-dim": 8,
            "solver.hidden": 16,
            "gan.labels": gan_labels,
        }
    )
    task, real, lrn = one_class_site(cfg)
    column = cfg.generator.latent_dim + task.classes[1]  # the one-hot input of class 1
    before = lrn.generator.project.weight[:, column].detach().clone()
    lrn.train(real, replay=None, num_tasks_seen=1, classes_seen=task.classes, iterations=20, seed=0)
    after = lrn.generator.project.weight[:, column].detach()
    if gan_labels == "auto":
        torch.testing.assert_close(after, before, rtol=0, atol=0)
    else:
        assert not torch.equal(after, before)


def test_real_gan_labels_are_refused_under_dp() -> None:
    from common.config import ConfigError

    with pytest.raises(ConfigError, match=r"gan\.labels='real' with dp"):
        load_config({"gan.labels": "real", "dp.enabled": True, "dp.delta": 1e-5, "method": "dgr"})


def test_under_dp_the_fakes_never_follow_the_private_labels() -> None:
    """gan.labels = "auto" under DP: the generator's fakes are drawn for every class
    of the task (from the configuration), even at a site whose records hold one class, so
    the generator learns nothing from private labels outside the DP-trained critic."""
    from common.privacy.dp_step import DPPlan

    cfg = load_config({"solver.hidden": 16, "generator.hidden": 16, "replay.mode": "per-task"})
    task, real, learner = one_class_site(cfg)
    drawn: list[set[int]] = []

    class Spy:
        def step(self, x, y, replay, ratio, classes):
            drawn.append(set(classes.tolist()))
            return {"loss_generator": 0.0}

        def close(self) -> None:
            pass

    learner._generative_trainer = lambda rng, make_stepper: Spy()  # type: ignore[method-assign]
    plan = DPPlan(noise_multiplier=1.0, max_grad_norm=1.0, sample_rate=0.5, on_step=lambda: None)
    learner.train(
        real,
        replay=None,
        num_tasks_seen=1,
        classes_seen=task.classes,
        iterations=3,
        seed=0,
        dp=plan,
    )
    assert drawn and all(d == set(task.classes) for d in drawn), drawn
