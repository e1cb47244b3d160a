"""One site's continual learner: what a site trains on task t, and how.

Used unchanged by the single-site runner and by the Flower ClientApp. The caller decides
where the previous scholar comes from (its own snapshot, or the server's aggregate);
``replay_for`` turns it into an explicit :class:`~common.replay.Replay`.
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import torch
from torch import nn
from tqdm.auto import tqdm

from common.config import ExperimentConfig
from common.config.methods import EXACT, NOTHING, PREVIOUS_SOLVER
from common.data.types import Shape, Split, Task, concat
from common.methods import Regulariser
from common.models import Generator, build_critic, build_generator, build_solver
from common.models.dgm import DGMGenerator
from common.models.factory import generator_from_state
from common.models.gan import DISCRIMINATORS, GAN_GENERATORS
from common.models.solver import DiscriminatorSolver
from common.models.vae import VAEDecoder, VAEEncoder
from common.privacy.dp_step import DPPlan, dp_stepper_factory
from common.replay import ExactReplay, GenerativeReplay, Replay, ReplayBatch, ReplayPayload
from common.training.batches import poisson_batches, shuffled_batches
from common.training.generative import (
    GANTrainer,
    GenerativeTrainer,
    StepperFactory,
    VAETrainer,
    plain,
)
from common.training.losses import classification_loss, replay_loss
from common.training.optim import adam
from common.training.step import PlainStepper, Stepper


@dataclass(frozen=True)
class ReplaySource:
    """Frozen models of the finished tasks that replay them: one solver labels inputs
    drawn from one generator (DGR) or a weighted mixture of generators (ensemble)."""

    solver: nn.Module
    generators: tuple[Generator, ...]
    weights: tuple[float, ...]
    classes: tuple[int, ...]  # classes of the finished tasks
    generator_classes: tuple[tuple[int, ...], ...] = ()  # per generator; () = all classes
    class_weights: tuple[tuple[float, ...], ...] = ()  # per generator and class (class-counts)


def source_from_payload(
    cfg: ExperimentConfig,
    shape: Shape,
    num_classes: int,
    payload: ReplayPayload,
    device: torch.device,
) -> ReplaySource:
    """The frozen models a replay payload describes (the one constructor the sites and the
    server use)."""
    solver = build_solver(cfg, shape, num_classes)
    solver.load_state_dict(payload.solver)
    gens = tuple(
        generator_from_state(cfg, shape, num_classes, state).to(device).eval().requires_grad_(False)
        for state in payload.generators
    )
    return ReplaySource(
        solver.to(device).eval().requires_grad_(False),
        gens,
        payload.weights,
        payload.classes,
        payload.generator_classes,
        payload.class_weights,
    )


REPLAY_PREFETCH = 8  # replay batches drawn per forward pass of the frozen models


def synthetic_batches(
    generator: Generator,
    classes: Sequence[int],
    batch_size: int,
    *,
    rng: torch.Generator,
) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Endless batches of the generator's samples of ``classes``, uniform over them."""
    if not classes:
        raise ValueError("no classes to draw synthetic batches of")
    pool = torch.tensor(list(classes))
    while True:
        labels = pool[torch.randint(len(pool), (batch_size,), generator=rng)]
        with torch.no_grad():
            x = generator.sample(labels, generator=rng)
        yield x, labels


def replay_for(
    cfg: ExperimentConfig,
    tasks: Sequence[Task],
    t: int,
    previous: ReplaySource | None,
    *,
    rng: torch.Generator,
) -> Replay | None:
    """The replay of tasks before t for ``cfg.method`` (None for task 0 and the methods
    that replay nothing: common.config.methods)."""
    kind = cfg.replay_kind
    if t == 0 or kind in (NOTHING, PREVIOUS_SOLVER):
        return None
    if kind == EXACT:
        return ExactReplay(concat([task.train for task in tasks[:t]]), rng=rng)
    if previous is None or not previous.generators:
        raise ValueError(
            f"method {cfg.method!r} at task {t} needs the previous scholar to replay from"
        )
    return generative_replay(cfg, previous, rng=rng)


def generative_replay(
    cfg: ExperimentConfig,
    source: ReplaySource,
    *,
    rng: torch.Generator,
    labeller: nn.Module | None = None,
) -> GenerativeReplay:
    """The one constructor of generative replay, for the sites and for the server's own
    looks at what they replay: ``source``'s generators (the mixture), labelled by its
    solver (or ``labeller``)."""
    return GenerativeReplay(
        source.generators,
        source.solver if labeller is None else labeller,
        source.classes,
        weights=source.weights,
        labels=cfg.replay.labels,
        retries=cfg.replay.retries,
        rng=rng,
        prefetch=REPLAY_PREFETCH,
        generator_classes=source.generator_classes,
        mixture=cfg.replay.mixture,
        class_weights=source.class_weights,
    )


class Learner:
    """A scholar that keeps learning: solver + generator (shared) + critic (private)."""

    def __init__(
        self,
        cfg: ExperimentConfig,
        *,
        shape: Shape,
        num_classes: int,
        device: torch.device,
    ) -> None:
        self.cfg, self.shape, self.num_classes, self.device = cfg, shape, num_classes, device
        self.solver = build_solver(cfg, shape, num_classes).to(device)
        self.regulariser: Regulariser | None = None  # method = lwf / ewc (common.methods)
        self.generator: Generator | None = None
        self.critic: nn.Module | None = None
        if cfg.uses_generator:
            self.generator = build_generator(cfg, shape, num_classes).to(device)
            if isinstance(self.solver, DiscriminatorSolver):
                self.critic = self.solver.discriminator  # the critic is the solver
            elif not cfg.generator_traits.released:  # (fitted to a release: no critic)
                self.critic = build_critic(cfg.generator, shape, num_classes).to(device)

    @property
    def critic_is_solver(self) -> bool:
        """True when the discriminator classifies (``solver.arch = "discriminator"``):
        it trains as the critic and travels as the solver, so nothing stays private."""
        return isinstance(self.solver, DiscriminatorSolver)

    @property
    def private_critic(self) -> nn.Module | None:
        """The critic that stays at the site (None: none, or it is the solver)."""
        return None if self.critic_is_solver else self.critic

    def _generative_trainer(
        self, rng: torch.Generator, make_stepper: StepperFactory
    ) -> GenerativeTrainer:
        lr = self.cfg.generator.lr
        if isinstance(self.generator, VAEDecoder) and isinstance(self.critic, VAEEncoder):
            return VAETrainer(
                self.generator,
                self.critic,
                lr=lr,
                make_stepper=make_stepper,
                kl_weight=self.cfg.vae.kl_weight_for(self.cfg.data.name),
            )
        if isinstance(self.generator, GAN_GENERATORS) and isinstance(self.critic, DISCRIMINATORS):
            return GANTrainer(
                self.generator,
                self.critic,
                lr=lr,
                make_stepper=make_stepper,
                rng=rng,
                diversity=self.cfg.gan.diversity,
                num_fakes=self.cfg.train.batch_size,
                replay_aux_only=self._own_task_only,
            )
        raise TypeError("generator and critic kinds do not match")

    @property
    def _own_task_only(self) -> bool:
        """DGM's masks, or replay.mode = per-task (finished tasks keep their own
        generators), protect the past: the generator learns the current task alone."""
        return isinstance(self.generator, DGMGenerator) or self.cfg.replay.mode == "per-task"

    def _solver_update(
        self,
        stepper: Stepper,
        x: torch.Tensor,
        y: torch.Tensor,
        rb: ReplayBatch | None,
        ratio: float,
    ) -> float:
        """One solver update: real ``(x, y)`` at importance ``ratio``, replay ``rb`` at
        ``1 - ratio``. Without DP (a plain stepper) real and replayed rows share one
        forward pass (the same loss; the models have no BatchNorm); under DP the real rows
        are the clipped, noised part and replay is added after."""
        reg = self.regulariser

        def on_real(logits: torch.Tensor) -> torch.Tensor:  # per record (B,)
            loss = classification_loss(logits, y)
            extra = reg.per_sample(x, logits) if reg is not None else None
            return loss if extra is None else loss + extra

        def on_weights() -> torch.Tensor | None:
            return reg.on_weights(self.solver) if reg is not None else None

        if rb is not None and isinstance(stepper, PlainStepper):
            n = x.shape[0]

            def joint() -> torch.Tensor:
                logits = self.solver(torch.cat([x, rb.x]))  # (n + m, K)
                real = on_real(logits[:n]).mean()
                replayed = replay_loss(logits[n:], rb.y, rb.soft, 2.0).mean()
                penalty = on_weights()
                loss = ratio * real + (1 - ratio) * replayed
                return loss if penalty is None else loss + penalty

            return stepper.step(private=joint, public=None, private_weight=1.0)

        def public() -> torch.Tensor:
            loss = torch.zeros((), device=x.device)
            if rb is not None:
                loss = (1 - ratio) * replay_loss(self.solver(rb.x), rb.y, rb.soft, 2.0).mean()
            penalty = on_weights()
            return loss if penalty is None else loss + penalty

        return stepper.step(
            private=lambda: on_real(self.solver(x)),
            public=public if rb is not None or reg is not None else None,
            private_weight=ratio,
        )

    def train(
        self,
        real: Split,
        *,
        replay: Replay | None,
        num_tasks_seen: int,
        classes_seen: Sequence[int],
        iterations: int,
        seed: int,
        dp: DPPlan | None = None,
        desc: str = "",
        progress: bool = False,
        task_span: tuple[float, float] = (0.0, 1.0),
    ) -> dict[str, float]:
        """``iterations`` updates of the solver (and of the generator, for DGR) on
        ``real`` mixed with ``replay`` at importance ``r`` for the current data.

        With ``dp``, real records are Poisson-sampled and every update of a module that
        sees them is a DP-SGD step (replay stays outside the clipped, noised part).
        Solver and generator draw their own batches, so each step is one mechanism.

        With ``replay.solver-data = "synthetic"`` the generator takes all its steps first,
        then the solver learns the current task's classes (from the configuration, never
        from which classes the site holds) from the generator's samples, plus replay: the
        solver never sees a real record, so under DP only the generator's steps are private.

        DGM (``method = "dgm"``): the generator learns the current task's classes from real
        data alone (its masks protect the finished tasks), its masks' scale annealed over
        ``task_span``, the share of the task this call covers; the solver learns real data
        plus replay as in DGR.
        """
        cfg = self.cfg
        rng = torch.Generator().manual_seed(seed)
        ratio = 1.0 if replay is None else cfg.replay.ratio_for(num_tasks_seen)
        replay_n = cfg.train.batch_size
        classes = torch.tensor(list(classes_seen))
        make_stepper: StepperFactory = plain

        def real_batches() -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
            """Batches of real records: shuffled, or Poisson masks from the plan's secret
            generator under DP (never from ``seed``)."""
            if dp is None:
                return shuffled_batches(real, cfg.train.batch_size, rng=rng)
            return poisson_batches(real, sample_rate=dp.sample_rate, rng=dp.sampling)

        if dp is not None:
            make_stepper = dp_stepper_factory(
                dp, expected_batch_size=round(dp.sample_rate * len(real))
            )
        synthetic = cfg.replay.solver_data == "synthetic"
        # the discriminator as the solver learns in the critic's steps: no steps of its own
        solver_step: Stepper | None = None
        if not self.critic_is_solver:
            solver_opt = adam(self.solver.parameters(), lr=cfg.train.lr)
            # a solver that learns from the generator alone is post-processing: no DP step
            solver_step = (
                plain(solver_opt, self.solver)
                if synthetic
                else make_stepper(solver_opt, self.solver)
            )
        gen_trainer = (  # an embedding generator is fitted before (client.site)
            self._generative_trainer(rng, make_stepper) if self.critic is not None else None
        )
        gen_steps = cfg.generator.steps(iterations) if gen_trainer is not None else 0
        if synthetic:
            if self.generator is None:
                raise ValueError("replay.solver-data='synthetic' needs a generator")
            old = set(replay.classes) if replay is not None else set()
            current = [c for c in classes_seen if c not in old]
            solver_batches = synthetic_batches(
                self.generator, current, cfg.train.batch_size, rng=rng
            )
            # (solver step?, generator step?) per iteration: the generator first
            schedule = [(False, True)] * gen_steps + [(True, False)] * iterations
        else:
            solver_batches = real_batches()
            solver_steps = iterations if solver_step is not None else 0
            steps = max(solver_steps, gen_steps)
            schedule = [(it < solver_steps, it < gen_steps) for it in range(steps)]
        gen_batches = real_batches()
        dgm = self.generator if isinstance(self.generator, DGMGenerator) else None
        own_task_only = self._own_task_only
        # gan.labels: "real" draws the fakes for the real batch's labels (a site
        # without a class does not train it); never under DP, where labels are private
        real_labels = cfg.gan.labels == "real" or (
            cfg.gan.labels == "auto" and own_task_only and dp is None
        )
        if own_task_only:  # the generator draws the current task's classes alone
            old = set(replay.classes) if replay is not None else set()
            classes = torch.tensor([c for c in classes_seen if c not in old])
        sums: dict[str, float] = {}
        start = time.perf_counter()
        self.solver.train()
        bar = tqdm(schedule, desc=desc, disable=not progress, leave=False)
        # train.precision = "bf16": matrix products in bfloat16, weights and losses in fp32
        bf16 = cfg.train.precision == "bf16"
        # no weight cache: a cached bf16 copy would outlive the optimiser steps
        with torch.autocast(self.device.type, torch.bfloat16, enabled=bf16, cache_enabled=False):
            for it, (solver_turn, generator_turn) in enumerate(bar):
                rb = replay.sample(replay_n).to(self.device) if replay is not None else None
                if solver_turn:
                    assert solver_step is not None  # no solver turns without a solver step
                    x, y = (v.to(self.device) for v in next(solver_batches))
                    loss = self._solver_update(solver_step, x, y, rb, ratio)
                    sums["loss_solver"] = sums.get("loss_solver", 0.0) + loss
                if gen_trainer is not None and generator_turn:
                    gx, gy = (v.to(self.device) for v in next(gen_batches))
                    gen_replay, gen_ratio = rb, ratio
                    if dgm is not None:  # the current task only; s annealed over the task
                        begin, end = task_span
                        dgm.anneal(begin + (end - begin) * (it + 1) / max(gen_steps, 1))
                    if own_task_only and not self.critic_is_solver:
                        gen_replay, gen_ratio = None, 1.0  # (else replay teaches its aux head)
                    fake_classes = classes
                    if real_labels:  # the fakes' labels follow the real batch (+ replay's)
                        fake_classes = gy
                        if gen_replay is not None and not own_task_only:
                            fake_classes = torch.cat([gy, gen_replay.y])
                    losses = gen_trainer.step(gx, gy, gen_replay, gen_ratio, fake_classes)
                    for key, value in losses.items():
                        sums[key] = sums.get(key, 0.0) + value
                if progress and it % 50 == 0:
                    bar.set_postfix({k: f"{v / (it + 1):.3f}" for k, v in sums.items()})
        if solver_step is not None:
            solver_step.close()
        if gen_trainer is not None:
            gen_trainer.close()
        metrics = {
            k: v / (iterations if k == "loss_solver" else max(gen_steps, 1))
            for k, v in sums.items()
        }
        metrics.update(
            num_examples=float(len(real)),
            iterations=float(iterations),
            train_time_s=time.perf_counter() - start,
            replay_ratio=ratio,
        )
        return metrics
