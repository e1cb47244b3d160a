"""The AC-GAN trainer: what each part of the discriminator learns from."""

from __future__ import annotations

import copy

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
