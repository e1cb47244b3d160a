"""Build the scholar's networks from config; the one place that maps names to classes."""

from __future__ import annotations

from torch import nn

from common.config import GeneratorConfig, SolverConfig
from common.data.types import Shape
from common.models.conv_gan import ConvDiscriminator, ConvGANGenerator
from common.models.gan import Discriminator, GANGenerator
from common.models.generator import Generator
from common.models.solver import CNNSolver, MLPSolver
from common.models.vae import VAEDecoder, VAEEncoder


def build_solver(cfg: SolverConfig, shape: Shape, num_classes: int) -> nn.Module:
    if cfg.arch == "mlp":
        return MLPSolver(shape, num_classes, cfg.hidden)
    return CNNSolver(shape, num_classes, cfg.hidden)


def build_generator(cfg: GeneratorConfig, shape: Shape, num_classes: int) -> Generator:
    """The shared half of the generative model."""
    if cfg.kind == "vae":
        return VAEDecoder(shape, num_classes, cfg.hidden, cfg.latent_dim)
    if cfg.arch == "conv":
        return ConvGANGenerator(shape, num_classes, cfg.hidden, cfg.latent_dim)
    return GANGenerator(shape, num_classes, cfg.hidden, cfg.latent_dim)


def build_critic(cfg: GeneratorConfig, shape: Shape, num_classes: int) -> nn.Module:
    """The private half: the VAE encoder or the GAN discriminator (never leaves a site)."""
    if cfg.kind == "vae":
        return VAEEncoder(shape, num_classes, cfg.hidden, cfg.latent_dim)
    if cfg.arch == "conv":
        return ConvDiscriminator(shape, num_classes, cfg.hidden)
    return Discriminator(shape, num_classes, cfg.hidden)
