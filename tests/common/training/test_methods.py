"""The regularisation methods (common.methods: LwF, EWC): each holds the solver to what
the previous global solver knew, measured against fine-tuning from the same start; EWC's
Fisher stays in the site's memory; neither runs under DP."""

import copy

import pytest
import torch

from common.config import ConfigError, load_config
from common.data.streams import build_stream
from common.methods import REGULARISERS, regulariser_for
from common.methods.ewc import EWC
from common.training.learner import Learner

ITERATIONS = 150


def learner_after_task_0(method: str):
    cfg = load_config({"method": method, "solver.hidden": 64, "tasks.num-tasks": 2})
    stream = build_stream(cfg)
    torch.manual_seed(0)
    learner = Learner(
        cfg, shape=stream.shape, num_classes=stream.num_classes, device=torch.device("cpu")
    )
    learner.regulariser = regulariser_for(method, None, (), {}, task=0)
    memory: dict[str, torch.Tensor] = {}
    learner.train(stream.tasks[0].train, replay=None, num_tasks_seen=1,
                  classes_seen=stream.classes_seen(0), iterations=ITERATIONS, seed=0)  # fmt: skip
    if learner.regulariser is not None:
        learner.regulariser.remember(learner.solver, stream.tasks[0].train, memory)
    return learner, stream, memory


def learn_task_1(learner: Learner, stream, method: str, memory) -> torch.nn.Module:
    teacher = copy.deepcopy(learner.solver).eval().requires_grad_(False)
    old = tuple(stream.classes_seen(0))
    learner.regulariser = regulariser_for(method, teacher, old, memory, task=1)
    learner.train(stream.tasks[1].train, replay=None, num_tasks_seen=2,
                  classes_seen=stream.classes_seen(1), iterations=ITERATIONS, seed=1)  # fmt: skip
    return teacher


def old_class_divergence(teacher, student, stream) -> float:
    """KL(teacher || student) over the old classes' softmax, on task 0's test inputs."""
    old = list(stream.classes_seen(0))
    x = stream.tasks[0].test.x
    with torch.no_grad():
        p = torch.log_softmax(teacher(x)[:, old], 1)
        q = torch.log_softmax(student(x)[:, old], 1)
    return float((p.exp() * (p - q)).sum(1).mean())


def test_lwf_holds_the_old_classes_outputs_where_fine_tuning_drifts() -> None:
    drift = {}
    for method in ("none", "lwf"):
        learner, stream, memory = learner_after_task_0(method)
        teacher = learn_task_1(learner, stream, method, memory)
        drift[method] = old_class_divergence(teacher, learner.solver, stream)
    assert drift["lwf"] < 0.5 * drift["none"], drift


def test_ewc_holds_the_important_weights_where_fine_tuning_moves_them() -> None:
    learner, stream, memory = learner_after_task_0("ewc")
    keys = {name for name, _ in learner.solver.named_parameters()}
    assert {k.split(".", 2)[2] for k in memory} == keys  # one Fisher per weight, of task 0
    assert all(k.startswith("fisher.0.") for k in memory)
    fisher = {k.split(".", 2)[2]: v for k, v in memory.items()}
    moved = {}
    for method in ("none", "ewc"):
        learner, stream, _ = learner_after_task_0(method)
        teacher = learn_task_1(learner, stream, method, memory)
        anchor = dict(teacher.named_parameters())
        moved[method] = float(sum(
            (fisher[k] * (p.detach() - anchor[k]) ** 2).sum()
            for k, p in learner.solver.named_parameters()
        ))  # fmt: skip
    assert moved["ewc"] < 0.5 * moved["none"], moved
    assert moved["ewc"] > 0  # it still learns the new task


def test_ewc_without_the_fisher_of_a_finished_task_holds_nothing() -> None:
    # a site that held no records of the finished tasks (or lost its memory.pt)
    solver = torch.nn.Linear(3, 2)
    ewc = EWC(solver, (0,), {}, task=1)
    assert ewc.on_weights(solver) is None


def test_a_regulariser_needs_the_previous_solver_after_the_first_task() -> None:
    for method in REGULARISERS:
        with pytest.raises(ValueError, match="previous global solver"):
            regulariser_for(method, None, (), {}, task=1)


@pytest.mark.parametrize("method", REGULARISERS)
def test_regularisers_refuse_dp(method: str) -> None:
    with pytest.raises(ConfigError, match=f"method='{method}' with dp.enabled"):
        load_config({"method": method, "dp.enabled": True, "dp.delta": 1e-5})


def test_every_method_that_anchors_on_the_previous_solver_has_its_module() -> None:
    """The traits (common.config.methods) and the modules (common.methods) name the same
    regularisation methods: a method declared without its penalty, or a penalty without its
    declaration, fails here."""
    from common.config import REGULARISERS as DECLARED
    from common.config import method_of

    assert set(DECLARED) == set(REGULARISERS)
    assert all(method_of(m).needs_payload and not method_of(m).uses_generator for m in DECLARED)


def test_ewc_fisher_is_each_records_squared_gradient_averaged() -> None:
    """The Fisher computed all at once (torch.func) equals one backward pass per record:
    the mean over the chosen records of each parameter's squared gradient."""
    learner, stream, memory = learner_after_task_0("ewc")
    solver, real = learner.solver, stream.tasks[0].train
    n = min(len(real), 1000)
    chosen = torch.randperm(len(real), generator=torch.Generator().manual_seed(0))[:n]
    params = dict(solver.named_parameters())
    reference = {k: torch.zeros_like(p) for k, p in params.items()}
    solver.eval()
    for i in chosen.tolist():
        solver.zero_grad()
        torch.nn.functional.cross_entropy(solver(real.x[i : i + 1]), real.y[i : i + 1]).backward()
        for k, p in params.items():
            reference[k] += p.grad.detach() ** 2
    for k, ref in reference.items():
        got = memory[f"fisher.0.{k}"]
        assert torch.allclose(got, ref / n, rtol=1e-4, atol=1e-9), k
    assert any(v.abs().sum() > 0 for v in memory.values())
