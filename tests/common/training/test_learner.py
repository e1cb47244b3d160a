"""The learner: DGR beats fine-tuning, baselines use the data they should, steps split
private from public losses."""

import pytest
import torch

from common.config import load_config
from common.data.streams import build_stream
from common.metrics import evaluate_tasks
from common.training.learner import Learner, ReplaySource, real_data_for, replay_for
from common.training.step import PlainStepper


def run_stream(
    method: str, kind: str = "vae", iterations: int = 150, tasks: int = 3
) -> list[float]:
    cfg = load_config(
        {
            "method": method,
            "generator.kind": kind,
            "train.iterations": iterations,
            "tasks.num-tasks": tasks,
            "solver.hidden": 100,
            "generator.hidden": 100,
            "generator.latent-dim": 16,
        }
    )
    torch.manual_seed(0)
    stream = build_stream(cfg)
    learner = Learner(
        cfg, shape=stream.shape, num_classes=stream.num_classes, device=torch.device("cpu")
    )
    previous = None
    for t in range(len(stream)):
        replay = replay_for(cfg, stream.tasks, t, previous, rng=torch.Generator().manual_seed(t))
        learner.train(
            real_data_for(method, stream.tasks, t),
            replay=replay,
            num_tasks_seen=t + 1,
            classes_seen=stream.classes_seen(t),
            iterations=iterations,
            seed=t,
        )
        if learner.generator is not None:
            previous = ReplaySource.from_scholar(learner.scholar, stream.classes_seen(t))
    return evaluate_tasks(learner.solver, stream.tasks, len(stream) - 1, device=torch.device("cpu"))


def test_dgr_remembers_where_fine_tuning_forgets() -> None:
    none = run_stream("none")
    dgr = run_stream("dgr")
    assert none[0] < 0.1, f"fine-tuning should forget task 0 in class-IL, got {none}"
    assert sum(dgr) / 3 > sum(none) / 3 + 0.3, f"dgr {dgr} vs none {none}"


def test_gan_generator_kind_trains_and_replays() -> None:
    accs = run_stream("dgr", kind="gan", iterations=100, tasks=2)
    assert accs[1] > 0.8 and len(accs) == 2


def test_exact_and_joint_baselines_keep_old_tasks() -> None:
    for method in ("exact", "joint"):
        accs = run_stream(method, tasks=2)
        assert min(accs) > 0.8, f"{method}: {accs}"


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
