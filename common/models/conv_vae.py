"""A convolutional conditional VAE (``generator.kind = "vae"``, ``generator.arch = "conv"``)
for 28x28 and 32x32 inputs (sizes divisible by 4), grey or RGB: the layout of the conv
AC-GAN (common.models.conv_gan) as decoder, its mirror as encoder. No BatchNorm: the
encoder trains on private records under Opacus, the decoder's weights travel.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from common.data.types import Shape
from common.models.conv_gan import _base, upsampler
from common.models.generator import Generator
from common.models.vae import VAEDecoder, VAEEncoder


class ConvVAEEncoder(VAEEncoder):
    """q(z | x, y): (B, C, H, W), (B,) -> mu, logvar (B, Z).

    (C + K, H, W) -> conv s2 -> (h, H/2, W/2) -> conv s2 -> (2h, H/4, W/4) -> flatten ++ y
    -> mu, logvar; the one-hot label enters as K constant channels and again at the heads."""

    def __init__(self, shape: Shape, num_classes: int, hidden: int, latent_dim: int) -> None:
        nn.Module.__init__(self)  # the MLP encoder's layers are not built
        c = shape[0]
        h4, w4 = _base(shape)
        self.num_classes = num_classes
        self.body = nn.Sequential(
            nn.Conv2d(c + num_classes, hidden, 4, stride=2, padding=1),
            nn.LeakyReLU(0.2),
            nn.Conv2d(hidden, 2 * hidden, 4, stride=2, padding=1),
            nn.LeakyReLU(0.2),
            nn.Flatten(),
        )
        features = 2 * hidden * h4 * w4 + num_classes
        self.mu = nn.Linear(features, latent_dim)
        self.logvar = nn.Linear(features, latent_dim)

    def forward(self, x: Tensor, labels: Tensor) -> tuple[Tensor, Tensor]:
        y = F.one_hot(labels.long(), self.num_classes).float()  # (B, K)
        planes = y.view(*y.shape, 1, 1).expand(-1, -1, *x.shape[2:])  # (B, K, H, W)
        hid = torch.cat([self.body(torch.cat([x, planes], dim=1)), y], dim=1)
        return self.mu(hid), self.logvar(hid)


class ConvVAEDecoder(VAEDecoder):
    """p(x | z, y): (B, Z), (B,) -> (B, C, H, W) in [0, 1].

    (z ++ onehot(y)) -> linear -> (2h, H/4, W/4) -> up x2 -> (h, H/2, W/2) -> up x2 -> (C, H, W)
    Bernoulli logits (vae_loss), sigmoid for samples."""

    def __init__(self, shape: Shape, num_classes: int, hidden: int, latent_dim: int) -> None:
        Generator.__init__(self, shape, num_classes, latent_dim)  # not the MLP decoder's layers
        c = shape[0]
        self.h4, self.w4 = _base(shape)
        self.channels = 2 * hidden
        self.project = nn.Linear(latent_dim + num_classes, self.channels * self.h4 * self.w4)
        self.net = nn.Sequential(*upsampler(self.channels, hidden, c))

    def logits(self, z: Tensor, labels: Tensor) -> Tensor:
        x = self.project(torch.cat([z, self.one_hot(labels)], dim=1))
        return self.net(x.view(-1, self.channels, self.h4, self.w4))
