"""The learner: baselines use the data they should, DGR needs the previous scholar, steps
split private from public losses. (Whole streams run through the one continual-learning
loop: tests/server/test_single_methods.py.)"""

import pytest
import torch

from common.config import load_config
from common.data.streams import build_stream
from common.training.learner import real_data_for, replay_for
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
