"""The one interface every generator kind offers: inputs for given labels."""

from __future__ import annotations

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from common.data.types import Shape


class Generator(nn.Module):
    """A conditional generator: ``(z, labels) -> inputs`` in [0, 1].

    This is the part of a generative model that leaves a site: the VAE's decoder or the
    GAN's generator. Its private partner (encoder / discriminator) never does.
    """

    def __init__(self, shape: Shape, num_classes: int, latent_dim: int) -> None:
        super().__init__()
        self.shape = shape
        self.num_classes = num_classes
        self.latent_dim = latent_dim

    def one_hot(self, labels: Tensor) -> Tensor:  # (B,) -> (B, K)
        return F.one_hot(labels.long(), self.num_classes).float()

    def forward(self, z: Tensor, labels: Tensor) -> Tensor:  # (B, Z), (B,) -> (B, C, H, W)
        raise NotImplementedError

    @torch.no_grad()
    def sample(self, labels: Tensor, *, generator: torch.Generator | None = None) -> Tensor:
        """n inputs for the n given labels, drawn from the prior."""
        device = next(self.parameters()).device
        z = torch.randn(labels.shape[0], self.latent_dim, generator=generator).to(device)
        was_training = self.training
        self.eval()
        x = self(z, labels.to(device))
        self.train(was_training)
        return x
