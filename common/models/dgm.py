"""Dynamic Generative Memory (Ostapenko et al. 2019): a conditional conv generator whose
tasks own binary masks (common.models.masks) and which grows as the masks fill it.

    DGMa ("activations"): a mask per hidden unit (channel) and task; a weight is reserved
         when both units it joins are (gradient scale 1 - min(a_in, a_out)); one output
         head per task, as in the paper's code.
    DGMw ("weights"):     a mask per weight and bias and task, on every layer; a weight is
         reserved when a finished task's mask uses it.

Layout (DCGAN-style, no BatchNorm), for an image (C, H, W) with H, W divisible by 4:

    (z ++ onehot(y)) -fc-> (c1, H/4, W/4) -up-> (c2, H/2, W/2) -out-> (C, H, W)

A class's samples are drawn with the mask of the task that learned it (``class_task``);
classes not learned yet use the current task's soft mask. Everything the generator needs
to draw any finished task (weights, usage bit sets, class -> task map) is in its state
dict, so it travels and is aggregated like any other generator; the current task's
embeddings travel with it and are averaged (the federated mask aggregation).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from common.data.types import Shape
from common.models import masks
from common.models.conv_gan import _base
from common.models.generator import Generator

VARIANTS = ("activations", "weights")
_PARAMS = ("fc.weight", "fc.bias", "up.weight", "up.bias", "out.weight", "out.bias")


def _key(name: str) -> str:
    return name.replace(".", "_")


class DGMGenerator(Generator):
    """G(z, y): (B, Z), (B,) -> (B, C, H, W) in [0, 1], with task masks."""

    class_task: Tensor  # (K,) the task that learned each class, -1: not learned yet
    tasks_done: Tensor  # (1,) finished tasks (the current task's index)
    heads: nn.ModuleList

    def __init__(
        self,
        shape: Shape,
        num_classes: int,
        hidden: int,
        latent_dim: int,
        *,
        variant: str = "activations",
        s_max: float = 400.0,
        sparsity: float = 5.0,
        embedding_lr: float = 0.02,
        seed: int = 0,
        widths: tuple[int, int] | None = None,
    ) -> None:
        super().__init__(shape, num_classes, latent_dim)
        if variant not in VARIANTS:
            raise ValueError(f"dgm.variant={variant!r} is not one of {', '.join(VARIANTS)}")
        if s_max < 1:
            raise ValueError(f"dgm.s-max={s_max!r} must be >= 1")
        self.variant, self.s_max, self.sparsity_weight, self.seed = variant, s_max, sparsity, seed
        self.embedding_lr = embedding_lr
        self.h4, self.w4 = _base(shape)
        self.max_tasks = min(num_classes, masks.MAX_TASKS)
        self.s = s_max  # the current task's scale: annealed while it trains
        self.register_buffer("class_task", torch.full((num_classes,), -1.0))
        self.register_buffer("tasks_done", torch.zeros(1))
        c1, c2 = widths if widths is not None else (2 * hidden, hidden)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            self._build(c1, c2)

    # --- layout --------------------------------------------------------------------------
    def _build(self, c1: int, c2: int) -> None:
        """(Re)create every layer, embedding and usage set for widths (c1, c2)."""
        c = self.shape[0]
        self.widths = (c1, c2)
        self.fc = nn.Linear(self.latent_dim + self.num_classes, c1 * self.h4 * self.w4)
        self.up = nn.ConvTranspose2d(c1, c2, 4, stride=2, padding=1)
        if self.variant == "activations":  # one head per task (the paper's DGMa code)
            self.heads = nn.ModuleList(
                nn.ConvTranspose2d(c2, c, 4, stride=2, padding=1) for _ in range(self.max_tasks)
            )
            sizes: dict[str, tuple[int, ...]] = {"fc": (c1,), "up": (c2,)}
        else:
            self.out = nn.ConvTranspose2d(c2, c, 4, stride=2, padding=1)
            sizes = {_key(n): tuple(self.get_parameter(n).shape) for n in _PARAMS}
        self.emb = nn.ParameterDict({k: nn.Parameter(torch.randn(s)) for k, s in sizes.items()})
        for k, s in sizes.items():
            self.register_buffer(f"usage_{k}", torch.zeros(s))

    def usage(self, key: str) -> Tensor:
        return self.get_buffer(f"usage_{key}")

    @property
    def mask_keys(self) -> tuple[str, ...]:
        return tuple(self.emb.keys())

    @property
    def current_task(self) -> int:
        return int(self.tasks_done.item())

    # --- masks ---------------------------------------------------------------------------
    def task_masks(self, task: int) -> dict[str, Tensor]:
        """Task ``task``'s masks: binary for a finished task, sigmoid(s e) for the current."""
        if task < self.current_task:
            return {k: masks.task_bit(self.usage(k), task) for k in self.mask_keys}
        if task == self.current_task:
            return {k: masks.soft_mask(self.emb[k], self.s) for k in self.mask_keys}
        raise ValueError(f"task {task} has no mask yet (current task {self.current_task})")

    def task_of(self, labels: Tensor) -> Tensor:
        """(B,) the task whose mask draws each label: its learning task, else the current."""
        t = self.class_task.to(labels.device)[labels.long()]
        return torch.where(t < 0, torch.full_like(t, self.current_task), t).long()

    def forward(self, z: Tensor, labels: Tensor) -> Tensor:
        tasks = self.task_of(labels)
        groups = tasks.unique()
        if len(groups) == 1:
            return self._draw(z, labels, int(groups[0]))
        out = z.new_zeros(len(z), *self.shape)
        for u in groups.tolist():
            rows = (tasks == u).nonzero(as_tuple=True)[0]
            out = out.index_copy(0, rows, self._draw(z[rows], labels[rows], u))
        return out

    def _draw(self, z: Tensor, labels: Tensor, task: int) -> Tensor:
        m = self.task_masks(task)
        x = torch.cat([z, self.one_hot(labels)], dim=1)  # (B, Z + K)
        c1 = self.widths[0]
        if self.variant == "activations":
            h = F.leaky_relu(self.fc(x), 0.2).view(-1, c1, self.h4, self.w4)
            h = h * m["fc"].view(1, -1, 1, 1)  # (B, c1, H/4, W/4)
            h = F.leaky_relu(self.up(h), 0.2) * m["up"].view(1, -1, 1, 1)  # (B, c2, H/2, W/2)
            return torch.sigmoid(self.heads[task](h))  # (B, C, H, W)
        w = {n: self.get_parameter(n) * m[_key(n)] for n in _PARAMS}
        h = F.leaky_relu(F.linear(x, w["fc.weight"], w["fc.bias"]), 0.2)
        h = h.view(-1, c1, self.h4, self.w4)
        h = F.leaky_relu(F.conv_transpose2d(h, w["up.weight"], w["up.bias"], 2, 1), 0.2)
        return torch.sigmoid(F.conv_transpose2d(h, w["out.weight"], w["out.bias"], 2, 1))

    # --- training hooks (common.training.generative calls these) ------------------------------
    def param_groups(self, lr: float) -> list[dict[str, object]]:
        """The optimiser's groups: weights at ``lr``, mask embeddings at their own rate (a
        task of ~1000 steps must be able to move an embedding across its +-6 range)."""
        emb = [p for n, p in self.named_parameters() if n.startswith("emb.")]
        rest = [p for n, p in self.named_parameters() if not n.startswith("emb.")]
        return [{"params": rest, "lr": lr}, {"params": emb, "lr": self.embedding_lr}]

    def anneal(self, progress: float) -> None:
        """Set s for ``progress`` in [0, 1] of the current task."""
        self.s = masks.annealed_scale(progress, self.s_max)

    def regulariser(self) -> Tensor:
        """Weighted share of the free capacity the current task's masks claim."""
        keys = self.mask_keys
        current = [masks.soft_mask(self.emb[k], self.s) for k in keys]
        return self.sparsity_weight * masks.sparsity(
            current, [masks.reserved(self.usage(k)) for k in keys]
        )

    def reserved_scale(self) -> dict[str, Tensor]:
        """Parameter name -> gradient scale (0 where a finished task reserved it, else 1)."""
        if self.variant == "weights":
            return {n: 1 - masks.reserved(self.usage(_key(n))) for n in _PARAMS}
        r_fc, r_up = masks.reserved(self.usage("fc")), masks.reserved(self.usage("up"))
        spatial = self.h4 * self.w4
        fc_rows = r_fc.repeat_interleave(spatial)  # fc's output feature -> its channel
        both = torch.minimum(r_fc.view(-1, 1), r_up.view(1, -1))  # (c1, c2)
        out = {
            "fc.weight": 1 - fc_rows.view(-1, 1).expand_as(self.fc.weight),
            "fc.bias": 1 - fc_rows,
            "up.weight": 1 - both.view(*both.shape, 1, 1).expand_as(self.up.weight),
            "up.bias": 1 - r_up,
        }
        for u in range(self.current_task):  # a finished task's own head is its alone
            for name, p in self.heads[u].named_parameters():
                out[f"heads.{u}.{name}"] = torch.zeros_like(p)
        return out

    def frozen_elements(self) -> dict[str, Tensor]:
        """State key -> boolean tensor, True where the value cannot change within the
        current task: weights reserved by finished tasks, and all mask state (buffers).
        Keys without any such element are left out."""
        out = {name: (scale == 0) for name, scale in self.reserved_scale().items()}
        out.update({name: torch.ones_like(b, dtype=torch.bool) for name, b in self.named_buffers()})
        if self.variant == "activations":  # later tasks' heads: untouched until their task
            for u in range(self.current_task + 1, self.max_tasks):
                for name, p in self.heads[u].named_parameters():
                    out[f"heads.{u}.{name}"] = torch.ones_like(p, dtype=torch.bool)
        return {k: v for k, v in out.items() if bool(v.any())}

    def protect_(self) -> None:
        """After backward: zero the gradients of reserved weights (bit-exact protection of
        finished tasks) and compensate the embeddings' gradients for the annealing."""
        for name, scale in self.reserved_scale().items():
            p = self.get_parameter(name)
            if p.grad is not None:
                p.grad.mul_(scale)
        for e in self.emb.values():
            masks.compensate_(e, self.s, self.s_max)

    def after_step_(self) -> None:
        with torch.no_grad():
            for e in self.emb.values():
                e.clamp_(-masks.EMBEDDING_BOUND, masks.EMBEDDING_BOUND)

    # --- task boundary (the server calls this on the aggregated generator) -------------------
    def end_task(self, classes: list[int]) -> dict[str, int]:
        """Binarise the current task's masks into the usage sets, map ``classes`` to the task,
        and draw fresh embeddings for the next task. Returns the elements newly reserved per
        mask (the growth rule's input, common.models.growth)."""
        t = self.current_task
        if t >= self.max_tasks:
            raise ValueError(f"DGM holds masks for {self.max_tasks} tasks; task {t} is one more")
        claimed = {}
        with torch.no_grad():
            for k in self.mask_keys:
                before = int(masks.reserved(self.usage(k)).sum())
                self.usage(k).copy_(masks.claim(self.usage(k), masks.binarise(self.emb[k]), t))
                claimed[k] = int(masks.reserved(self.usage(k)).sum()) - before
            self.class_task[torch.tensor(classes, dtype=torch.long)] = float(t)
            self.tasks_done.add_(1)
            if self.variant == "activations" and t + 1 < self.max_tasks:
                # the next task's head starts as this task's (forward transfer): a fresh
                # random head draws grey noise that the trained discriminator rejects outright
                self.heads[t + 1].load_state_dict(self.heads[t].state_dict())
            g = torch.Generator().manual_seed(self.seed * 1000 + t + 1)
            for e in self.emb.values():
                e.copy_(torch.randn(e.shape, generator=g))
        self.s = self.s_max
        return claimed

    def capacity(self) -> dict[str, int]:
        """Parameters, and units / weights used by any finished task and free."""
        used = sum(int(masks.reserved(self.usage(k)).sum()) for k in self.mask_keys)
        total = sum(self.usage(k).numel() for k in self.mask_keys)
        params = sum(
            p.numel() for n, p in self.named_parameters() if not n.startswith(("emb.", "heads."))
        )
        heads = (
            sum(
                p.numel() for h in list(self.heads)[: self.current_task + 1] for p in h.parameters()
            )
            if self.variant == "activations"
            else 0
        )
        return {
            "parameters": params + heads,
            "masked": total,
            "reserved": used,
            "free": total - used,
            "c1": self.widths[0],
            "c2": self.widths[1],
        }
