"""DGM's masks and growth (common.models.masks, .dgm, .growth): what a finished task uses
never changes, the cumulative mask never loses a unit, growth adds what the masks claimed,
and a finished task's samples survive the next task and the growth."""

import pytest
import torch

from common.models import masks
from common.models.dgm import DGMGenerator
from common.models.growth import extra_units, fit_state, grow_

SHAPE = (1, 28, 28)
VARIANTS = ("activations", "weights")


def make(variant: str, seed: int = 0) -> DGMGenerator:
    return DGMGenerator(SHAPE, 10, 8, 16, variant=variant, seed=seed, s_max=400.0, sparsity=0.1)


def train(gen: DGMGenerator, classes: list[int], steps: int = 20, seed: int = 1) -> None:
    """A few generator updates on task ``gen.current_task`` (toy loss: brighten the image)."""
    g = torch.Generator().manual_seed(seed)
    opt = torch.optim.Adam(gen.parameters(), lr=1e-2)
    for i in range(steps):
        gen.anneal((i + 1) / steps)
        y = torch.tensor(classes)[torch.randint(len(classes), (16,), generator=g)]
        loss = -gen(torch.randn(16, gen.latent_dim, generator=g), y).mean() + gen.regulariser()
        opt.zero_grad()
        loss.backward()
        gen.protect_()
        opt.step()
        gen.after_step_()


def fixed_draw(gen: DGMGenerator, classes: list[int]) -> torch.Tensor:
    g = torch.Generator().manual_seed(123)
    y = torch.tensor(classes * 4)
    with torch.no_grad():
        return gen(torch.randn(len(y), gen.latent_dim, generator=g), y)


@pytest.mark.parametrize("variant", VARIANTS)
def test_a_weight_reserved_by_task_1_does_not_change_while_task_2_trains(variant: str) -> None:
    gen = make(variant)
    train(gen, [0, 1])
    gen.end_task([0, 1])
    before = {n: p.detach().clone() for n, p in gen.named_parameters()}
    scale = gen.reserved_scale()
    assert any(bool((s == 0).any()) for s in scale.values()), "task 1 reserved nothing"
    train(gen, [2, 3], seed=2)
    changed_free = False
    for name, s in scale.items():
        now = gen.get_parameter(name).detach()
        assert torch.equal(now[s == 0], before[name][s == 0]), f"{name}: a reserved weight moved"
        changed_free |= not torch.equal(now[s == 1], before[name][s == 1])
    assert changed_free, "no free weight learned anything in task 2"


@pytest.mark.parametrize("variant", VARIANTS)
def test_the_cumulative_mask_never_loses_a_unit(variant: str) -> None:
    gen = make(variant)
    previous = {k: masks.reserved(gen.usage(k)) for k in gen.mask_keys}
    for t in range(3):
        train(gen, [2 * t, 2 * t + 1], seed=t)
        gen.end_task([2 * t, 2 * t + 1])
        for k in gen.mask_keys:
            now = masks.reserved(gen.usage(k))
            assert bool((now >= previous[k]).all()), f"task {t}: {k} lost a reserved element"
            # every finished task's own mask is inside the cumulative mask
            for u in range(t + 1):
                assert bool((masks.task_bit(gen.usage(k), u) <= now).all())
        grow_(gen, {k: 0 for k in gen.mask_keys})  # no claim: no change of shape
        previous = {k: masks.reserved(gen.usage(k)) for k in gen.mask_keys}


@pytest.mark.parametrize("variant", VARIANTS)
def test_growth_adds_exactly_what_the_masks_claimed(variant: str) -> None:
    gen = make(variant)
    train(gen, [0, 1])
    widths = gen.widths
    claimed = gen.end_task([0, 1])
    assert sum(claimed.values()) > 0
    a, b = extra_units(gen, claimed)
    free_before = gen.capacity()["free"] + sum(claimed.values())  # free when task 1 began
    grow_(gen, claimed)
    assert gen.widths == (widths[0] + a, widths[1] + b)
    free_after = gen.capacity()["free"]
    if variant == "activations":  # a unit per reserved unit: as many free units as before
        assert (a, b) == (claimed["fc"], claimed["up"])
        assert free_after == free_before
    else:  # DGMw: whole units holding at least the reserved weights (the next layer's
        # weights from the new units come on top): never less free capacity than before
        assert a > 0 and b > 0
        assert free_after >= free_before


@pytest.mark.parametrize("variant", VARIANTS)
def test_task_1_samples_are_identical_after_task_2_trains_and_the_generator_grows(
    variant: str,
) -> None:
    gen = make(variant)
    train(gen, [0, 1])
    grow_(gen, gen.end_task([0, 1]))
    first = fixed_draw(gen, [0, 1])
    train(gen, [2, 3], seed=2)
    claimed = gen.end_task([2, 3])
    second_task = fixed_draw(gen, [2, 3])
    grow_(gen, claimed)
    assert torch.allclose(fixed_draw(gen, [0, 1]), first, atol=1e-6)
    assert torch.allclose(fixed_draw(gen, [2, 3]), second_task, atol=1e-6)
    assert not torch.allclose(first, second_task), "tasks 1 and 2 draw the same images"


@pytest.mark.parametrize("variant", VARIANTS)
def test_a_fresh_generator_takes_a_grown_state_and_draws_the_same(variant: str) -> None:
    gen = make(variant)
    train(gen, [0, 1])
    grow_(gen, gen.end_task([0, 1]))
    state = gen.state_dict()
    fresh = make(variant)
    assert fresh.widths != gen.widths
    fit_state(fresh, state)
    fresh.load_state_dict(state)
    assert fresh.widths == gen.widths
    assert torch.equal(fixed_draw(fresh, [0, 1]), fixed_draw(gen, [0, 1]))
    with pytest.raises(ValueError, match="only grows"):
        fit_state(gen, make(variant).state_dict())


@pytest.mark.parametrize("variant", VARIANTS)
def test_growth_is_deterministic(variant: str) -> None:
    runs = []
    for _ in range(2):
        gen = make(variant, seed=7)
        train(gen, [0, 1])
        grow_(gen, gen.end_task([0, 1]))
        runs.append(gen.state_dict())
    assert runs[0].keys() == runs[1].keys()
    assert all(torch.equal(runs[0][k], runs[1][k]) for k in runs[0])


def test_the_masks_anneal_binarise_and_refuse_a_second_mask_for_a_task() -> None:
    assert masks.annealed_scale(0.0, 400.0) == pytest.approx(1 / 400)
    assert masks.annealed_scale(1.0, 400.0) == pytest.approx(400.0)
    usage = masks.claim(torch.zeros(4), torch.tensor([1.0, 0, 1, 0]), 0)
    usage = masks.claim(usage, torch.tensor([0.0, 0, 1, 1]), 3)
    assert masks.task_bit(usage, 0).tolist() == [1, 0, 1, 0]
    assert masks.task_bit(usage, 3).tolist() == [0, 0, 1, 1]
    assert masks.reserved(usage).tolist() == [1, 0, 1, 1]
    with pytest.raises(ValueError, match="already has a mask"):
        masks.claim(usage, torch.ones(4), 3)
    # the regulariser: share of the free capacity claimed
    reg = masks.sparsity([torch.tensor([1.0, 1, 0, 0])], [torch.tensor([1.0, 0, 0, 0])])
    assert float(reg) == pytest.approx(1 / 3)


def test_a_task_past_the_mask_budget_or_an_unknown_variant_is_refused() -> None:
    with pytest.raises(ValueError, match=r"dgm\.variant"):
        DGMGenerator(SHAPE, 10, 8, 16, variant="neurons")
    gen = DGMGenerator(SHAPE, 2, 8, 16)  # two classes: at most two tasks
    gen.end_task([0])
    gen.end_task([1])
    with pytest.raises(ValueError, match="2 tasks"):
        gen.end_task([1])


def test_dgma_s_next_task_starts_from_the_finished_task_s_head_and_leaves_it_alone() -> None:
    gen = make("activations")
    train(gen, [0, 1])
    before = fixed_draw(gen, [0, 1])
    head = {k: v.clone() for k, v in gen.heads[0].state_dict().items()}
    untouched = {k: v.clone() for k, v in gen.heads[2].state_dict().items()}
    grow_(gen, gen.end_task([0, 1]))
    c2 = head["weight"].shape[0]  # the head's input channels before growth
    for k, v in gen.heads[1].state_dict().items():
        torch.testing.assert_close(v[:c2] if k == "weight" else v, head[k])
    train(gen, [2, 3])
    torch.testing.assert_close(fixed_draw(gen, [0, 1]), before)
    for k, v in gen.heads[2].state_dict().items():  # later tasks' heads: as they were
        torch.testing.assert_close(v[: untouched[k].shape[0]], untouched[k])
