"""The replay losses: distillation keeps a replayed input away from classes learnt since."""

import torch

from common.training.losses import distillation_loss, replay_loss


def test_distillation_pushes_a_replayed_input_away_from_a_newer_class() -> None:
    soft = torch.tensor([[0.7, 0.3, 0.0, 0.0]])  # the previous solver knew classes 0, 1
    logits = torch.tensor([[1.0, 0.5, 4.0, 0.0]], requires_grad=True)  # leans to new class 2
    distillation_loss(logits, soft, 2.0).sum().backward()
    assert logits.grad is not None
    assert float(logits.grad[0, 2]) > 0.1  # descent lowers the new class's logit
    assert float(logits.grad[0, 0]) < 0  # and raises the old class the teacher preferred


def test_the_loss_is_smallest_at_the_teacher_s_distribution() -> None:
    soft = torch.tensor([[0.7, 0.3, 0.0]])
    at_teacher = torch.log(torch.tensor([[0.7, 0.3, 1e-6]])) * 2.0  # softmax(z/T) = soft
    for other in ([[0.0, 0.0, 0.0]], [[3.0, 0.0, 0.0]], [[0.84, 0.0, 2.0]]):
        assert replay_loss(at_teacher, torch.tensor([0]), soft, 2.0) < replay_loss(
            torch.tensor(other), torch.tensor([0]), soft, 2.0
        )
