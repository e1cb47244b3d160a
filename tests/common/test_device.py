"""Device facts a user is told: bfloat16 without the instructions for it is slow."""

import pytest
import torch

from common import device


def test_bf16_on_a_cpu_without_its_instructions_is_named_with_the_fix(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(device, "_native_bf16", lambda: False)
    why = device.slow_bf16(torch.device("cpu"))
    assert "20x slower" in why and "train.precision='fp32'" in why
    monkeypatch.setattr(device, "_native_bf16", lambda: True)
    assert device.slow_bf16(torch.device("cpu")) == ""
    monkeypatch.setattr(device, "_native_bf16", lambda: False)
    assert device.slow_bf16(torch.device("cuda")) == ""  # (a GPU has its own bf16 units)
