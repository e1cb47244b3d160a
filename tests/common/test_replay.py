"""Replay sources: labels from the previous solver, mixtures, exact memory."""

import pytest
import torch
from torch import Tensor, nn

from common.data.types import Split
from common.models.generator import Generator
from common.replay import ExactReplay, GenerativeReplay


class ConstantGenerator(Generator):
    """Emits images whose every pixel equals (label + offset) / 10."""

    def __init__(self, offset: float = 0.0) -> None:
        super().__init__((1, 2, 2), 4, latent_dim=1)
        self.offset = offset
        self.dummy = nn.Parameter(torch.zeros(1))

    def forward(self, z: Tensor, labels: Tensor) -> Tensor:
        return ((labels.float() + self.offset) / 10).view(-1, 1, 1, 1).expand(-1, 1, 2, 2)


class PixelSolver(nn.Module):
    """Reads the label back from the pixel value: logits peak at round(10 * pixel)."""

    def __init__(self) -> None:
        super().__init__()
        self.dummy = nn.Parameter(torch.zeros(1))

    def forward(self, x: Tensor) -> Tensor:
        value = x.flatten(1)[:, 0] * 10  # (B,)
        return -((torch.arange(4).float() - value[:, None]) ** 2)  # (B, 4)


def test_labels_come_from_the_previous_solver_within_seen_classes() -> None:
    replay = GenerativeReplay(
        [ConstantGenerator()],
        PixelSolver(),
        classes=[0, 1, 2],
        rng=torch.Generator().manual_seed(0),
    )
    batch = replay.sample(300)
    assert batch.x.shape == (300, 1, 2, 2)
    assert set(batch.y.tolist()) == {0, 1, 2}
    # The solver reads the conditioning label back exactly.
    assert torch.equal(batch.y, (batch.x.flatten(1)[:, 0] * 10).round().long())


def test_solver_label_overrides_the_conditioning_label() -> None:
    # Generator shifted by +1 class: a sample conditioned on 0 looks like a 1.
    replay = GenerativeReplay([ConstantGenerator(offset=1.0)], PixelSolver(), classes=[0, 1, 2])
    batch = replay.sample(200)
    assert set(batch.y.tolist()) <= {1, 2}, "labels must come from the solver, not the condition"


def test_soft_labels_are_distributions_over_seen_classes() -> None:
    replay = GenerativeReplay([ConstantGenerator()], PixelSolver(), classes=[0, 1], labels="soft")
    batch = replay.sample(50)
    assert batch.soft is not None and batch.soft.shape == (50, 4)
    assert torch.allclose(batch.soft.sum(1), torch.ones(50))
    assert float(batch.soft[:, 2:].abs().sum()) == 0.0


def test_ensemble_draws_from_generators_by_weight() -> None:
    gens = [ConstantGenerator(0.0), ConstantGenerator(0.4)]
    replay = GenerativeReplay(
        gens, PixelSolver(), classes=[0], weights=[3.0, 1.0], rng=torch.Generator().manual_seed(1)
    )
    x = replay.sample(4000).x.flatten(1)[:, 0]
    share_second = float((x > 0.02).float().mean())
    assert share_second == pytest.approx(0.25, abs=0.03)


def test_per_task_generators_draw_only_their_own_classes() -> None:
    # generator k is the only one that may draw class k; offsets mark who drew a row
    gens = [ConstantGenerator(0.0), ConstantGenerator(0.02), ConstantGenerator(0.04)]
    replay = GenerativeReplay(
        gens,
        PixelSolver(),
        classes=[0, 1, 2],
        weights=[1.0, 1.0, 1.0],
        generator_classes=[[0], [1], [1, 2]],
        rng=torch.Generator().manual_seed(3),
    )
    cond = torch.tensor([0] * 300 + [1] * 3000 + [2] * 300)
    offset = (replay.inputs(cond).flatten(1)[:, 0] * 10 - cond) * 50  # 0, 1 or 2: which drew
    who = offset.round().long()
    assert set(who[:300].tolist()) == {0}
    assert set(who[-300:].tolist()) == {2}
    # class 1 is shared by generators 1 and 2 at equal weight; generator 0 never draws it
    assert set(who[300:3300].tolist()) == {1, 2}
    assert float((who[300:3300] == 1).float().mean()) == pytest.approx(0.5, abs=0.04)


def test_per_task_class_lists_must_fit_the_generators() -> None:
    with pytest.raises(ValueError, match="class lists"):
        GenerativeReplay(
            [ConstantGenerator()], PixelSolver(), classes=[0, 1], generator_classes=[[0], [1]]
        )
    with pytest.raises(ValueError, match=r"classes \[3\] not replayed"):
        GenerativeReplay(
            [ConstantGenerator()], PixelSolver(), classes=[0, 1], generator_classes=[[3]]
        )


def test_bad_replay_setups_are_rejected() -> None:
    with pytest.raises(ValueError, match="at least one generator"):
        GenerativeReplay([], PixelSolver(), classes=[0])
    with pytest.raises(ValueError, match="weights"):
        GenerativeReplay([ConstantGenerator()], PixelSolver(), classes=[0], weights=[1.0, 1.0])


def test_exact_replay_draws_only_stored_records() -> None:
    x = torch.arange(10).float().view(10, 1, 1, 1)
    memory = Split.from_tensors(x, torch.arange(10) % 3)
    batch = ExactReplay(memory, rng=torch.Generator().manual_seed(0)).sample(100)
    assert torch.equal(batch.y, batch.x.flatten().long() % 3)


def test_retries_redraw_inputs_the_previous_solver_does_not_recognise() -> None:
    """A mixture of a faithful generator and one shifted by a class: with retries, rows
    from the shifted one are redrawn until the solver reads their conditioning class."""
    gens = [ConstantGenerator(), ConstantGenerator(offset=1.0)]
    plain = GenerativeReplay(gens, PixelSolver(), classes=[0, 1, 2], weights=[1.0, 1.0])
    fixed = GenerativeReplay(
        gens,
        PixelSolver(),
        classes=[0, 1, 2],
        weights=[1.0, 1.0],
        retries=8,
        rng=torch.Generator().manual_seed(0),
    )
    cond = torch.tensor([0, 1] * 150)  # shifted by one, both still read as a seen class
    agree_plain = ((plain.inputs(cond).flatten(1)[:, 0] * 10).round().long() == cond).float()
    agree_fixed = ((fixed.inputs(cond).flatten(1)[:, 0] * 10).round().long() == cond).float()
    assert 0.3 < agree_plain.mean() < 0.7
    assert agree_fixed.mean() > 0.99
    with pytest.raises(ValueError, match="retries"):
        GenerativeReplay(gens, PixelSolver(), classes=[0], retries=-1)


def test_prefetch_serves_fresh_batches_from_one_draw_of_several() -> None:
    calls: list[int] = []

    class Counting(ConstantGenerator):
        def forward(self, z: Tensor, labels: Tensor) -> Tensor:
            calls.append(labels.shape[0])
            return super().forward(z, labels)

    replay = GenerativeReplay(
        [Counting()],
        PixelSolver(),
        classes=[0, 1, 2],
        labels="soft",
        prefetch=4,
        rng=torch.Generator().manual_seed(0),
    )
    batches = [replay.sample(25) for _ in range(8)]
    assert calls == [100, 100]  # two forward passes of 4 x 25 for 8 batches
    for b in batches:
        assert b.x.shape == (25, 1, 2, 2) and b.y.shape == (25,) and b.soft is not None
        assert b.soft.shape == (25, 4)
        assert torch.equal(b.y, (b.x.flatten(1)[:, 0] * 10).round().long())
    replay.sample(10)  # the buffer is empty after 8 batches: a new draw of 4 x 10
    replay.sample(30)  # 30 rows left, served from it
    replay.sample(31)  # more than is left: a new draw
    assert calls == [100, 100, 40, 124]
    with pytest.raises(ValueError, match="prefetch"):
        GenerativeReplay([Counting()], PixelSolver(), classes=[0], prefetch=0)


def test_an_unknown_mixture_is_refused() -> None:
    gens = [ConstantGenerator(), ConstantGenerator(offset=1.0)]
    with pytest.raises(ValueError, match="mixture"):
        GenerativeReplay(gens, PixelSolver(), classes=[0], mixture="recognition")


def test_class_weights_give_each_class_its_own_mixture() -> None:
    # class 1 is drawn from generator 0 only, class 2 mostly from generator 1; class 0 has
    # no class weight and keeps the plain weights (equal)
    gens = [ConstantGenerator(0.0), ConstantGenerator(0.02)]
    replay = GenerativeReplay(
        gens,
        PixelSolver(),
        classes=[0, 1, 2],
        weights=[1.0, 1.0],
        class_weights=[[0.0, 5.0, 1.0], [0.0, 0.0, 3.0]],
        rng=torch.Generator().manual_seed(4),
    )
    cond = torch.tensor([0] * 2000 + [1] * 2000 + [2] * 2000)
    who = ((replay.inputs(cond).flatten(1)[:, 0] * 10 - cond) * 50).round().long()
    assert float((who[:2000] == 1).float().mean()) == pytest.approx(0.5, abs=0.04)
    assert set(who[2000:4000].tolist()) == {0}
    assert float((who[4000:] == 1).float().mean()) == pytest.approx(0.75, abs=0.04)


def test_class_weights_that_do_not_fit_are_rejected() -> None:
    with pytest.raises(ValueError, match="do not fit"):
        GenerativeReplay(
            [ConstantGenerator()], PixelSolver(), classes=[0, 1], class_weights=[[1.0]]
        )
    with pytest.raises(ValueError, match="finite and non-negative"):
        GenerativeReplay(
            [ConstantGenerator()], PixelSolver(), classes=[0, 1], class_weights=[[1.0, -1.0]]
        )
