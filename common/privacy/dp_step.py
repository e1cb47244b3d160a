"""DP-SGD step that keeps replay out of the privacy accounting.

    g = r * (sum_i clip(grad l_i, C) + N(0, sigma^2 C^2 I)) / (q n)  +  clip(grad L_public, C)

The first term is Opacus' DP-SGD on the Poisson-sampled real batch (per-sample clipping,
Gaussian noise, division by the expected batch size q n), computed with ghost clipping
(Li et al. 2022; Opacus' fast gradient clipping): a first backward pass yields every
record's gradient norm without materialising per-sample gradients, a second backward of
``sum_i min(1, C / ||grad l_i||) l_i`` yields the clipped sum (materialising per-sample
gradients of wide linear layers is what makes plain DP-SGD slow on CPU). The second term
is the gradient of the replay/fake-sample loss: computed with Opacus' hooks disabled, from models
that are already private (post-processing), so it needs no clipping or noise, and it
changes neither the sampling of real records nor what the accountant must count. It is
clipped as a whole to the same norm C, so that both parts are in the same units (unclipped,
a VAE's replay gradient would be ~100x the private one). The replay weight 1 - r sits inside
the public loss, before the clipping: a replay gradient above C / (1 - r) is cut back to C
whatever r is, so replay can outweigh the private part's r C in late tasks. Weighting after
the clipping (the ratio kept exactly) was measured worse under DP (docs/notebook/results.md,
"Aggregation, replay weighting, soft labels and a recognition mixture under DP"). Every
call of :meth:`DPStepper.step` is one subsampled Gaussian mechanism: ``on_step`` records it.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

import torch
from opacus.grad_sample.grad_sample_module_fast_gradient_clipping import (
    GradSampleModuleFastGradientClipping,
)
from opacus.optimizers import DPOptimizerFastGradientClipping
from opacus.validators import ModuleValidator
from torch import Tensor, nn

from common.privacy.randomness import secret_generator

LossFn = Callable[[], Tensor]  # a closure computing a loss (the Stepper's, common.training.step)

# Opacus' per-sample hooks fire on layers whose inputs need no gradient (the first layer);
# PyTorch warns about that on every step although the per-sample gradients are correct.
warnings.filterwarnings("ignore", message="Full backward hook is firing", category=UserWarning)


@dataclass(frozen=True, kw_only=True)  # sigma, clip and rate are never passed by position
class DPPlan:
    """How a site trains privately in one round.

    ``sampling`` draws the Poisson masks and ``noise`` the Gaussian noise: both secret and
    fresh (:mod:`common.privacy.randomness`) unless a test passes its own.
    """

    noise_multiplier: float
    max_grad_norm: float
    sample_rate: float  # Poisson rate q = expected batch / records
    on_step: Callable[[], None]  # records one mechanism in the accountant
    sampling: torch.Generator = field(default_factory=secret_generator, repr=False)
    noise: torch.Generator = field(default_factory=secret_generator, repr=False)


class PrivacyValidationError(ValueError):
    """A module that sees private data cannot be trained with DP-SGD as it is."""


class DPStepper:
    def __init__(
        self,
        optimizer: torch.optim.Optimizer,
        module: nn.Module,
        *,
        noise_multiplier: float,
        max_grad_norm: float,
        expected_batch_size: int,
        on_step: Callable[[], None],
        noise: torch.Generator | None = None,
    ) -> None:
        errors = ModuleValidator.validate(module, strict=False)
        if errors:
            raise PrivacyValidationError(
                f"{type(module).__name__} cannot be trained with DP-SGD: {errors[0]}"
            )
        self.gsm = GradSampleModuleFastGradientClipping(
            module, loss_reduction="mean", max_grad_norm=max_grad_norm, use_ghost_clipping=True
        )
        self.params = [p for p in module.parameters() if p.requires_grad]
        self.optimizer = DPOptimizerFastGradientClipping(
            optimizer,
            noise_multiplier=noise_multiplier,
            max_grad_norm=max_grad_norm,
            expected_batch_size=max(expected_batch_size, 1),
            loss_reduction="mean",
            # secret and fresh (default: a new secret generator), never torch's global one
            generator=noise if noise is not None else secret_generator(),
            secure_mode=True,  # each noise value a sum of 4 Gaussians (floating-point attack)
        )
        self.on_step = on_step
        self.max_grad_norm = max_grad_norm

    @contextmanager
    def public_context(self) -> Iterator[None]:
        """Forward/backward passes that must not produce per-sample gradients."""
        self.gsm.disable_hooks()
        try:
            yield
        finally:
            self.gsm.enable_hooks()

    def step(self, *, private: LossFn, public: LossFn | None, private_weight: float) -> float:
        self.optimizer.zero_grad(set_to_none=True)
        losses = private()  # (B,) per-sample losses on real records; B may be 0
        if losses.numel():
            losses.mean().backward(retain_graph=True)  # hooks record per-sample norms
            coef = self.gsm.get_clipping_coef()  # (B,) min(1, C / ||grad l_i||)
            self.optimizer.zero_grad(set_to_none=True)
            with self.public_context():  # plain backward: sum_i clip(grad l_i) into p.grad
                (coef.to(losses.device).detach() * losses).sum().backward()
        else:  # an empty Poisson batch: the step is pure noise, and still counted
            for p in self.params:
                p.grad = torch.zeros_like(p)
        self.optimizer.pre_step()  # add noise to the clipped sum, divide by q n
        for p in self.params:
            if p.grad is not None:
                p.grad.mul_(private_weight)
        total = private_weight * float(losses.detach().mean()) if losses.numel() else 0.0
        if public is not None:
            with self.public_context():
                loss = public()
                grads = torch.autograd.grad(loss, self.params, allow_unused=True)
            # The replay part needs no privacy, but it must weigh in the same units as the
            # private part, whose per-sample gradients were clipped to C: left unclipped, a
            # VAE's replay gradient (norms in the hundreds) would drown the real data.
            norm = torch.stack([g.detach().norm() for g in grads if g is not None]).norm()
            scale = min(1.0, self.max_grad_norm / (float(norm) + 1e-12))
            for p, g in zip(self.params, grads, strict=True):
                if g is not None:
                    g = g * scale
                    p.grad = g if p.grad is None else p.grad + g
            total += float(loss.detach())
        self.optimizer.original_optimizer.step()
        self.on_step()
        return total

    def close(self) -> None:
        """Remove Opacus' hooks so the module is plain again after the round."""
        self.optimizer.zero_grad(set_to_none=True)
        self.gsm._close()


def dp_stepper_factory(
    plan: DPPlan, *, expected_batch_size: int
) -> Callable[[torch.optim.Optimizer, nn.Module], DPStepper]:
    def make(optimizer: torch.optim.Optimizer, module: nn.Module) -> DPStepper:
        return DPStepper(
            optimizer,
            module,
            noise_multiplier=plan.noise_multiplier,
            max_grad_norm=plan.max_grad_norm,
            expected_batch_size=expected_batch_size,
            on_step=plan.on_step,
            noise=plan.noise,
        )

    return make
