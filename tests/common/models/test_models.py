"""Solvers and generators: shapes, ranges, no BatchNorm, Opacus compatibility."""

import pytest
import torch
from opacus.validators import ModuleValidator
from torch import nn

from common.config import GeneratorConfig, SolverConfig
from common.models import build_critic, build_generator, build_solver
from common.models.vae import vae_loss

SHAPES = [(1, 8, 8), (1, 28, 28), (3, 28, 28)]


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("arch", ["mlp", "cnn"])
def test_solver_outputs_logits_per_class(shape: tuple[int, int, int], arch: str) -> None:
    solver = build_solver(SolverConfig(arch=arch, hidden=32), shape, 7)
    assert solver(torch.rand(5, *shape)).shape == (5, 7)


@pytest.mark.parametrize("shape", [*SHAPES, (3, 32, 32)])
@pytest.mark.parametrize(
    ("kind", "arch"), [("vae", "mlp"), ("vae", "conv"), ("gan", "mlp"), ("gan", "conv")]
)
def test_generator_samples_inputs_in_unit_range(
    shape: tuple[int, int, int], kind: str, arch: str
) -> None:
    gen = build_generator(GeneratorConfig(kind, 32, 8, arch=arch), shape, 10)
    x = gen.sample(torch.tensor([0, 3, 9]))
    assert x.shape == (3, *shape)
    assert float(x.min()) >= 0.0 and float(x.max()) <= 1.0
    assert gen.training, "sample() must restore the training mode"


@pytest.mark.parametrize(
    ("kind", "gen_arch"), [("vae", "mlp"), ("vae", "conv"), ("gan", "mlp"), ("gan", "conv")]
)
@pytest.mark.parametrize("arch", ["mlp", "cnn"])
def test_every_module_that_sees_private_data_passes_opacus_validator(
    kind: str, gen_arch: str, arch: str
) -> None:
    shape = (1, 28, 28)
    modules: list[nn.Module] = [
        build_solver(SolverConfig(arch=arch, hidden=32), shape, 10),
        build_critic(GeneratorConfig(kind, 32, 8, arch=gen_arch), shape, 10),
    ]
    if kind == "vae":  # the decoder sees reconstructions of real data too
        modules.append(build_generator(GeneratorConfig(kind, 32, 8, arch=gen_arch), shape, 10))
    for module in modules:
        assert ModuleValidator.validate(module, strict=False) == []
        assert not any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in module.modules())


@pytest.mark.parametrize("arch", ["mlp", "conv"])
def test_vae_loss_is_per_sample_and_decreases_with_training(arch: str) -> None:
    cfg = GeneratorConfig(kind="vae", hidden=64, latent_dim=4, arch=arch)
    enc, dec = build_critic(cfg, (1, 8, 8), 2), build_generator(cfg, (1, 8, 8), 2)
    x = (torch.rand(32, 1, 8, 8) > 0.5).float()
    y = torch.randint(2, (32,))
    opt = torch.optim.Adam([*enc.parameters(), *dec.parameters()], lr=1e-2)
    first = vae_loss(enc, dec, x, y)  # type: ignore[arg-type]
    assert first.shape == (32,)
    for _ in range(100):
        opt.zero_grad()
        vae_loss(enc, dec, x, y).mean().backward()  # type: ignore[arg-type]
        opt.step()
    assert vae_loss(enc, dec, x, y).mean() < 0.8 * first.mean()  # type: ignore[arg-type]


@pytest.mark.parametrize("shape", [(1, 28, 28), (3, 32, 32)])
def test_conv_discriminator_scores_and_classifies(shape: tuple[int, int, int]) -> None:
    critic = build_critic(GeneratorConfig("gan", 16, 8, arch="conv"), shape, 5)
    source, aux = critic(torch.rand(4, *shape))
    assert source.shape == (4,) and aux.shape == (4, 5)
    assert any(isinstance(m, nn.Conv2d) for m in critic.modules())


def test_conv_gan_refuses_sizes_it_cannot_build() -> None:
    with pytest.raises(ValueError, match="divisible by 4"):
        build_generator(GeneratorConfig("gan", 16, 8, arch="conv"), (1, 30, 30), 10)
