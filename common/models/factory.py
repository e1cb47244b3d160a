"""Build the scholar's networks from config; the one place that maps names to classes."""

from __future__ import annotations

from torch import nn

from common.config import ExperimentConfig, GeneratorConfig, SolverConfig
from common.data.types import Shape
from common.models.conv_gan import ConvDiscriminator, ConvGANGenerator
from common.models.conv_vae import ConvVAEDecoder, ConvVAEEncoder
from common.models.dgm import DGMGenerator
from common.models.embedding import features_for
from common.models.gan import Discriminator, GANGenerator
from common.models.generator import Generator
from common.models.growth import fit_state
from common.models.ridge import RidgeSolver
from common.models.solver import CNNSolver, DiscriminatorSolver, MLPSolver
from common.models.vae import VAEDecoder, VAEEncoder


def build_solver(
    config: ExperimentConfig | SolverConfig, shape: Shape, num_classes: int
) -> nn.Module:
    """The solver (``solver.arch = "ridge"``, on the run's random features, needs the
    whole experiment's config)."""
    cfg = config if isinstance(config, SolverConfig) else config.solver
    if cfg.arch == "ridge":
        if not isinstance(config, ExperimentConfig):
            raise ValueError("solver.arch='ridge' is built from the experiment's config")
        return RidgeSolver(features_for(config, shape), num_classes, ridge=config.ridge.penalty)
    if cfg.arch == "mlp":
        return MLPSolver(shape, num_classes, cfg.hidden)
    if cfg.arch == "discriminator":  # the AC-GAN's critic, width solver.hidden
        return DiscriminatorSolver(shape, num_classes, cfg.hidden)
    return CNNSolver(shape, num_classes, cfg.hidden)


def build_generator(
    cfg: ExperimentConfig | GeneratorConfig, shape: Shape, num_classes: int
) -> Generator:
    """The shared half of the generative model (DGM: the masked conv generator)."""
    gen = cfg if isinstance(cfg, GeneratorConfig) else cfg.generator
    if isinstance(cfg, ExperimentConfig) and cfg.method == "dgm":
        return DGMGenerator(
            shape,
            num_classes,
            gen.hidden,
            gen.latent_dim,
            variant=cfg.dgm.variant,
            s_max=cfg.dgm.s_max,
            sparsity=cfg.dgm.sparsity,
            seed=cfg.seed,
        )
    if gen.kind == "vae":
        if gen.arch == "conv":
            return ConvVAEDecoder(shape, num_classes, gen.hidden, gen.latent_dim)
        return VAEDecoder(shape, num_classes, gen.hidden, gen.latent_dim)
    # "gan", and "embedding": the AC-GAN's generator network, fitted to a mean embedding
    if gen.arch == "conv":
        return ConvGANGenerator(shape, num_classes, gen.hidden, gen.latent_dim)
    return GANGenerator(shape, num_classes, gen.hidden, gen.latent_dim)


def build_critic(cfg: GeneratorConfig, shape: Shape, num_classes: int) -> nn.Module:
    """The private half: the VAE encoder or the GAN discriminator (never leaves a site;
    with ``solver.arch = "discriminator"`` the learner takes the solver's instead)."""
    if cfg.kind == "embedding":
        raise ValueError("generator.kind='embedding' has no critic: it fits a released embedding")
    if cfg.kind == "vae":
        if cfg.arch == "conv":
            return ConvVAEEncoder(shape, num_classes, cfg.hidden, cfg.latent_dim)
        return VAEEncoder(shape, num_classes, cfg.hidden, cfg.latent_dim)
    if cfg.arch == "conv":
        return ConvDiscriminator(shape, num_classes, cfg.hidden)
    return Discriminator(shape, num_classes, cfg.hidden)


def load_generator_state(generator: nn.Module, state: dict) -> None:  # type: ignore[type-arg]
    """Load a generator's state dict; a DGM generator first takes the state's (grown) shapes."""
    if isinstance(generator, DGMGenerator):
        fit_state(generator, state)
    generator.load_state_dict(state)


def generator_from_state(
    cfg: ExperimentConfig,
    shape: Shape,
    num_classes: int,
    state: dict,  # type: ignore[type-arg]
) -> Generator:
    """A generator built from config and loaded with ``state`` (replay payloads)."""
    gen = build_generator(cfg, shape, num_classes)
    load_generator_state(gen, state)
    return gen
