"""Solvers (classifiers) and generators (conditional VAE decoder, AC-GAN generator)."""

from common.models.factory import (
    build_critic,
    build_generator,
    build_solver,
    generator_from_state,
    load_generator_state,
)
from common.models.generator import Generator

__all__ = [
    "Generator",
    "build_critic",
    "build_generator",
    "build_solver",
    "generator_from_state",
    "load_generator_state",
]
