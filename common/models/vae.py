"""Conditional VAE: the encoder stays at the site, the decoder is the shared generator."""

from __future__ import annotations

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from common.data.types import Shape
from common.models.generator import Generator


class VAEEncoder(nn.Module):
    """q(z | x, y): (B, C, H, W), (B,) -> mu, logvar (B, Z)."""

    def __init__(self, shape: Shape, num_classes: int, hidden: int, latent_dim: int) -> None:
        super().__init__()
        c, h, w = shape
        self.num_classes = num_classes
        self.body = nn.Sequential(
            nn.Linear(c * h * w + num_classes, hidden),
            nn.ReLU(),
            nn.Linear(hidden, hidden),
            nn.ReLU(),
        )
        self.mu = nn.Linear(hidden, latent_dim)
        self.logvar = nn.Linear(hidden, latent_dim)

    def forward(self, x: Tensor, labels: Tensor) -> tuple[Tensor, Tensor]:
        y = F.one_hot(labels.long(), self.num_classes).float()
        hid = self.body(torch.cat([x.flatten(1), y], dim=1))
        return self.mu(hid), self.logvar(hid)


class VAEDecoder(Generator):
    """p(x | z, y): (B, Z), (B,) -> (B, C, H, W) in [0, 1]."""

    def __init__(self, shape: Shape, num_classes: int, hidden: int, latent_dim: int) -> None:
        super().__init__(shape, num_classes, latent_dim)
        c, h, w = shape
        self.net = nn.Sequential(
            nn.Linear(latent_dim + num_classes, hidden),
            nn.ReLU(),
            nn.Linear(hidden, hidden),
            nn.ReLU(),
            nn.Linear(hidden, c * h * w),
        )

    def logits(self, z: Tensor, labels: Tensor) -> Tensor:
        return self.net(torch.cat([z, self.one_hot(labels)], dim=1)).view(-1, *self.shape)

    def forward(self, z: Tensor, labels: Tensor) -> Tensor:
        return torch.sigmoid(self.logits(z, labels))


def vae_loss(
    encoder: VAEEncoder, decoder: VAEDecoder, x: Tensor, labels: Tensor, kl_weight: float = 1.0
) -> Tensor:
    """Per-sample negative ELBO (B,): Bernoulli reconstruction + KL to N(0, I), the KL
    weighted by ``kl_weight`` (1: the ELBO; below 1 a beta-VAE that keeps using its code
    where the KL would collapse it, e.g. on the 8x8 digits)."""
    mu, logvar = (v.float() for v in encoder(x, labels))  # fp32 KL under bf16 autocast
    z = mu + torch.randn_like(mu) * torch.exp(0.5 * logvar)
    recon = (
        F.binary_cross_entropy_with_logits(decoder.logits(z, labels), x, reduction="none")
        .flatten(1)
        .sum(1)
    )
    kl = -0.5 * (1 + logvar - mu.pow(2) - logvar.exp()).sum(1)
    return recon + kl_weight * kl
