"""The AC-GAN trainer: what each part of the discriminator learns from."""

from __future__ import annotations

import copy

import pytest
import torch
from torch.nn import functional as F

from common.models.gan import Discriminator, GANGenerator
from common.training.generative import GANTrainer

SHAPE = (1, 8, 8)


def make_trainer() -> GANTrainer:
    torch.manual_seed(0)
    generator = GANGenerator(SHAPE, num_classes=4, hidden=32, latent_dim=8)
    discriminator = Discriminator(SHAPE, num_classes=4, hidden=32)
    return GANTrainer(generator, discriminator, lr=1e-3, rng=torch.Generator().manual_seed(0))


def test_auxiliary_classifier_learns_from_real_inputs_only() -> None:
    trainer = make_trainer()
    trainer.discriminator.eval()  # no dropout: the two passes below see the same network
    before = copy.deepcopy(trainer.discriminator)
    x, y = torch.rand(16, *SHAPE), torch.tensor([0, 1] * 8)
    trainer.step(x, y, None, 1.0, classes=torch.arange(4))
    # The gradient the aux head got in the step == that of the class loss on real x alone:
    # generated inputs (drawn for all 4 classes) added nothing to it.
    _, aux = before(x)
    F.cross_entropy(aux, y).backward()
    got = trainer.discriminator.aux.weight.grad
    assert got is not None and before.aux.weight.grad is not None
    torch.testing.assert_close(got, before.aux.weight.grad)
    # ...while the source head did learn from the generated inputs.
    source, _ = before(x)
    before.zero_grad()
    F.binary_cross_entropy_with_logits(source, torch.ones_like(source)).backward()
    assert trainer.discriminator.source.weight.grad is not None
    assert not torch.allclose(trainer.discriminator.source.weight.grad, before.source.weight.grad)


def test_fake_terms_ignore_the_auxiliary_head() -> None:
    trainer = make_trainer()
    trainer.discriminator.eval()
    fake = torch.rand(8, *SHAPE)
    first = trainer._d_fake_terms(fake)
    with torch.no_grad():
        trainer.discriminator.aux.weight.add_(1.0)
    torch.testing.assert_close(trainer._d_fake_terms(fake), first)
    assert first.shape == (8,)


def generator_step_change(diversity: float) -> torch.Tensor:
    """How far one trainer step moves the generator's weights."""
    torch.manual_seed(0)
    generator = GANGenerator(SHAPE, num_classes=4, hidden=32, latent_dim=8)
    discriminator = Discriminator(SHAPE, num_classes=4, hidden=32).eval()
    trainer = GANTrainer(
        generator,
        discriminator,
        lr=1e-3,
        rng=torch.Generator().manual_seed(0),
        diversity=diversity,
    )
    before = [p.detach().clone() for p in generator.parameters()]
    x, y = torch.rand(16, *SHAPE), torch.tensor([0, 1] * 8)
    trainer.step(x, y, None, 1.0, classes=torch.arange(4))
    after = list(generator.parameters())
    return torch.cat([(p.detach() - b).flatten() for p, b in zip(after, before, strict=True)])


def test_mode_seeking_term_changes_the_generator_update_only_when_on() -> None:
    off, off_again, on = (generator_step_change(d) for d in (0.0, 0.0, 0.5))
    torch.testing.assert_close(off, off_again)  # the step itself is deterministic
    assert not torch.allclose(off, on), "diversity > 0 must add to the generator's loss"


def test_negative_diversity_is_refused_with_its_name() -> None:
    with pytest.raises(ValueError, match="diversity"):
        GANTrainer(
            GANGenerator(SHAPE, num_classes=4, hidden=8, latent_dim=4),
            Discriminator(SHAPE, num_classes=4, hidden=8),
            lr=1e-3,
            diversity=-0.1,
        )


def test_the_number_of_fakes_does_not_follow_the_private_batch_size() -> None:
    """Under DP the Poisson batch size is private; fakes shape un-noised terms of the
    discriminator's step, so their number is fixed (it used to equal the batch size)."""
    trainer = make_trainer()
    seen: list[int] = []
    forward = trainer.generator.forward

    def spy(z: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        seen.append(z.shape[0])
        return forward(z, y)

    trainer.generator.forward = spy  # type: ignore[method-assign]
    for n in (3, 17, 0):
        x, y = torch.rand(n, *SHAPE), torch.randint(0, 4, (n,))
        trainer.step(x, y, None, 1.0, classes=torch.arange(4))
    assert seen == [trainer.num_fakes] * 3 and trainer.num_fakes == 64
