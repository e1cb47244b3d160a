"""Replay sources, passed explicitly to training (never hidden in a hook).

- :class:`GenerativeReplay`: DGR; inputs from frozen generator(s), labels from the frozen
  previous solver (or the labels the generator was conditioned on: ``condition``).
  Several generators with weights make an ensemble (federated ``replay.mode = ensemble``:
  one generator per site of the finished task; ``per-task``: one per site and finished
  task, each drawing only its task's classes).
- :class:`ExactReplay`: stored real data of earlier tasks (the ER reference). Only ever
  used at the site that holds the data.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from common.config.sections import REPLAY_MIXTURES
from common.data.types import Split
from common.models.generator import Generator


@dataclass(frozen=True)
class ReplayBatch:
    x: Tensor  # (n, C, H, W) inputs in [0, 1]
    y: Tensor  # (n,) hard labels
    soft: Tensor | None = None  # (n, K) target probabilities (replay.labels = soft)

    def split(self, n: int) -> tuple[ReplayBatch, ReplayBatch]:
        """The first ``n`` rows and the rest."""
        soft = (None, None) if self.soft is None else (self.soft[:n], self.soft[n:])
        return (
            ReplayBatch(self.x[:n], self.y[:n], soft[0]),
            ReplayBatch(self.x[n:], self.y[n:], soft[1]),
        )

    def to(self, device: torch.device) -> ReplayBatch:
        soft = self.soft.to(device) if self.soft is not None else None
        return ReplayBatch(self.x.to(device), self.y.to(device), soft)


@dataclass(frozen=True)
class ReplayPayload:
    """Frozen models of finished tasks as state dicts: what the server sends once per task."""

    task: int  # the task about to be learned (replay covers tasks < task)
    solver: dict[str, Tensor]
    generators: tuple[dict[str, Tensor], ...]
    weights: tuple[float, ...]
    classes: tuple[int, ...]
    # the classes each generator draws (``replay.mode = per-task``); () = every generator
    # draws every class
    generator_classes: tuple[tuple[int, ...], ...] = ()
    # replay.mixture = "class-counts": per generator, one weight per entry of ``classes``
    # (its share of that class's draws, before normalising over the generators); () = none
    class_weights: tuple[tuple[float, ...], ...] = ()

    def to_dict(self) -> dict[str, object]:
        """Plain containers of tensors and numbers (``torch.load(weights_only=True)``)."""
        return {
            "task": self.task,
            "solver": dict(self.solver),
            "generators": [dict(g) for g in self.generators],
            "weights": list(self.weights),
            "classes": list(self.classes),
            "generator_classes": [list(c) for c in self.generator_classes],
            "class_weights": [list(w) for w in self.class_weights],
        }

    @staticmethod
    def from_dict(d: dict[str, object]) -> ReplayPayload:
        return ReplayPayload(
            task=int(d["task"]),  # type: ignore[call-overload]
            solver=dict(d["solver"]),  # type: ignore[call-overload]
            generators=tuple(dict(g) for g in d["generators"]),  # type: ignore[attr-defined]
            weights=tuple(float(w) for w in d["weights"]),  # type: ignore[attr-defined]
            classes=tuple(int(c) for c in d["classes"]),  # type: ignore[attr-defined]
            generator_classes=tuple(
                tuple(int(c) for c in cs)
                for cs in d.get("generator_classes", [])  # type: ignore[attr-defined]
            ),
            class_weights=tuple(
                tuple(float(w) for w in ws)
                for ws in d.get("class_weights", [])  # type: ignore[attr-defined]
            ),
        )

    # generator.kind = "embedding": within a task, the server's generator of the current
    # task travels with the replay as its last generator (drawing the task's classes)
    def with_current(self, generator: dict[str, Tensor], classes: tuple[int, ...]) -> ReplayPayload:
        """This payload plus the current task's generator, last."""
        return dataclasses.replace(
            self,
            generators=(*self.generators, generator),
            weights=(*self.weights, 1.0),
            classes=(*self.classes, *classes),
            generator_classes=(*self.generator_classes, classes),
        )

    def split_current(
        self, classes: tuple[int, ...]
    ) -> tuple[ReplayPayload | None, dict[str, Tensor] | None]:
        """(the replay of the finished tasks, or None when there is none; the current task's
        generator, or None when the payload carries none)."""
        if not self.generator_classes or tuple(self.generator_classes[-1]) != tuple(classes):
            return self, None
        base = dataclasses.replace(
            self,
            generators=self.generators[:-1],
            weights=self.weights[:-1],
            classes=tuple(c for c in self.classes if c not in classes),
            generator_classes=self.generator_classes[:-1],
        )
        return (base if base.generators else None), self.generators[-1]


class Replay(Protocol):
    """Anything that rehearses earlier tasks: n replayed examples per call."""

    classes: tuple[int, ...]

    def sample(self, n: int) -> ReplayBatch: ...


class GenerativeReplay:
    """Inputs from the previous generator(s), labels from the previous solver."""

    def __init__(
        self,
        generators: Sequence[Generator],
        solver: nn.Module,
        classes: Sequence[int],
        *,
        weights: Sequence[float] | None = None,
        labels: str = "hard",
        temperature: float = 2.0,
        retries: int = 0,
        rng: torch.Generator | None = None,
        prefetch: int = 1,
        generator_classes: Sequence[Sequence[int]] = (),
        mixture: str = "weights",
        class_weights: Sequence[Sequence[float]] = (),
    ) -> None:
        if retries < 0:
            raise ValueError(f"retries={retries} must be >= 0")
        if mixture not in REPLAY_MIXTURES:
            raise ValueError(f"mixture={mixture!r}; known: {', '.join(REPLAY_MIXTURES)}")
        if prefetch < 1:
            raise ValueError(f"prefetch={prefetch} must be >= 1")
        if not generators:
            raise ValueError("GenerativeReplay needs at least one generator")
        if not classes:
            raise ValueError("GenerativeReplay needs the classes seen so far")
        w = torch.tensor(weights if weights is not None else [1.0] * len(generators))
        if w.numel() != len(generators) or (w < 0).any() or w.sum() <= 0:
            raise ValueError(f"weights {list(w.tolist())} do not fit {len(generators)} generators")
        self.generators = list(generators)
        self.solver = solver
        self.classes = tuple(int(c) for c in classes)
        self.weights = w / w.sum()
        # (max class + 1, generators): row c = the mixture that draws class c, over the
        # generators that cover c (None: every class from the one mixture ``weights``)
        self.per_class = _per_class_weights(w, self.classes, generator_classes)
        if class_weights:  # replay.mixture = "class-counts": each class its own mixture
            self.per_class = _class_count_weights(class_weights, self.classes, self.per_class, w)
        self.labels = labels
        self.temperature = temperature
        self.retries = retries
        self.rng = rng
        # ``prefetch`` batches are drawn at once and served in turn: the same i.i.d.
        # draws from frozen models, fewer and larger forward passes
        self.prefetch = prefetch
        self._buffer: ReplayBatch | None = None

    @torch.no_grad()
    def inputs(self, cond: Tensor) -> Tensor:
        """Inputs for the conditioning labels ``cond`` (n,), (n, C, H, W) on the solver's
        device: each row from one generator, drawn by the mixture weights.

        With ``retries`` > 0, a row the previous solver does not recognise as its
        conditioning class is drawn again (up to ``retries`` times, then kept): the
        generators of sites that hardly saw a class then do not flood the replay of that
        class with inputs of another. This is post-processing of released models only.
        """
        x = self._draw(cond)
        for _ in range(self.retries):
            bad = (~self._recognised(x, cond)).nonzero(as_tuple=True)[0]
            if not bad.numel():
                break
            x[bad] = self._draw(cond[bad.cpu()])
        return x

    def _recognised(self, x: Tensor, cond: Tensor) -> Tensor:
        """(n,) bool: the previous solver, choosing among the replayed classes, reads row i
        of ``x`` as ``cond[i]``."""
        classes = torch.tensor(self.classes, device=x.device)
        return classes[self.solver(x)[:, classes].argmax(1)] == cond.to(x.device)

    def _draw(self, cond: Tensor) -> Tensor:
        cond = cond.cpu()  # the mixture tables live on the CPU (the caller's labels may not)
        n = cond.shape[0]
        if self.per_class is None:
            which = torch.multinomial(self.weights, n, replacement=True, generator=self.rng)
        else:  # one draw per row from its class's mixture
            which = torch.multinomial(self.per_class[cond], 1, generator=self.rng)[:, 0]
        device = next(self.solver.parameters()).device
        x = torch.empty(n, *self.generators[0].shape, device=device)
        for k, gen in enumerate(self.generators):
            rows = (which == k).nonzero(as_tuple=True)[0]
            if rows.numel():
                drawn = gen.sample(cond[rows], generator=self.rng)  # bf16 under autocast
                x[rows.to(device)] = drawn.to(device=device, dtype=x.dtype)
        return x

    def sample(self, n: int) -> ReplayBatch:
        """``n`` replayed examples (from a buffer of ``prefetch`` draws of ``n``)."""
        if self.prefetch == 1:
            return self._fresh(n)
        if self._buffer is None or self._buffer.x.shape[0] < n:
            self._buffer = self._fresh(n * self.prefetch)
        batch, rest = self._buffer.split(n)
        self._buffer = rest
        return batch

    @torch.no_grad()
    def _fresh(self, n: int) -> ReplayBatch:
        classes = torch.tensor(self.classes)
        cond = classes[torch.randint(len(classes), (n,), generator=self.rng)]  # (n,)
        x = self.inputs(cond)
        device = x.device
        full = self.solver(x)  # (n, K)
        logits = full[:, classes.to(device)]  # (n, |seen|): previous classes only
        y = classes.to(device)[logits.argmax(1)]
        soft = None
        if self.labels == "condition":  # the label the conditional generator drew it for
            return ReplayBatch(x, cond.to(device), None)
        if self.labels == "soft":
            soft = torch.zeros_like(full)
            soft[:, classes.to(device)] = F.softmax(logits / self.temperature, dim=1)
        return ReplayBatch(x, y, soft)


def _per_class_weights(
    weights: Tensor, classes: tuple[int, ...], generator_classes: Sequence[Sequence[int]]
) -> Tensor | None:
    """Row c: generator k's share of class c's draws, ``weights[k]`` over the generators
    whose classes include c, normalised. A class no generator covers is drawn from all."""
    if not generator_classes:
        return None
    if len(generator_classes) != weights.numel():
        raise ValueError(
            f"{len(generator_classes)} class lists do not fit {weights.numel()} generators"
        )
    table = torch.zeros(max(classes) + 1, weights.numel())
    for k, cs in enumerate(generator_classes):
        unknown = set(cs) - set(classes)
        if unknown:
            raise ValueError(f"generator {k} draws classes {sorted(unknown)} not replayed")
        table[list(cs), k] = weights[k]
    uncovered = table.sum(1) <= 0
    table[uncovered] = weights
    return table / table.sum(1, keepdim=True)


def _class_count_weights(
    class_weights: Sequence[Sequence[float]],
    classes: tuple[int, ...],
    per_class: Tensor | None,
    weights: Tensor,
) -> Tensor:
    """Row c: generator k's share of class c's draws, ``class_weights[k][i]`` for
    ``classes[i] = c``, normalised over the generators. A class no generator has weight for
    keeps the other rule (``per_class``, else ``weights``)."""
    table = torch.tensor([list(map(float, ws)) for ws in class_weights], dtype=torch.float)
    if table.shape != (weights.numel(), len(classes)):
        raise ValueError(
            f"class weights of shape {tuple(table.shape)} do not fit {weights.numel()} "
            f"generators and {len(classes)} classes"
        )
    if not torch.isfinite(table).all() or (table < 0).any():
        raise ValueError("class weights must be finite and non-negative")
    base = per_class if per_class is not None else weights.expand(max(classes) + 1, -1)
    out = base.clone()
    for i, c in enumerate(classes):
        if table[:, i].sum() > 0:
            out[c] = table[:, i] / table[:, i].sum()
    return out


class ExactReplay:
    """Uniform draws from stored real data of earlier tasks (stays at the site)."""

    def __init__(self, memory: Split, *, rng: torch.Generator | None = None) -> None:
        if len(memory) == 0:
            raise ValueError("ExactReplay needs a non-empty memory")
        self.memory = memory
        self.classes = tuple(sorted(set(memory.y.tolist())))
        self.rng = rng

    def sample(self, n: int) -> ReplayBatch:
        rows = torch.randint(len(self.memory), (n,), generator=self.rng)
        x, y = self.memory.batch(rows)
        return ReplayBatch(x, y)


def cpu_state(model: nn.Module) -> dict[str, Tensor]:
    """A copy of ``model``'s state on the CPU (never a view of the live tensors): what a
    replay payload holds."""
    return {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}  # (a copy)
