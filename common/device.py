"""Device choice (once, from config) and seeding."""

from __future__ import annotations

import random

import numpy as np
import torch


def select_device(name: str = "auto") -> torch.device:
    """``auto`` picks CUDA when available, else CPU; anything else is taken literally."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise RuntimeError(f"device={name!r} was requested but CUDA is not available here")
    return device


def slow_bf16(device: torch.device) -> str:
    """Why ``train.precision = "bf16"`` would be slow on ``device`` ('' when it is not): a
    CPU without bfloat16 instructions (AVX512-BF16, AMX) emulates them, about 20x slower
    than fp32 on an AVX2 CPU (2026-12-07), where a CPU that has them runs 2x faster."""
    if device.type != "cpu" or _native_bf16():
        return ""
    return (
        f"train.precision='bf16' on a CPU without bfloat16 instructions "
        f"({torch.backends.cpu.get_cpu_capability()}): emulated, about 20x slower than fp32; "
        "set train.precision='fp32' on this machine"
    )


def _native_bf16() -> bool:
    return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())


def seed_everything(seed: int) -> torch.Generator:
    """Seed Python, NumPy and torch; return a torch.Generator for explicit sampling."""
    random.seed(seed)
    np.random.seed(seed % (2**32))
    torch.manual_seed(seed)
    return torch.Generator().manual_seed(seed)
