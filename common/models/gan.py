"""AC-GAN (Odena et al. 2017): conditional generator, discriminator with an auxiliary
classifier. MLPs without BatchNorm so the discriminator can train under Opacus."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from common.data.types import Shape
from common.models.generator import Generator


class GANGenerator(Generator):
    """G(z, y): (B, Z), (B,) -> (B, C, H, W) in [0, 1]."""

    def __init__(self, shape: Shape, num_classes: int, hidden: int, latent_dim: int) -> None:
        super().__init__(shape, num_classes, latent_dim)
        c, h, w = shape
        self.net = nn.Sequential(
            nn.Linear(latent_dim + num_classes, hidden),
            nn.LeakyReLU(0.2),
            nn.Linear(hidden, hidden * 2),
            nn.LeakyReLU(0.2),
            nn.Linear(hidden * 2, c * h * w),
            nn.Sigmoid(),
        )

    def forward(self, z: Tensor, labels: Tensor) -> Tensor:
        return self.net(torch.cat([z, self.one_hot(labels)], dim=1)).view(-1, *self.shape)


class Discriminator(nn.Module):
    """D(x) -> (source logit (B,), class logits (B, K)). Stays at the site."""

    def __init__(self, shape: Shape, num_classes: int, hidden: int) -> None:
        super().__init__()
        c, h, w = shape
        self.body = nn.Sequential(
            nn.Flatten(),
            nn.Linear(c * h * w, hidden * 2),
            nn.LeakyReLU(0.2),
            nn.Dropout(0.3),
            nn.Linear(hidden * 2, hidden),
            nn.LeakyReLU(0.2),
        )
        self.source = nn.Linear(hidden, 1)
        self.aux = nn.Linear(hidden, num_classes)

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        hid = self.body(x)
        return self.source(hid).squeeze(1), self.aux(hid)


def _conv_kinds() -> tuple[tuple[type[Generator], ...], tuple[type[nn.Module], ...]]:
    from common.models.conv_gan import ConvDiscriminator, ConvGANGenerator
    from common.models.dgm import DGMGenerator

    return (GANGenerator, ConvGANGenerator, DGMGenerator), (Discriminator, ConvDiscriminator)


GAN_GENERATORS, DISCRIMINATORS = _conv_kinds()  # every architecture of the AC-GAN
