"""Training of the generative half of a scholar on real data plus replay.

Each trainer owns the shared :class:`Generator` and its private critic (VAE encoder or
GAN discriminator) and makes one update per call to :meth:`step`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from common.models.dgm import DGMGenerator
from common.models.generator import Generator
from common.models.vae import VAEDecoder, VAEEncoder, vae_loss
from common.replay import ReplayBatch
from common.training.losses import mean_or_zero, replay_loss
from common.training.optim import adam
from common.training.step import PlainStepper, Stepper

StepperFactory = Callable[[torch.optim.Optimizer, nn.Module], Stepper]


def plain(optimizer: torch.optim.Optimizer, module: nn.Module) -> Stepper:
    return PlainStepper(optimizer)


class GenerativeTrainer(Protocol):
    def step(
        self, x: Tensor, y: Tensor, replay: ReplayBatch | None, ratio: float, classes: Tensor
    ) -> dict[str, float]: ...

    def close(self) -> None: ...


class VAETrainer:
    """Conditional VAE: encoder and decoder both see real data (both private under DP)."""

    def __init__(
        self,
        decoder: VAEDecoder,
        encoder: VAEEncoder,
        *,
        lr: float,
        make_stepper: StepperFactory = plain,
        kl_weight: float = 1.0,
    ) -> None:
        self.decoder, self.encoder = decoder, encoder
        self.kl_weight = kl_weight
        self.model = nn.ModuleDict({"encoder": encoder, "decoder": decoder})
        opt = adam(self.model.parameters(), lr=lr)
        self.stepper = make_stepper(opt, self.model)

    def step(
        self, x: Tensor, y: Tensor, replay: ReplayBatch | None, ratio: float, classes: Tensor
    ) -> dict[str, float]:
        enc, dec, kl = self.encoder, self.decoder, self.kl_weight
        if replay is not None and isinstance(self.stepper, PlainStepper):
            n = x.shape[0]  # without DP: real and replayed rows in one forward pass

            def joint() -> Tensor:
                losses = vae_loss(enc, dec, torch.cat([x, replay.x]), torch.cat([y, replay.y]), kl)
                return ratio * losses[:n].mean() + (1 - ratio) * losses[n:].mean()

            loss = self.stepper.step(private=joint, public=None, private_weight=1.0)
            return {"loss_generator": loss}

        def public() -> Tensor:
            assert replay is not None
            return (1 - ratio) * vae_loss(enc, dec, replay.x, replay.y, kl).mean()

        loss = self.stepper.step(
            private=lambda: vae_loss(enc, dec, x, y, kl),
            public=public if replay is not None else None,
            private_weight=ratio,
        )
        return {"loss_generator": loss}

    def close(self) -> None:
        self.stepper.close()


class GANTrainer:
    """AC-GAN: the discriminator sees real data (private under DP); the generator never
    does, so it is private by post-processing."""

    def __init__(
        self,
        generator: Generator,
        discriminator: nn.Module,  # x -> (source logit (B,), class logits (B, K))
        *,
        lr: float,
        make_stepper: StepperFactory = plain,
        rng: torch.Generator | None = None,
        diversity: float = 0.0,
        num_fakes: int = 64,
        replay_aux_only: bool = False,
    ) -> None:
        if num_fakes < 1:
            raise ValueError(f"num_fakes={num_fakes!r} must be >= 1")
        if diversity < 0:
            raise ValueError(f"diversity={diversity!r} must be >= 0 (0 = no mode-seeking term)")
        self.generator, self.discriminator = generator, discriminator
        self.diversity = diversity
        # True: replay teaches the auxiliary classifier only (the generator learns the
        # current task alone: DGM, per-task replay), as much as every finished task
        self.replay_aux_only = replay_aux_only
        # A fixed number of fakes per step: under DP the real batch's size is private
        # (Poisson sampling), and fakes shape un-noised terms of the discriminator's step.
        self.num_fakes = num_fakes
        betas = (0.5, 0.999)  # DCGAN's Adam
        d_opt = adam(discriminator.parameters(), lr=lr, betas=betas)
        groups = (
            generator.param_groups(lr)
            if isinstance(generator, DGMGenerator)
            else [{"params": list(generator.parameters())}]
        )
        self.g_opt = adam(groups, lr=lr, betas=betas)
        self.d_stepper = make_stepper(d_opt, discriminator)
        self.rng = rng

    def _d_terms(self, x: Tensor, labels: Tensor) -> Tensor:
        """Per-sample discriminator loss on real (or replayed) inputs (B,): source
        ("real") + auxiliary class."""
        source, aux = self.discriminator(x)
        cls = F.cross_entropy(aux, labels, reduction="none")
        real = F.binary_cross_entropy_with_logits(source, torch.ones_like(source), reduction="none")
        return real + cls

    def _d_fake_terms(self, fake: Tensor) -> Tensor:
        """Per-sample discriminator loss on generated inputs (B,): source ("fake") only.

        The auxiliary classifier learns classes from real and replayed inputs alone. Taught
        on fakes too (the original AC-GAN), it learns whatever the generator draws for a
        new class as that class, and in class-incremental DGR the generator then draws old
        digits for new labels (measured: docs/notebook/results.md, "AC-GAN generator")."""
        source, _ = self.discriminator(fake)
        return F.binary_cross_entropy_with_logits(
            source, torch.zeros_like(source), reduction="none"
        )

    def step(
        self, x: Tensor, y: Tensor, replay: ReplayBatch | None, ratio: float, classes: Tensor
    ) -> dict[str, float]:
        device = x.device
        n = self.num_fakes  # never the (private) real batch size
        fake_y = classes[torch.randint(len(classes), (n,), generator=self.rng)].to(device)
        z = torch.randn(n, self.generator.latent_dim, generator=self.rng).to(device)
        fake = self.generator(z, fake_y)

        aux_only = self.replay_aux_only and replay is not None
        # aux-only replay: the real batch keeps its full weight (the GAN learns from it) and
        # the replayed classes weigh (1 - r) / r against it, DGR's mixture for the classifier
        real_weight = 1.0 if aux_only else ratio

        def public() -> Tensor:
            loss = mean_or_zero(self._d_fake_terms(fake.detach()))
            if replay is not None and aux_only:
                _, aux = self.discriminator(replay.x)
                replayed = replay_loss(aux, replay.y, replay.soft, 2.0).mean()
                loss = loss + (1 - ratio) / ratio * replayed
            elif replay is not None:
                loss = loss + (1 - ratio) * self._d_terms(replay.x, replay.y).mean()
            return loss

        d_loss = self.d_stepper.step(
            private=lambda: self._d_terms(x, y), public=public, private_weight=real_weight
        )
        # Generator step: D is only read (no per-sample hooks, no gradient for D).
        with self.d_stepper.public_context():
            for p in self.discriminator.parameters():
                p.requires_grad_(False)
            self.g_opt.zero_grad(set_to_none=True)
            fakes, fakes_y, spread = fake, fake_y, None
            if self.diversity > 0:
                # Mode seeking (Mao et al. 2019): a second draw for the same labels; the
                # generator is rewarded for images as far apart as their codes.
                z2 = torch.randn(n, self.generator.latent_dim, generator=self.rng).to(device)
                fake2 = self.generator(z2, fake_y)
                fakes, fakes_y = torch.cat([fake, fake2]), torch.cat([fake_y, fake_y])
                # (B,) mean pixel distance over mean code distance, per pair
                spread = (fake - fake2).abs().flatten(1).mean(1) / (z - z2).abs().mean(1)
            source, aux = self.discriminator(fakes)
            adversarial = F.binary_cross_entropy_with_logits(source, torch.ones_like(source))
            g_loss = adversarial + F.cross_entropy(aux, fakes_y)
            if spread is not None:
                g_loss = g_loss + self.diversity / (spread.mean() + 1e-5)
            plastic = self.generator if isinstance(self.generator, DGMGenerator) else None
            if plastic is not None:  # DGM: claim little free capacity
                g_loss = g_loss + plastic.regulariser()
            g_loss.backward()
            if plastic is not None:  # finished tasks' weights stay exactly as they are
                plastic.protect_()
            self.g_opt.step()
            if plastic is not None:
                plastic.after_step_()
            for p in self.discriminator.parameters():
                p.requires_grad_(True)
        return {"loss_discriminator": d_loss, "loss_generator": float(g_loss.detach())}

    def close(self) -> None:
        self.d_stepper.close()
