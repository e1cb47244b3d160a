"""A convolutional AC-GAN (DCGAN-style, Radford et al. 2016; auxiliary classifier, Odena et
al. 2017) for 28x28 and 32x32 inputs (any size divisible by 4), grey or RGB.

No BatchNorm anywhere: the discriminator trains on private records under Opacus (per-sample
gradients), and the generator's weights are what travels and is averaged, so both hold
nothing but their weights (no running statistics).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from common.data.types import Shape
from common.models.generator import Generator


def _base(shape: Shape) -> tuple[int, int]:
    """Spatial size after two stride-2 downsamplings: (H/4, W/4)."""
    _, h, w = shape
    if h % 4 or w % 4:
        raise ValueError(f"the conv GAN needs height and width divisible by 4, got {h}x{w}")
    return h // 4, w // 4


def upsampler(channels: int, hidden: int, out_channels: int) -> list[nn.Module]:
    """(channels, H/4, W/4) -> up x2 -> (hidden, H/2, W/2) -> up x2 -> (out_channels, H, W),
    unbounded outputs: the conv generator's layers (the VAE's decoder adds no sigmoid)."""
    return [
        nn.LeakyReLU(0.2),
        nn.ConvTranspose2d(channels, hidden, 4, stride=2, padding=1),  # (h, H/2, W/2)
        nn.LeakyReLU(0.2),
        nn.ConvTranspose2d(hidden, out_channels, 4, stride=2, padding=1),  # (C, H, W)
    ]


class ConvGANGenerator(Generator):
    """G(z, y): (B, Z), (B,) -> (B, C, H, W) in [0, 1].

    (z ++ onehot(y)) -> linear -> (2h, H/4, W/4) -> up x2 -> (h, H/2, W/2) -> up x2 -> (C, H, W)
    with ``h = hidden`` channels (64 for MNIST)."""

    def __init__(self, shape: Shape, num_classes: int, hidden: int, latent_dim: int) -> None:
        super().__init__(shape, num_classes, latent_dim)
        c = shape[0]
        self.h4, self.w4 = _base(shape)
        self.channels = 2 * hidden
        self.project = nn.Linear(latent_dim + num_classes, self.channels * self.h4 * self.w4)
        self.net = nn.Sequential(*upsampler(self.channels, hidden, c), nn.Sigmoid())

    def forward(self, z: Tensor, labels: Tensor) -> Tensor:
        x = self.project(torch.cat([z, self.one_hot(labels)], dim=1))
        return self.net(x.view(-1, self.channels, self.h4, self.w4))


class ConvDiscriminator(nn.Module):
    """D(x) -> (source logit (B,), class logits (B, K)). Stays at the site.

    (C, H, W) -> conv s2 -> (h, H/2, W/2) -> conv s2 -> (2h, H/4, W/4) -> flatten -> heads."""

    def __init__(self, shape: Shape, num_classes: int, hidden: int) -> None:
        super().__init__()
        c = shape[0]
        h4, w4 = _base(shape)
        self.body = nn.Sequential(
            nn.Conv2d(c, hidden, 4, stride=2, padding=1),
            nn.LeakyReLU(0.2),
            nn.Conv2d(hidden, 2 * hidden, 4, stride=2, padding=1),
            nn.LeakyReLU(0.2),
            nn.Flatten(),
        )
        features = 2 * hidden * h4 * w4
        self.source = nn.Linear(features, 1)
        self.aux = nn.Linear(features, num_classes)

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        hid = self.body(x)
        return self.source(hid).squeeze(1), self.aux(hid)
