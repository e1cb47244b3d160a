import torch
from torch import nn

from common.training.optim import adam


def test_adam_is_fused_on_cpu_and_matches_the_plain_update() -> None:
    torch.manual_seed(0)
    a, b = nn.Linear(5, 3), nn.Linear(5, 3)
    b.load_state_dict(a.state_dict())
    fused = adam(a.parameters(), lr=0.01)
    plain = torch.optim.Adam(b.parameters(), lr=0.01, foreach=False)
    assert fused.defaults["fused"] is True
    x = torch.randn(8, 5)
    for _ in range(5):
        for model, opt in ((a, fused), (b, plain)):
            opt.zero_grad()
            model(x).pow(2).sum().backward()
            opt.step()
    for p, q in zip(a.parameters(), b.parameters(), strict=True):
        torch.testing.assert_close(p, q)


def test_adam_takes_parameter_groups() -> None:
    a, b = nn.Linear(2, 2), nn.Linear(2, 2)
    opt = adam(
        [{"params": list(a.parameters())}, {"params": list(b.parameters()), "lr": 0.5}], lr=0.1
    )
    assert [g["lr"] for g in opt.param_groups] == [0.1, 0.5]
    assert opt.defaults["fused"] is True
